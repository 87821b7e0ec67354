-- One atomic exchange for every scope of a pass (see mod.rs).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local host = ARGV[1]
local host_ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + host_ttl / 1000, host)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], host_ttl)
local out = { tostring(redis.call('ZCARD', KEYS[1])) }
local a = 3
for i = 2, #KEYS do
  local kind = ARGV[a]
  if kind == 'b' then
    local cap = tonumber(ARGV[a + 1])
    local rate = tonumber(ARGV[a + 2])
    local want = tonumber(ARGV[a + 3])
    local back = tonumber(ARGV[a + 4])
    local spent = tonumber(ARGV[a + 5])
    local ttl = ARGV[a + 6]
    a = a + 7
    local v = redis.call('HMGET', KEYS[i], 'level', 'at', 'spent')
    local level = tonumber(v[1]) or cap
    local at = tonumber(v[2]) or now
    if now > at then level = level + (now - at) * rate end
    if level > cap then level = cap end
    level = level + back
    if level > cap then level = cap end
    local grant = 0
    if want > 0 and level > 0 then grant = math.min(want, level) end
    level = level - grant
    local total = (tonumber(v[3]) or 0) + spent
    redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now), 'spent', tostring(total))
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
return out
