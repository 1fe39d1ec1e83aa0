-- read: KEYS h m; ARGV cursor epoch ('' for the zero cursor), cursor seq, now, ttl (µs), limit
-- (0: none). Returns {} when the stream does not exist, else {epoch, last seq, reset (0/1),
-- seq of the oldest live message (last+1 when none), entries}. Read-only: expired messages
-- that no append has trimmed yet are skipped, found by a binary search on seq.
local h, m = KEYS[1], KEYS[2]
local meta = redis.call('HMGET', h, 'e', 'n')
local epoch = meta[1]
if not epoch then return {} end
local last = tonumber(meta[2])
local cEpoch, cSeq = ARGV[1], tonumber(ARGV[2])
local now, ttl, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local function int(x) return string.format('%d', x) end
local function seqOf(id) return tonumber(string.match(id, '^(%d+)')) end
local function live(f) return tonumber(f[2]) + ttl > now end

-- Retained seqs are contiguous (only the oldest are ever removed) and times never decrease
-- along them, so the live messages are a suffix.
local first = last + 1
local head = redis.call('XRANGE', m, '-', '+', 'COUNT', 1)[1]
if head then
  if live(head[2]) then
    first = seqOf(head[1])
  else
    local tail = redis.call('XREVRANGE', m, '+', '-', 'COUNT', 1)[1]
    if live(tail[2]) then
      local lo, hi = seqOf(head[1]), seqOf(tail[1]) -- lo expired, hi live
      while hi - lo > 1 do
        local mid = math.floor((lo + hi) / 2)
        local p = redis.call('XRANGE', m, int(mid) .. '-0', '+', 'COUNT', 1)[1]
        local ps = seqOf(p[1])
        if ps >= hi then break end -- a gap in the seqs; cannot happen, but must not loop
        if live(p[2]) then hi = ps else lo = ps end
      end
      first = hi
    end
  end
end

local reset, from = 0, first
if cEpoch ~= '' then
  if cEpoch ~= epoch or cSeq > last or cSeq + 1 < first then
    reset = 1
  else
    from = cSeq + 1
  end
end
local entries = {}
if from <= last then
  if limit > 0 then
    entries = redis.call('XRANGE', m, int(from) .. '-0', '+', 'COUNT', limit)
  else
    entries = redis.call('XRANGE', m, int(from) .. '-0', '+')
  end
end
return {epoch, last, reset, first, entries}
