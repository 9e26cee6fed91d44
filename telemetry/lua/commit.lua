-- Commit one batch of one partition: checkpoint, outputs, counters and XACK, all or nothing.
--
-- Everything is checked before the first write: the caller's lease and fencing epoch, the
-- commit number (a resend of a commit already applied is answered DUPLICATE and writes
-- nothing), the argument counts and the key types. After that no call can fail, so the writes
-- land together or, should the caller die before sending, not at all. No sensor state is read or
-- computed here: the owner computed it, and validated every value, in Python.
--
-- KEYS: 1 lease, 2 epoch, 3 checkpoint, 4 state, 5 aggregates, 6 alerts, 7 dead-letter,
--       8 counters, 9 readings stream, 10 kept windows
-- ARGV: 1 token, 2 epoch, 3 commit number, 4 position (last entry id covered, '' if none),
--       5 partition clock, 6 group, 7 output maxlen, 8 rolling window ms (kept in the checkpoint
--       for readers of the state's buckets), 9..13 how many arguments follow for: state, kept
--       windows, counters, ack, outputs; then those arguments in that order. State, kept windows
--       and counters are field/value pairs; ack is entry ids; outputs are entries, each: stream
--       (5, 6 or 7), field count, fields.

local CHUNK = 1000
local token, epoch, commit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local position, clock, group, maxlen, rolling_ms = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local n_state, n_windows, n_counters, n_ack, n_outputs = tonumber(ARGV[9]), tonumber(ARGV[10]),
                                                         tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local HEADER = 13

if #ARGV ~= HEADER + n_state + n_windows + n_counters + n_ack + n_outputs then
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
local expected = {[3] = 'hash', [4] = 'hash', [5] = 'stream', [6] = 'stream', [7] = 'stream', [8] = 'hash',
                  [9] = 'stream', [10] = 'hash'}
for index, kind in pairs(expected) do
  local found = redis.call('TYPE', KEYS[index])['ok']
  if found ~= kind and found ~= 'none' then
    return {'WRONGTYPE', KEYS[index]}
  end
end
if n_ack > 0 and not pcall(redis.call, 'XPENDING', KEYS[9], group, '-', '+', 1) then
  return {'NOGROUP', KEYS[9]}
end
-- Outputs are walked once before writing: a malformed list must not stop the script halfway.
local outputs, at, last = {}, HEADER + n_state + n_windows + n_counters + n_ack + 1, #ARGV
while at <= last do
  local stream, width = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  if (stream ~= 5 and stream ~= 6 and stream ~= 7) or width == nil or width % 2 ~= 0 or width < 2
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
if n_windows > 0 then hset_range(KEYS[10], at, n_windows) end
at = at + n_windows
for i = at, at + n_counters - 1, 2 do
  redis.call('HINCRBY', KEYS[8], ARGV[i], ARGV[i + 1])
end
at = at + n_counters
for _, output in ipairs(outputs) do
  redis.call('XADD', KEYS[output[1]], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, output[2], output[3]))
end
local acked = 0
for i = at, at + n_ack - 1, CHUNK do
  acked = acked + redis.call('XACK', KEYS[9], group, unpack(ARGV, i, math.min(i + CHUNK - 1, at + n_ack - 1)))
end
if position ~= '' then
  redis.call('HSET', KEYS[3], 'commit', commit, 'position', position, 'clock', clock, 'rolling_ms', rolling_ms)
else
  redis.call('HSET', KEYS[3], 'commit', commit, 'clock', clock, 'rolling_ms', rolling_ms)
end
return {'OK', acked}
