-- Append one producer batch to one partition stream, once: a resend of a batch already written
-- (its reply lost to a Redis restart or a dropped connection) writes nothing.
-- KEYS[1] partition readings stream, KEYS[2] the producer's batch marker (string with a TTL),
-- KEYS[3] producer-seq hash (sensor -> "last seq saved, stream id it was saved at"; a restarted
-- producer continues from there, reading the stream past that id for later seqs)
-- ARGV[1] batch number (grows with every batch of this producer), ARGV[2] marker TTL ms,
-- ARGV[3] maxlen (0: no trimming), ARGV[4] width (fields per entry), ARGV[5 .. 4+width] field
-- names, ARGV[5+width] the rows: one per line, values tab-separated (validated by the producer;
-- may be empty), ARGV[6+width ..] sensor, last seq pairs to save (only now and then, not per batch).
local batch = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') >= batch then
  return {0, 1}
end
local maxlen = tonumber(ARGV[3])
local width = tonumber(ARGV[4])
local entry, appended, last_id = {}, 0, nil
for c = 1, width do entry[2 * c - 1] = ARGV[4 + c] end
for row in string.gmatch(ARGV[5 + width], '[^\n]+') do
  local c = 0
  for value in string.gmatch(row, '[^\t]+') do
    c = c + 1
    entry[2 * c] = value
  end
  if maxlen > 0 then
    last_id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(entry))
  else
    last_id = redis.call('XADD', KEYS[1], '*', unpack(entry))
  end
  appended = appended + 1
end
if #ARGV >= 6 + width then
  if last_id == nil then
    local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    last_id = newest[1] and newest[1][1] or '0-0'
  end
  local pairs = {}
  for i = 6 + width, #ARGV, 2 do
    pairs[#pairs + 1] = ARGV[i]
    pairs[#pairs + 1] = ARGV[i + 1] .. ' ' .. last_id
    if #pairs >= 1000 then
      redis.call('HSET', KEYS[3], unpack(pairs))
      pairs = {}
    end
  end
  if #pairs > 0 then redis.call('HSET', KEYS[3], unpack(pairs)) end
end
redis.call('SET', KEYS[2], batch, 'PX', ARGV[2])
return {appended, 0}
