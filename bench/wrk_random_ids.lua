-- wrk: POST to <prefix><random user id in [0, n)>, and print one JSON line of results.
-- usage: [WRK_API_KEY=<key>] wrk -s bench/wrk_random_ids.lua URL -- <prefix> <n>
-- With WRK_API_KEY set (non-empty), every request carries `Authorization: Bearer <key>`;
-- the key comes from the environment, not the command line, so it is not in the process list.
local thread_no = 0
function setup(thread)
  thread:set("thread_no", thread_no)
  thread_no = thread_no + 1
end

function init(args)
  prefix = args[1]
  n = tonumber(args[2])
  headers = {}
  local key = os.getenv("WRK_API_KEY")
  if key and key ~= "" then
    headers["Authorization"] = "Bearer " .. key
  end
  math.randomseed(os.time() + thread_no * 104729)
end

function request()
  return wrk.format("POST", prefix .. math.random(0, n - 1), headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, ' ..
    '"max_ms": %.3f, "non_2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.status, e.connect, e.read, e.write, e.timeout))
end
