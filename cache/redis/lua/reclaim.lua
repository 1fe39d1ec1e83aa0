-- reclaim: KEYS h m q; ARGV now, ttl (µs), overhead. Removes what has expired from one stream and
-- returns how many messages that was (0 for a stream that does not exist). Runs when Redis
-- refused an append for lack of memory (it is flagged allow-oom: it only frees).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local b, expired = expire(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'b', int(b))
return expired
