-- Append entries to a job's stream if the writer's epoch still owns it (RedisStreams.append).
-- KEYS: stream, epoch, ended marker. ARGV: epoch, ttl in ms, max entries, then
-- per entry: is_end (0/1), field count n, then n field names and values interleaved.
-- Returns 0 (ok), 1 (fenced: a newer claim exists) or 2 (lost: no claim is known,
-- the store restarted empty or the stream expired).
local current = redis.call('GET', KEYS[2])
if not current then
  return 2
end
if current ~= ARGV[1] then
  return 1
end
local i = 4
local is_ended = false
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', unpack(ARGV, i + 2, i + 1 + n))
  if ARGV[i] == '1' then
    is_ended = true
  end
  i = i + 2 + n
end
if is_ended then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 0
