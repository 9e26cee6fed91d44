-- Append a batch of readings atomically, skipping any a previous attempt already wrote.
-- KEYS[1] readings stream, KEYS[2] producer-seq hash (sensor -> last seq written)
-- ARGV[1] maxlen (0: no trimming), ARGV[2] width (fields per entry),
-- ARGV[3] sensor column, ARGV[4] seq column (0: readings carry no seq),
-- ARGV[5 .. 4+width] field names, ARGV[5+width] the rows: one per line, values tab-separated.
-- A resend after a lost reply is therefore harmless: rows whose seq is not above the stored one
-- are skipped, so a Redis restart leaves neither a gap nor a duplicate.
local maxlen = tonumber(ARGV[1])
local width = tonumber(ARGV[2])
local sensor_col = tonumber(ARGV[3])
local seq_col = tonumber(ARGV[4])
local last_seq = {}
local appended, skipped = 0, 0
local entry, values = {}, {}
for row in string.gmatch(ARGV[5 + width], '[^\n]+') do
  local c = 0
  for value in string.gmatch(row, '[^\t]+') do
    c = c + 1
    values[c] = value
  end
  local sensor = values[sensor_col]
  local fresh = true
  local seq = nil
  if seq_col > 0 then
    seq = tonumber(values[seq_col])
    local known = last_seq[sensor]
    if known == nil then
      known = tonumber(redis.call('HGET', KEYS[2], sensor) or '-1')
      last_seq[sensor] = known
    end
    fresh = seq > known
  end
  if fresh then
    for c = 1, width do
      entry[2 * c - 1] = ARGV[4 + c]
      entry[2 * c] = values[c]
    end
    if maxlen > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(entry))
    else
      redis.call('XADD', KEYS[1], '*', unpack(entry))
    end
    if seq ~= nil then last_seq[sensor] = seq end
    appended = appended + 1
  else
    skipped = skipped + 1
  end
end
for sensor, seq in pairs(last_seq) do
  if seq >= 0 then redis.call('HSET', KEYS[2], sensor, seq) end
end
return {appended, skipped}
