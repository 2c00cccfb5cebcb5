-- wrk script: GET with the SigV4 headers bench/run.sh computed for this URL (valid 5 minutes).
wrk.method = "GET"
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BENCH_AUTHORIZATION") then
  wrk.headers["Authorization"] = os.getenv("BENCH_AUTHORIZATION")
  wrk.headers["X-Amz-Date"] = os.getenv("BENCH_AMZ_DATE")
end
