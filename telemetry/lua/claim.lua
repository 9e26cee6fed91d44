-- Claim entries idle too long in dead consumers' hands, and count the ones trimming took.
-- Redis 7 drops deleted entries from the PEL inside XAUTOCLAIM and lists them third; counting
-- them in the same script means a crash cannot lose the count. Redis 6.2 returns them in place
-- with nil fields instead: the worker acks and counts those in its commit.
-- KEYS[1] readings stream, KEYS[2] counters; ARGV group, consumer, min idle ms, start id, count
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local deleted = 0
if reply[3] then deleted = #reply[3] end
if deleted > 0 then redis.call('HINCRBY', KEYS[2], 'lost_to_trim', deleted) end
return {reply[1], reply[2], deleted}
