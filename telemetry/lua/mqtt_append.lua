-- Append readings from MQTT messages to one partition stream, each once: a reading whose sensor
-- already has its device time here (a message redelivered after the bridge wrote it but died
-- before acknowledging, a device repeating itself) is counted as a duplicate and not written;
-- a resend of the same batch after a lost reply writes nothing (the batch marker).
-- KEYS[1] partition readings stream, KEYS[2] the bridge process's batch marker (string, TTL),
-- KEYS[3] seq hash (sensor -> last seq), KEYS[4] counters hash (written, duplicates),
-- KEYS[4+i] the seen-times sorted set of reading i's sensor.
-- ARGV[1] batch number, ARGV[2] marker TTL ms, ARGV[3] maxlen (0: none), ARGV[4] device times
-- kept per sensor, ARGV[5..11] entry field names: sensor, ts, temperature, humidity, seq, version,
-- time source ('' for a part the entry leaves out), ARGV[12] schema version, then per reading
-- 5 values: sensor, ts, temperature, humidity, '1' if ts is device time ('0': arrival time,
-- which cannot be recognised again and is written as it comes).
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
  local sensor, ts, device = ARGV[at], ARGV[at + 1], ARGV[at + 4]
  local new = 1
  if device == '1' then
    new = redis.call('ZADD', KEYS[5 + i], 'NX', ts, ts)
    if new == 1 then redis.call('ZREMRANGEBYRANK', KEYS[5 + i], 0, -keep - 1) end
  end
  if new == 1 then
    local entry = {f_sensor, sensor, f_ts, ts, f_t, ARGV[at + 2], f_h, ARGV[at + 3]}
    if f_seq ~= '' then
      entry[#entry + 1] = f_seq
      entry[#entry + 1] = redis.call('HINCRBY', KEYS[3], sensor, 1) - 1
    end
    if f_v ~= '' then
      entry[#entry + 1] = f_v
      entry[#entry + 1] = version
    end
    if device ~= '1' then
      entry[#entry + 1] = f_source
      entry[#entry + 1] = 'broker'
    end
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
