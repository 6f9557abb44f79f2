-- wrk script for `tally bench quota`: gateways reserve, then settle what
-- they reserved. Each wrk thread keeps a queue of granted reservation ids
-- and settles one whenever it has one, else reserves anew; so every
-- connection alternates between the two calls, as a gateway would.
-- USERS (budgets are defined per user) comes from the environment.

local users = tonumber(os.getenv("TALLY_BENCH_USERS") or "100")
local headers = {["Content-Type"] = "application/json"}
local queue, head, tail = {}, 1, 0
settles, denied, failed = 0, 0, 0

function request()
  if head <= tail then
    local id = queue[head]
    queue[head] = nil
    head = head + 1
    return wrk.format("POST", "/api/v1/quota/settle", headers,
      '{"reservation_id":"' .. id .. '","usage":{"model":"gpt-4o","user":"user-' ..
      math.random(0, users - 1) .. '","input_tokens":' .. math.random(500, 2500) ..
      ',"output_tokens":' .. math.random(1, 500) .. '}}')
  end
  return wrk.format("POST", "/api/v1/quota/reserve", headers,
    '{"user":"user-' .. math.random(0, users - 1) ..
    '","model":"gpt-4o","estimated_cost_usd":0.01,"ttl_s":60}')
end

function response(status, _, body)
  if status ~= 200 then
    failed = failed + 1
    return
  end
  if body:find('"reservation":"', 1, true) then
    settles = settles + 1
    return
  end
  local id = body:match('"reservation_id":"(r_[^"]+)"')
  if id then
    tail = tail + 1
    queue[tail] = id
  else
    denied = denied + 1
  end
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local s, d, f = 0, 0, 0
  for _, t in ipairs(threads) do
    s = s + t:get("settles")
    d = d + t:get("denied")
    f = f + t:get("failed")
  end
  io.write(string.format("tally: settles %d denied %d failed %d seconds %.3f\n",
    s, d, f, summary.duration / 1e6))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("tally: p%g %.3f\n", p, latency:percentile(p) / 1000))
  end
end
