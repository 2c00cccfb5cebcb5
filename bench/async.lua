-- wrk script: InvokeEndpointAsync (an InputLocation, no body) and one machine-readable RESULT
-- line at the end. bench/async_bench.py sets the location and the SigV4 headers it computed for
-- this URL (valid for 5 minutes; a signature names no nonce, so every request may repeat it).
wrk.method = "POST"
wrk.body = ""
wrk.headers["X-Amzn-SageMaker-InputLocation"] = os.getenv("BENCH_INPUT_LOCATION")
wrk.headers["X-Amzn-SageMaker-Content-Type"] = "application/json"
if os.getenv("BENCH_AUTHORIZATION") then
  wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION")
  wrk.headers["X-Amz-Date"] = os.getenv("BENCH_AMZ_DATE")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.1f requests=%d errors=%d non2xx=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
