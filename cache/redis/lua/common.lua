-- Shared by the scripts that change a stream (see keys.go for the layout). Lua 5.1 numbers are
-- doubles: integers are exact below 2^53, but tostring and '..' write those above 10^14 in
-- exponent form, so every number that goes into Redis is formatted with int().
local function int(x) return string.format('%d', x) end

local function seqOf(id) return tonumber(string.match(id, '^(%d+)')) end

-- The bytes a message counts against the per-stream byte cap; f is an entry's field list
-- {'t', time, 'e', event, 'd', data}, in the order XADD wrote it.
local function cost(f, overhead) return overhead + #f[4] + #f[6] end

-- dropHead removes messages from the head of stream m for as long as drop(len, bytes, fields)
-- says so, and returns the stream's byte count after it and how many messages it removed (as
-- XTRIM counted them). The cost follows what it removes.
local function dropHead(m, b, overhead, drop)
  local len = redis.call('XLEN', m)
  local cut, from, more, count = nil, '-', true, 1
  while more and len > 0 do
    -- Usually nothing or one message goes: look at one, then at twice as many each time.
    local r = redis.call('XRANGE', m, from, '+', 'COUNT', count)
    count = math.min(2 * count, 128)
    if #r == 0 then break end
    for i = 1, #r do
      local f = r[i][2]
      if not drop(len, b, f) then more = false break end
      b = b - cost(f, overhead)
      len = len - 1
      cut = seqOf(r[i][1])
    end
    if cut then from = '(' .. int(cut) .. '-0' end
  end
  local gone = 0
  if cut then gone = redis.call('XTRIM', m, 'MINID', int(cut + 1) .. '-0') end
  if len == 0 then b = 0 end
  return b, gone
end

-- expire removes what is due at now: idempotency keys older than the TTL (the list q holds them
-- oldest first) and messages older than the TTL (times never decrease along a stream, so they
-- are a prefix). It returns the stream's byte count after it and how many messages expired.
local function expire(h, m, q, now, ttl, overhead)
  while true do
    local x = redis.call('LINDEX', q, 0)
    if not x then break end
    local sp = string.find(x, ' ', 1, true)
    if tonumber(string.sub(x, 1, sp - 1)) + ttl > now then break end
    redis.call('HDEL', h, 'k:' .. string.sub(x, sp + 1))
    redis.call('LPOP', q)
  end
  local b = tonumber(redis.call('HGET', h, 'b') or '0')
  return dropHead(m, b, overhead, function(_, _, f) return tonumber(f[2]) + ttl <= now end)
end

-- create starts a new life of the stream when its meta hash is gone (never written, freed
-- after idling, evicted, or lost with a restart): a new epoch, seq from 1, and no leftovers.
local function create(h, m, q, epoch)
  if redis.call('EXISTS', h) == 1 then return end
  redis.call('DEL', m, q)
  redis.call('HSET', h, 'e', epoch, 'n', 0, 't', 0, 'b', 0)
end

local function touch(h, m, q, idle)
  redis.call('PEXPIRE', h, idle)
  redis.call('PEXPIRE', m, idle)
  redis.call('PEXPIRE', q, idle)
end
