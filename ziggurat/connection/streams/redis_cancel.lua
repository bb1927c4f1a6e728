-- Cancel a job (RedisStreams.cancel). Idempotent: a second cancel does nothing.
-- KEYS: cancel flag, epoch, stream, ended marker. ARGV: ttl in ms, channel, job id,
-- max entries, then the cancelled end's field names and values interleaved.
-- A job nobody has claimed yet gets its end entry here, so its readers finish
-- at once and a later claim finds it finished.
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) == false then
  return 0
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[4], '*', unpack(ARGV, 5))
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
end
return 1
