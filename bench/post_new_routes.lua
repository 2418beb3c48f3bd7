-- wrk script: every request POSTs a route never seen before,
--   /api/routes/user/bench-<thread>-<n>
-- with JupyterHub's body, and counts answers that are not 201.
-- The token comes from the environment (BENCH_TOKEN), not the command line.

local threads = {}
local next_id = 0

wrk.method = "POST"
wrk.body = '{"target": "http://10.0.0.7:8888", "jupyterhub": true}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "token " .. (os.getenv("BENCH_TOKEN") or "")

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  non201 = 0
  responses = 0
end

function request()
  counter = counter + 1
  return wrk.format(nil, "/api/routes/user/bench-" .. id .. "-" .. counter)
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 201 then
    non201 = non201 + 1
  end
end

function done(summary, latency, requests)
  local bad, seen = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non201")
    seen = seen + t:get("responses")
  end
  io.write(string.format("BENCH non201=%d responses=%d\n", bad, seen))
end
