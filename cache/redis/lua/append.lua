-- append: KEYS h m q; ARGV now, ttl (µs), idle (ms), max count, max bytes, overhead, a fresh
-- epoch (used only if the stream starts a new life), channel, then (key, event, data) per draft.
-- Returns {epoch, seq per draft, expired, evicted}: the last two count the messages this call
-- removed for the TTL and for the per-stream caps (they come last so the ids keep their places).
-- Expiry, the appends, idempotency, the caps, the key expiry and the notification happen
-- atomically, in this one call.
local h, m, q = KEYS[1], KEYS[2], KEYS[3]
local now, ttl, idle = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local maxn, maxb, overhead = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

create(h, m, q, ARGV[7])
local b, expired = expire(h, m, q, now, ttl, overhead)
local meta = redis.call('HMGET', h, 'e', 'n', 't')
local epoch, n, at = meta[1], tonumber(meta[2]), math.max(now, tonumber(meta[3]))

local out = {epoch}
local stored, evicted = false, 0
for i = 9, #ARGV, 3 do
  local key, ev, data = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local seen = false
  if key ~= '' then seen = redis.call('HGET', h, 'k:' .. key) end
  if seen then
    out[#out + 1] = tonumber(seen)
  else
    n = n + 1
    redis.call('XADD', m, int(n) .. '-0', 't', int(at), 'e', ev, 'd', data)
    b = b + overhead + #ev + #data
    if key ~= '' then
      redis.call('HSET', h, 'k:' .. key, int(n))
      redis.call('RPUSH', q, int(at) .. ' ' .. key)
    end
    out[#out + 1] = n
    stored = true
  end
end

if stored then
  if b > maxb or redis.call('XLEN', m) > maxn then
    b, evicted = dropHead(m, b, overhead, function(len, bytes) return len > maxn or bytes > maxb end)
  end
  redis.call('HSET', h, 'n', int(n), 't', int(at), 'b', int(b))
  redis.call('PUBLISH', ARGV[8], int(n))
else
  redis.call('HSET', h, 'b', int(b))
end
touch(h, m, q, idle)
out[#out + 1] = expired
out[#out + 1] = evicted
return out
