-- Settle an admitted request (RedisRateLimiter.settle): add the token difference between its
-- real usage and the estimate charged at admission, and renew, release or keep its stream slots.
-- KEYS: one per bucket. ARGV: now in ms ('' = the server's clock), ticket, lease in ms,
-- token delta, slot action (keep, renew, release), then per bucket: kind (rpm, tpm, streams,
-- quota), limit. Same rules as memory.py; a quota counter that expired meanwhile is left alone.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
end
local ticket = ARGV[2]
local lease = tonumber(ARGV[3])
local delta = tonumber(ARGV[4])
local action = ARGV[5]
local window = 60000

for i = 1, #KEYS do
  local at = 5 + (i - 1) * 2
  local kind, limit = ARGV[at + 1], tonumber(ARGV[at + 2])
  local key = KEYS[i]
  if kind == 'streams' then
    if action == 'release' then
      redis.call('ZREM', key, ticket)
    elseif action == 'renew' and redis.call('ZSCORE', key, ticket) then
      redis.call('ZADD', key, now + lease, ticket)
      if redis.call('PTTL', key) < lease then
        redis.call('PEXPIRE', key, math.ceil(lease))
      end
    end
  elseif kind == 'tpm' and delta ~= 0 and limit > 0 then
    local start = tonumber(redis.call('GET', key)) or now
    if delta > 0 and start < now then start = now end
    local after = start + delta * window / limit
    if after <= now then
      redis.call('DEL', key)
    else
      redis.call('SET', key, string.format('%.3f', after), 'PX', math.max(math.ceil(after - now), 1))
    end
  elseif kind == 'quota' and delta ~= 0 and redis.call('EXISTS', key) == 1 then
    if redis.call('INCRBY', key, delta) < 0 then
      redis.call('SET', key, 0, 'KEEPTTL')
    end
  end
end
return 1
