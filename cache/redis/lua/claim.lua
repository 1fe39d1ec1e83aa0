-- claim: KEYS the claim key; ARGV now, ttl (µs), ttl (ms). Returns 1 when the key was unclaimed
-- at now (by the store's clock, so tests can move it) and claims it; 0 otherwise. Redis frees
-- the key by its own clock after the TTL.
local v = redis.call('GET', KEYS[1])
local now = tonumber(ARGV[1])
if v and tonumber(v) > now then return 0 end
redis.call('SET', KEYS[1], string.format('%d', now + tonumber(ARGV[2])), 'PX', ARGV[3])
return 1
