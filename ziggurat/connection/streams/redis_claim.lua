-- Take a job's stream for a new epoch (RedisStreams.claim).
-- KEYS: stream, epoch, cancel flag, ended marker. ARGV: ttl in ms.
-- Returns {-1} when the stream already ended (no new epoch), else
-- {epoch, cancelled (0/1), entries} with every entry of the stream, so the
-- new worker learns the text already emitted in the same atomic step that
-- fences the previous one.
if redis.call('EXISTS', KEYS[4]) == 1 then
  return {-1}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {epoch, redis.call('EXISTS', KEYS[3]), redis.call('XRANGE', KEYS[1], '-', '+')}
