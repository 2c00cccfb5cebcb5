-- wrk script: POST a 64-byte JSON body and print one machine-readable RESULT line at the end.
wrk.method = "POST"
wrk.body = '{"instances":[[0.1,0.2,0.3,0.4]],"id":"bench-0001","pad":"xxxx"}'
wrk.headers["Content-Type"] = "application/json"
-- SigV4 headers bench/run.sh computed for this URL and body (valid for 5 minutes).
if os.getenv("BENCH_AUTHORIZATION") then
  wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION")
  wrk.headers["X-Amz-Date"] = os.getenv("BENCH_AMZ_DATE")
end
-- InvokeEndpoint routed to an inference component (bench/components_bench.py), when asked; the
-- signature above then covers this header too.
if os.getenv("BENCH_INFERENCE_COMPONENT") then
  wrk.headers["X-Amzn-SageMaker-Inference-Component"] = os.getenv("BENCH_INFERENCE_COMPONENT")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.1f requests=%d errors=%d non2xx=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests / (summary.duration / 1e6), summary.requests,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
