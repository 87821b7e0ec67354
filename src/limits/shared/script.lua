-- One atomic exchange for every scope of a pass (see mod.rs).
-- KEYS[1]: the hosts (a sorted set by expiry); KEYS[2]: this host's last answer.
-- ARGV[1]: this host; ARGV[2]: its liveness in ms; ARGV[3]: this exchange's number.
-- Then per scope quantity, KEYS[i] and its arguments:
--   'b', cap, rate (per second), want, back, spent, seen, ttl: a level refilled at `rate`
--     up to `cap`; `back` is returned (negative: taken without a grant); up to `want` is
--     granted; `spent` adds to the total; a level created afresh (Redis lost it) starts
--     from `seen`, the total the host last knew; a changed `cap` moves the level with it.
--   'c', in flight, ttl: this host's requests in flight; answers the other live hosts' sum.
local host = ARGV[1]
local host_ttl = tonumber(ARGV[2])
local seq = ARGV[3]

-- An exchange sent again because its answer was lost is answered as it was the first time.
local last = redis.call('GET', KEYS[2])
if last then
  local saved = cjson.decode(last)
  if saved[1] == seq then
    return saved[2]
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now + host_ttl / 1000, host)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], host_ttl)
local out = { tostring(redis.call('ZCARD', KEYS[1])) }
local a = 4
for i = 3, #KEYS do
  local kind = ARGV[a]
  if kind == 'b' then
    local cap = tonumber(ARGV[a + 1])
    local rate = tonumber(ARGV[a + 2])
    local want = tonumber(ARGV[a + 3])
    local back = tonumber(ARGV[a + 4])
    local spent = tonumber(ARGV[a + 5])
    local seen = tonumber(ARGV[a + 6])
    local ttl = ARGV[a + 7]
    a = a + 8
    local v = redis.call('HMGET', KEYS[i], 'level', 'at', 'spent', 'cap')
    local level = tonumber(v[1])
    local total = tonumber(v[3]) or 0
    if level == nil then
      total = seen
      level = cap - seen
    end
    local old_cap = tonumber(v[4]) or cap
    if rate > 0 then
      -- A rate's bucket holds at most its capacity, whatever it was.
      if level > cap then level = cap end
    else
      -- A budget's level moves with the budget.
      level = level + (cap - old_cap)
    end
    local at = tonumber(v[2]) or now
    if now > at then level = level + (now - at) * rate end
    if level > cap then level = cap end
    level = level + back
    if level > cap then level = cap end
    local grant = 0
    if want > 0 and level > 0 then grant = math.min(want, level) end
    level = level - grant
    total = total + spent
    redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now),
      'spent', tostring(total), 'cap', tostring(cap))
    redis.call('PEXPIRE', KEYS[i], ttl)
    table.insert(out, tostring(grant))
    table.insert(out, tostring(level))
    table.insert(out, tostring(total))
  else
    local mine = ARGV[a + 1]
    local ttl = ARGV[a + 2]
    a = a + 3
    redis.call('HSET', KEYS[i], host, mine)
    local all = redis.call('HGETALL', KEYS[i])
    local others = 0
    for j = 1, #all, 2 do
      if all[j] ~= host then
        if redis.call('ZSCORE', KEYS[1], all[j]) then
          others = others + tonumber(all[j + 1])
        else
          redis.call('HDEL', KEYS[i], all[j])
        end
      end
    end
    redis.call('PEXPIRE', KEYS[i], ttl)
    table.insert(out, '0')
    table.insert(out, tostring(others))
    table.insert(out, '0')
  end
end

-- Kept long enough to outlast an outage the exchange is resent across.
redis.call('SET', KEYS[2], cjson.encode({ seq, out }), 'PX', 3600000)
return out
