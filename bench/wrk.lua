-- wrk script for bench/bench.py: POSTs one JSON body over keep-alive connections and writes
-- the run's figures as one JSON object to $BENCH_OUT (parsing wrk's human output would break
-- on unit changes, and its --latency view has no p99.9).
--
--   BENCH_BODY      file holding the request body
--   BENCH_KEY       client key, sent as "Authorization: Bearer" (direct and nginx ignore it)
--   BENCH_HEADERS   extra headers, "name: value" pairs separated by newlines
--   BENCH_DELAY_MS  pause before each request on a connection: paced load when oha is not
--                   available (rate ~= connections / (delay + latency))
--   BENCH_OUT       where done() writes its JSON

local function slurp(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
  local data = f:read("*a")
  f:close()
  return data
end

wrk.method = "POST"
wrk.body = slurp(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if name then
    wrk.headers[name] = value
  end
end

local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
if pause > 0 then
  function delay()
    return pause
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  -- wrk reports latency in microseconds.
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max))
  out:close()
end
