-- Append readings from MQTT messages to one partition stream, each once: a reading whose sensor
-- already has its identity here, its device time and the metrics it carries (a message
-- redelivered after the bridge wrote it but died before acknowledging, a device repeating
-- itself), is counted as a duplicate and not written; a split-topic device's temperature and
-- humidity of one time are two identities. A resend of the same batch after a lost reply
-- writes nothing (the batch marker).
-- KEYS[1] partition readings stream, KEYS[2] the bridge process's batch marker (string, TTL),
-- KEYS[3] seq hash (sensor -> last seq), KEYS[4] counters hash (written, duplicates),
-- KEYS[4+i] the seen-times sorted set of reading i's sensor.
-- ARGV[1] batch number, ARGV[2] marker TTL ms, ARGV[3] maxlen (0: none), ARGV[4] device times
-- kept per sensor, ARGV[5..11] entry field names: sensor, ts, temperature, humidity, seq, version,
-- time source ('' for a part the entry leaves out), ARGV[12] schema version, then per reading
-- 5 values: sensor, ts, temperature, humidity ('' for a metric the reading does not carry: the
-- entry leaves its field out), '1' if ts is device time ('0': arrival time, which cannot be
-- recognised again and is written as it comes). The seen set's member is the time for a reading
-- of both metrics, else the time and ':t' or ':h'; its score is the time.
local batch = tonumber(ARGV[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') >= batch then
  return {0, 0, 1}
end
local maxlen = tonumber(ARGV[3])
local keep = tonumber(ARGV[4])
local f_sensor, f_ts, f_t, f_h, f_seq, f_v, f_source = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local version = ARGV[12]
local written, duplicates = 0, 0
local readings = (#ARGV - 12) / 5
for i = 0, readings - 1 do
  local at = 13 + 5 * i
  local sensor, ts, t, h, device = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local new = 1
  if device == '1' then
    local member = ts
    if t == '' then member = ts .. ':h' elseif h == '' then member = ts .. ':t' end
    new = redis.call('ZADD', KEYS[5 + i], 'NX', ts, member)
    if new == 1 then redis.call('ZREMRANGEBYRANK', KEYS[5 + i], 0, -keep - 1) end
  end
  if new == 1 then
    local entry = {f_sensor, sensor, f_ts, ts}
    local function put(name, value)  -- a field the entry carries only in some cases
      entry[#entry + 1] = name
      entry[#entry + 1] = value
    end
    if t ~= '' then put(f_t, t) end
    if h ~= '' then put(f_h, h) end
    if f_seq ~= '' then put(f_seq, redis.call('HINCRBY', KEYS[3], sensor, 1) - 1) end
    if f_v ~= '' then put(f_v, version) end
    if device ~= '1' then put(f_source, 'broker') end
    if maxlen > 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(entry))
    else
      redis.call('XADD', KEYS[1], '*', unpack(entry))
    end
    written = written + 1
  else
    duplicates = duplicates + 1
  end
end
if written > 0 then redis.call('HINCRBY', KEYS[4], 'written', written) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[4], 'duplicates', duplicates) end
redis.call('SET', KEYS[2], batch, 'PX', ARGV[2])
return {written, duplicates, 0}
