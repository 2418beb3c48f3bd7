-- wrk script: plain GET of the URL given to wrk, with the API token taken from
-- the environment (BENCH_TOKEN) so it never shows on a command line.
wrk.method = "GET"
wrk.headers["Authorization"] = "token " .. (os.getenv("BENCH_TOKEN") or "")
