-- Claim entries idle too long in dead consumers' hands, and count the ones trimming took.
-- Redis 7 drops deleted entries from the PEL inside XAUTOCLAIM and lists them third. Redis 6.2
-- returns a nil in their place and keeps them pending; they are found through XPENDING and acked
-- here. Either way the count lands in the same atomic step, so a crash cannot lose it.
-- Entries claimed, or dropped from the PEL as deleted, have changed hands: the handover counter
-- is bumped in the same step, so that commits of batches read before it ack entry by entry.
-- KEYS[1] readings stream, KEYS[2] counters, KEYS[3] handovers; ARGV group, consumer, min idle
-- ms, start id, count
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local reply = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local entries, missing = {}, 0
for _, entry in ipairs(reply[2]) do
  if entry then entries[#entries + 1] = entry else missing = missing + 1 end
end
local deleted = 0
if reply[3] then deleted = #reply[3] end
if missing > 0 then
  local upper = '+'
  if reply[1] ~= '0-0' then upper = '(' .. reply[1] end
  for _, pending in ipairs(redis.call('XPENDING', stream, group, ARGV[4], upper, 100000, consumer)) do
    if #redis.call('XRANGE', stream, pending[1], pending[1]) == 0 then
      redis.call('XACK', stream, group, pending[1])
      deleted = deleted + 1
    end
  end
end
if deleted > 0 then redis.call('HINCRBY', KEYS[2], 'lost_to_trim', deleted) end
if deleted > 0 or #entries > 0 then redis.call('INCR', KEYS[3]) end
return {reply[1], entries, deleted}
