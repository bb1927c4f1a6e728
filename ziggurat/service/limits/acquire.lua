-- Admit a request against all its buckets at once, or charge none (RedisRateLimiter.acquire).
-- KEYS: one per bucket. ARGV: now in ms ('' = the server's clock), ticket, lease in ms, tokens,
-- retry in ms for a refused stream slot, then per bucket: kind (rpm, tpm, streams, quota),
-- limit, period end in ms (quotas; else 0).
-- Reply: admitted (1/0), refused bucket (1-based, 0 = none), retry in ms, too large (1/0),
-- then per bucket: remaining, reset in ms (after the charge when admitted, else as they are).
-- Same rules as memory.py.
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
end
local ticket = ARGV[2]
local lease = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local stream_retry = tonumber(ARGV[5])
local window = 60000
local quota_grace = 3600000
local epsilon = 1e-6

-- What a rate bucket whose arrival time is `ahead` ms in the future still admits.
local function left(ahead, interval)
  return math.max(math.floor((window - ahead) / interval + epsilon), 0)
end

local reply = {1, 0, 0, 0}
local now_states, after_states = {}, {}
local writes = {}
local worst_retry, worst_large = -1, -1
for i = 1, #KEYS do
  local at = 5 + (i - 1) * 3
  local kind, limit, period_end = ARGV[at + 1], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local key = KEYS[i]
  local admitted, retry, large = true, 0, 0
  local now_left, now_reset, after_left, after_reset = 0, 0, 0, 0
  if kind == 'rpm' or kind == 'tpm' then
    local cost = 1
    if kind == 'tpm' then cost = tokens end
    if limit <= 0 then
      admitted, now_reset, retry = false, window, window
    else
      local interval = window / limit
      local start = tonumber(redis.call('GET', key)) or now
      if start < now then start = now end
      local after = start + cost * interval
      now_left, now_reset = left(start - now, interval), start - now
      if after - now <= window + 0.001 then
        after_left, after_reset = left(after - now, interval), after - now
        writes[i] = after
      else
        admitted, retry = false, after - window - now
        if cost * interval > window then large = 1 end
      end
    end
  elseif kind == 'streams' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    local held = redis.call('ZCARD', key)
    now_left = math.max(limit - held, 0)
    if held < limit then
      after_left = limit - held - 1
    else
      admitted, retry = false, stream_retry
    end
  else
    local used = tonumber(redis.call('GET', key)) or 0
    now_left = math.max(limit - used, 0)
    now_reset = math.max(period_end - now, 0)
    after_reset = now_reset
    if used < limit then
      after_left = math.max(limit - used - tokens, 0)
    else
      admitted, retry = false, now_reset
    end
  end
  if not admitted then
    reply[1] = 0
    if large > worst_large or (large == worst_large and retry > worst_retry) then
      worst_large, worst_retry = large, retry
      reply[2], reply[3], reply[4] = i, math.ceil(retry), large
    end
  end
  now_states[i] = {now_left, math.ceil(math.max(now_reset, 0))}
  after_states[i] = {after_left, math.ceil(math.max(after_reset, 0))}
end
local states = after_states
if reply[1] == 0 then
  states = now_states
end
for i = 1, #KEYS do
  reply[#reply + 1] = states[i][1]
  reply[#reply + 1] = states[i][2]
end
if reply[1] == 0 then
  return reply
end

for i = 1, #KEYS do
  local at = 5 + (i - 1) * 3
  local kind, period_end = ARGV[at + 1], tonumber(ARGV[at + 3])
  local key = KEYS[i]
  if kind == 'rpm' or kind == 'tpm' then
    redis.call('SET', key, string.format('%.3f', writes[i]), 'PX', math.max(math.ceil(writes[i] - now), 1))
  elseif kind == 'streams' then
    redis.call('ZADD', key, now + lease, ticket)
    if redis.call('PTTL', key) < lease then
      redis.call('PEXPIRE', key, math.ceil(lease))
    end
  else
    redis.call('INCRBY', key, tokens)
    redis.call('PEXPIREAT', key, math.ceil(period_end + quota_grace))
  end
end
return reply
