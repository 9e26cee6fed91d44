-- Commit one batch of one partition: checkpoint, outputs, counters and XACK, all or nothing.
--
-- Everything is checked before the first write: the caller's lease and fencing epoch, the
-- commit number (a resend of a commit already applied is answered DUPLICATE and writes
-- nothing), the argument counts and the key types. After that no call can fail, so the writes
-- land together or, should the caller die before sending, not at all. No sensor state is read or
-- computed here: the owner computed it, and validated every value, in Python.
--
-- KEYS: 1 lease, 2 epoch, 3 checkpoint, 4 state, 5 rolling, 6 aggregates, 7 alerts,
--       8 dead-letter, 9 counters, 10 readings stream
-- ARGV: 1 token, 2 epoch, 3 commit number, 4 position (last entry id covered, '' if none),
--       5 partition clock, 6 group, 7 output maxlen,
--       8..12 how many arguments follow for: state, rolling, counters, ack, outputs;
--       then those arguments in that order. State, rolling and counters are field/value
--       pairs; ack is entry ids; outputs are entries, each: stream (6, 7 or 8), field count, fields.

local CHUNK = 1000
local token, epoch, commit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local position, clock, group, maxlen = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local n_state, n_rolling, n_counters = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local n_ack, n_outputs = tonumber(ARGV[11]), tonumber(ARGV[12])
local HEADER = 12

if #ARGV ~= HEADER + n_state + n_rolling + n_counters + n_ack + n_outputs then
  return {'BADARGS', #ARGV}
end
if redis.call('GET', KEYS[1]) ~= token or redis.call('GET', KEYS[2]) ~= epoch then
  return {'FENCED', redis.call('GET', KEYS[2]) or ''}
end
local committed = tonumber(redis.call('HGET', KEYS[3], 'commit') or '0')
if commit <= committed then
  return {'DUPLICATE', committed}
end
if commit ~= committed + 1 then
  return {'GAP', committed}
end
local expected = {[3] = 'hash', [4] = 'hash', [5] = 'hash', [6] = 'stream', [7] = 'stream', [8] = 'stream',
                  [9] = 'hash', [10] = 'stream'}
for index, kind in pairs(expected) do
  local found = redis.call('TYPE', KEYS[index])['ok']
  if found ~= kind and found ~= 'none' then
    return {'WRONGTYPE', KEYS[index]}
  end
end
if n_ack > 0 and not pcall(redis.call, 'XPENDING', KEYS[10], group, '-', '+', 1) then
  return {'NOGROUP', KEYS[10]}
end
-- Outputs are walked once before writing: a malformed list must not stop the script halfway.
local outputs, at, last = {}, HEADER + n_state + n_rolling + n_counters + n_ack + 1, #ARGV
while at <= last do
  local stream, width = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  if (stream ~= 6 and stream ~= 7 and stream ~= 8) or width == nil or width % 2 ~= 0 or width < 2
     or at + 1 + width > last then
    return {'BADARGS', at}
  end
  outputs[#outputs + 1] = {stream, at + 2, at + 1 + width}
  at = at + 2 + width
end

-- Checks done: from here on, only writes.
local function hset_range(key, first, count)
  for i = first, first + count - 1, CHUNK do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + CHUNK - 1, first + count - 1)))
  end
end

at = HEADER + 1
if n_state > 0 then hset_range(KEYS[4], at, n_state) end
at = at + n_state
if n_rolling > 0 then hset_range(KEYS[5], at, n_rolling) end
at = at + n_rolling
for i = at, at + n_counters - 1, 2 do
  redis.call('HINCRBY', KEYS[9], ARGV[i], ARGV[i + 1])
end
at = at + n_counters
for _, output in ipairs(outputs) do
  redis.call('XADD', KEYS[output[1]], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, output[2], output[3]))
end
local acked = 0
for i = at, at + n_ack - 1, CHUNK do
  acked = acked + redis.call('XACK', KEYS[10], group, unpack(ARGV, i, math.min(i + CHUNK - 1, at + n_ack - 1)))
end
if position ~= '' then
  redis.call('HSET', KEYS[3], 'commit', commit, 'position', position, 'clock', clock)
else
  redis.call('HSET', KEYS[3], 'commit', commit, 'clock', clock)
end
return {'OK', acked}
