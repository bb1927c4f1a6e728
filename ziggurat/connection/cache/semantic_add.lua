-- Add one vector to a namespace hash and keep the hash bounded (RedisVectorIndex.add).
-- KEYS: the namespace hash. ARGV: field (the answer's key), value (context digest and
-- float32 vector), ttl in ms, max fields.
-- Hashes keep no insertion order, so the excess is evicted at random, never the field
-- just written. The whole hash expires with the newest answer in it.
-- Returns the number of fields evicted.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local excess = redis.call('HLEN', KEYS[1]) - tonumber(ARGV[4])
local evicted = 0
if excess > 0 then
  for _, victim in ipairs(redis.call('HRANDFIELD', KEYS[1], excess + 1)) do
    if evicted == excess then
      break
    end
    if victim ~= ARGV[1] then
      redis.call('HDEL', KEYS[1], victim)
      evicted = evicted + 1
    end
  end
end
return evicted
