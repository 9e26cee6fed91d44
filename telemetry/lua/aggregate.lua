-- The aggregator's state machine, run atomically inside Redis.
--
-- mode 'commit': apply one worker batch. Checks that every entry is still pending to this
--   consumer (an entry claimed away in the meantime is someone else's to apply), XACKs, writes
--   dead letters, folds the readings into per-sensor windows, rolling buffers and alert states,
--   and emits closed windows and alert transitions. All or nothing, so a worker killed at any
--   moment either applied a batch completely or not at all, and no entry is applied twice.
-- mode 'sweep': visit sensors whose next wall-clock deadline has passed: settle watermarks,
--   close windows of silent sensors, fire 'silent' alerts.
--
-- Watermarks are held back by the group's pending entries: a reading moves its sensor's
-- watermark only once every older stream entry is committed. So a window never closes while an
-- older reading is still in a crashed worker's hands, and results do not depend on how many
-- workers ran or in what order they committed.
--
-- KEYS: 1 readings, 2 dead-letter, 3 aggregates, 4 alerts, 5 sensor-state, 6 counters,
--       7 sensor-due (zset: sensor -> next sweep deadline), then per sensor: recent, rolling.
-- ARGV: 1 mode, 2 group, 3 consumer, 4 now_ms, 5 config json, then mode-specific (see below).

local K_READINGS, K_DEAD, K_AGG, K_ALERTS, K_STATE, K_COUNTERS, K_DUE = 1, 2, 3, 4, 5, 6, 7
local mode, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])
local cfg = cjson.decode(ARGV[5])
local INF = math.huge
local counters = {}
local emitted_windows, emitted_alerts = 0, 0

local function count(name, by)
  counters[name] = (counters[name] or 0) + (by or 1)
end

local function fmt(x)
  if x == nil or x ~= x then return '' end
  return string.format('%.15g', x)
end

local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_before(a, b)  -- a < b; b == nil means "no bound"
  if b == nil then return true end
  local ams, aseq = parse_id(a)
  local bms, bseq = parse_id(b)
  return ams < bms or (ams == bms and aseq < bseq)
end

-- Oldest entry still pending anywhere in the group; everything older is committed.
local function oldest_pending()
  local summary = redis.call('XPENDING', KEYS[K_READINGS], group)
  if summary[1] == 0 then return nil end
  return summary[2]
end

local function xadd(key, maxlen, fields)
  return redis.call('XADD', key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
end

local function dead_letter(entry_id, reason, fields_json)
  xadd(KEYS[K_DEAD], cfg.output_maxlen, {'entry_id', entry_id, 'reason', reason, 'consumer', consumer,
                                         'fields', fields_json, 'dead_lettered_ms', now})
  count('dead_lettered')
end

-- Welford accumulators: one pass, numerically stable, mergeable.
local function acc_new() return {n = 0, mean = 0, m2 = 0, min = INF, max = -INF} end
local function acc_add(a, x)
  a.n = a.n + 1
  local delta = x - a.mean
  a.mean = a.mean + delta / a.n
  a.m2 = a.m2 + delta * (x - a.mean)
  if x < a.min then a.min = x end
  if x > a.max then a.max = x end
end
local function acc_std(a)
  if a.n < 2 then return nil end
  return math.sqrt(math.max(a.m2, 0) / (a.n - 1))
end

local function load_state(sensor)
  local packed = redis.call('HGET', KEYS[K_STATE], sensor)
  if packed then return cmsgpack.unpack(packed) end
  return {wm = -INF, closed_through = -INF, max_ts = -INF, last_arrival = 0, windows = {}, marks = {},
          alerts = {}, roll = {}, last = {}, late = 0, duplicates = 0, accepted = 0}
end

local function save_state(sensor, st)
  redis.call('HSET', KEYS[K_STATE], sensor, cmsgpack.pack(st))
end

---------------------------------------------------------------------------------------------
-- Alerts: one firing and one resolved event per episode, because the state lives here.

local function emit_alert(sensor, rule, st, state, ts, value, stats)
  local fields = {'alert_id', st.id, 'rule', rule.name, 'kind', rule.kind, 'sensor', sensor,
                  'severity', rule.severity, 'state', state, 'value', fmt(value),
                  'threshold', fmt(rule.threshold), 'ts', ts, 'emitted_ms', now}
  for name, v in pairs(stats or {}) do
    fields[#fields + 1] = 'stats_' .. name
    fields[#fields + 1] = fmt(v)
  end
  xadd(KEYS[K_ALERTS], cfg.output_maxlen, fields)
  emitted_alerts = emitted_alerts + 1
end

-- breach: the condition holds now; clear: it is gone beyond the hysteresis band.
local function alert_step(sensor, st_all, rule, breach, clear, ts, value, stats)
  local st = st_all[rule.name]
  if st == nil then st = {s = 'ok'}; st_all[rule.name] = st end
  if st.s == 'firing' then
    if clear then
      emit_alert(sensor, rule, st, 'resolved', ts, value, stats)
      st.s, st.since, st.id = 'ok', nil, nil
    end
  elseif breach then
    if st.s ~= 'pending' then st.s, st.since = 'pending', ts end
    if ts - st.since >= rule.for_ms then
      st.s = 'firing'
      st.id = rule.name .. ':' .. sensor .. ':' .. string.format('%d', st.since)
      emit_alert(sensor, rule, st, 'firing', ts, value, stats)
    end
  else
    st.s, st.since = 'ok', nil
  end
end

local function compare(rule, value)
  -- returns breach, clear for a threshold with hysteresis
  if rule.above ~= nil then
    return value > rule.above, value <= rule.above - rule.hysteresis
  end
  return value < rule.below, value >= rule.below + rule.hysteresis
end

local function roll_stats(st, metric)
  local r = st.roll[metric]
  if r == nil then return nil end
  return {count = r.n, mean = r.mean, std = r.std, min = r.min, max = r.max}
end

-- Rules that look at a single reading, evaluated in stream order within the batch.
local function alerts_for_reading(sensor, st, ts, values)
  for _, rule in ipairs(cfg.rules) do
    local value = values[rule.metric]
    if rule.kind == 'threshold' and rule.source == 'reading' then
      local breach, clear = compare(rule, value)
      alert_step(sensor, st.alerts, rule, breach, clear, ts, value, roll_stats(st, rule.metric))
    elseif rule.kind == 'rate_of_change' then
      local prev = st.last[rule.metric]
      if prev ~= nil and ts > prev[1] then
        local per_min = math.abs(value - prev[2]) / (ts - prev[1]) * 60000
        alert_step(sensor, st.alerts, rule, per_min > rule.threshold, per_min <= rule.threshold, ts, per_min, nil)
      end
    elseif rule.kind == 'zscore' then
      local r = st.roll[rule.metric]
      if r ~= nil and r.n >= rule.min_count and r.std ~= nil and r.std > 0 then
        local z = math.abs(value - r.mean) / r.std
        alert_step(sensor, st.alerts, rule, z > rule.threshold, z <= rule.threshold - rule.hysteresis, ts, z,
                   roll_stats(st, rule.metric))
      end
    elseif rule.kind == 'silent' then
      alert_step(sensor, st.alerts, rule, false, true, ts, 0, nil)
    end
  end
end

-- Rules on the rolling aggregate, evaluated once the batch's rolling stats are known.
local function alerts_for_rolling(sensor, st, ts)
  for _, rule in ipairs(cfg.rules) do
    if rule.kind == 'threshold' and rule.source ~= 'reading' then
      local r = st.roll[rule.metric]
      if r ~= nil and r.n > 0 then
        local value = r[rule.source]
        if value ~= nil then
          local breach, clear = compare(rule, value)
          alert_step(sensor, st.alerts, rule, breach, clear, ts, value, roll_stats(st, rule.metric))
        end
      end
    end
  end
end

local function alerts_for_window(sensor, st, w)
  for _, rule in ipairs(cfg.rules) do
    if rule.kind == 'stuck' then
      local stuck = w.n >= rule.min_count and w.t.max == w.t.min and w.h.max == w.h.min
      alert_step(sensor, st.alerts, rule, stuck, not stuck, w.last_ts, w.t.max - w.t.min,
                 {count = w.n, temperature_c_mean = w.t.mean, humidity_pct_mean = w.h.mean})
    end
  end
end

---------------------------------------------------------------------------------------------
-- Windows

local function close_window(sensor, st, start, closed_by)
  local w = st.windows[start]
  local window_end = start + cfg.window_ms
  xadd(KEYS[K_AGG], cfg.output_maxlen, {
    'sensor', sensor, 'window_start', string.format('%d', start), 'window_end', string.format('%d', window_end),
    'count', w.n,
    'temperature_c_mean', fmt(w.t.mean), 'temperature_c_min', fmt(w.t.min), 'temperature_c_max', fmt(w.t.max),
    'temperature_c_std', fmt(acc_std(w.t)),
    'humidity_pct_mean', fmt(w.h.mean), 'humidity_pct_min', fmt(w.h.min), 'humidity_pct_max', fmt(w.h.max),
    'humidity_pct_std', fmt(acc_std(w.h)),
    'first_ts', string.format('%d', w.first_ts), 'last_ts', string.format('%d', w.last_ts),
    'closed_by', closed_by, 'emitted_ms', now})
  emitted_windows = emitted_windows + 1
  alerts_for_window(sensor, st, w)
  st.windows[start] = nil
  if window_end > st.closed_through then st.closed_through = window_end end
end

local function sorted_window_starts(st)
  local starts = {}
  for start, _ in pairs(st.windows) do starts[#starts + 1] = start end
  table.sort(starts)
  return starts
end

local function close_by_watermark(sensor, st)
  for _, start in ipairs(sorted_window_starts(st)) do
    if start + cfg.window_ms + cfg.grace_ms <= st.wm then
      close_window(sensor, st, start, 'watermark')
    end
  end
end

local function advance_watermark(sensor, st, ts)
  if ts > st.wm then
    st.wm = ts
    close_by_watermark(sensor, st)
  end
end

local function settle_marks(sensor, st, oldest)
  local kept = {}
  for _, mark in ipairs(st.marks) do
    if id_before(mark[1], oldest) then
      advance_watermark(sensor, st, mark[2])
    else
      kept[#kept + 1] = mark
    end
  end
  st.marks = kept
end

-- The wall-clock moment this sensor next needs a sweep visit (INF: none).
local function next_due(st)
  local due = INF
  if #st.marks > 0 then due = now + 1000 end
  for start, _ in pairs(st.windows) do
    local idle_close = math.max(start + cfg.window_ms + cfg.grace_ms + cfg.idle_ms, st.last_arrival + cfg.idle_ms)
    if idle_close < due then due = idle_close end
  end
  for _, rule in ipairs(cfg.rules) do
    if rule.kind == 'silent' then
      local a = st.alerts[rule.name]
      if a == nil or a.s ~= 'firing' then
        due = math.min(due, st.last_arrival + rule.after_ms)
      end
    end
  end
  return due
end

local function schedule(sensor, st)
  local due = next_due(st)
  if due <= now then due = now + 1000 end  -- blocked for now (e.g. a stuck entry): look again soon
  if due == INF then
    redis.call('ZREM', KEYS[K_DUE], sensor)
  else
    redis.call('ZADD', KEYS[K_DUE], due, sensor)
  end
end

---------------------------------------------------------------------------------------------
-- Rolling stats over (max_ts - rolling, max_ts], recomputed from the sensor's recent set.

local function refresh_rolling(sensor, st, recent_key, rolling_key)
  local keep_from = math.min(st.max_ts - cfg.rolling_ms, st.wm - cfg.window_ms - cfg.grace_ms)
  if keep_from > -INF then
    redis.call('ZREMRANGEBYSCORE', recent_key, '-inf', '(' .. string.format('%d', keep_from))
  end
  local members = redis.call('ZRANGEBYSCORE', recent_key, '(' .. string.format('%d', st.max_ts - cfg.rolling_ms), '+inf')
  local t, h = acc_new(), acc_new()
  for _, member in ipairs(members) do
    local tv, hv = string.match(member, '^[^:]*:[^:]*:([^:]*):([^:]*)$')
    acc_add(t, tonumber(tv))
    acc_add(h, tonumber(hv))
  end
  st.roll = {
    temperature_c = {n = t.n, mean = t.mean, std = acc_std(t), min = t.min, max = t.max},
    humidity_pct = {n = h.n, mean = h.mean, std = acc_std(h), min = h.min, max = h.max},
  }
  redis.call('HSET', rolling_key, 'count', t.n, 'as_of_ts', string.format('%d', st.max_ts),
    'temperature_c_mean', fmt(t.mean), 'temperature_c_std', fmt(acc_std(t)),
    'temperature_c_min', fmt(t.min), 'temperature_c_max', fmt(t.max),
    'humidity_pct_mean', fmt(h.mean), 'humidity_pct_std', fmt(acc_std(h)),
    'humidity_pct_min', fmt(h.min), 'humidity_pct_max', fmt(h.max),
    'window_s', cfg.rolling_ms / 1000, 'updated_ms', now)
end

---------------------------------------------------------------------------------------------

local function window_of(ts)
  return ts - (ts % cfg.window_ms)
end

local function apply_reading(sensor, st, oldest, recent_key, id, ts, t, h, seq)
  local start = window_of(ts)
  local window_end = start + cfg.window_ms
  if window_end + cfg.grace_ms <= st.wm or window_end <= st.closed_through then
    st.late = st.late + 1
    count('late')
    dead_letter(id, 'late: window ' .. string.format('%d', start) .. ' already closed (watermark '
      .. string.format('%d', st.wm) .. ')', cjson.encode({sensor = sensor, ts = ts, temperature_c = t,
                                                           humidity_pct = h, seq = seq}))
    return
  end
  local member = string.format('%d', ts) .. ':' .. seq .. ':' .. fmt(t) .. ':' .. fmt(h)
  if redis.call('ZADD', recent_key, 'NX', ts, member) == 0 then
    st.duplicates = st.duplicates + 1
    count('duplicates')
    return
  end
  local w = st.windows[start]
  if w == nil then
    w = {n = 0, t = acc_new(), h = acc_new(), first_ts = ts, last_ts = ts}
    st.windows[start] = w
  end
  w.n = w.n + 1
  acc_add(w.t, t)
  acc_add(w.h, h)
  if ts < w.first_ts then w.first_ts = ts end
  if ts > w.last_ts then w.last_ts = ts end
  st.accepted = st.accepted + 1
  count('processed')
  if ts > st.max_ts then st.max_ts = ts end
  local arrival = parse_id(id)
  if arrival > st.last_arrival then st.last_arrival = arrival end
  alerts_for_reading(sensor, st, ts, {temperature_c = t, humidity_pct = h})
  for metric, value in pairs({temperature_c = t, humidity_pct = h}) do
    local prev = st.last[metric]
    if prev == nil or ts > prev[1] then st.last[metric] = {ts, value} end
  end
  if id_before(id, oldest) then
    advance_watermark(sensor, st, ts)
  else
    st.marks[#st.marks + 1] = {id, ts}
  end
end

local function flush_counters()
  for name, by in pairs(counters) do
    redis.call('HINCRBY', KEYS[K_COUNTERS], name, by)
  end
  if emitted_windows > 0 then redis.call('HINCRBY', KEYS[K_COUNTERS], 'windows_emitted', emitted_windows) end
  if emitted_alerts > 0 then redis.call('HINCRBY', KEYS[K_COUNTERS], 'alerts_emitted', emitted_alerts) end
end

if mode == 'commit' then
  -- ARGV 6: min id, 7: max id, 8: number of sensors S, then per sensor: name, n, n x (id, ts, t, h, seq);
  -- then D, D x (id, reason, fields json) dead letters; then L, L x id entries trimmed away.
  local pos = 9
  local batches, all_ids = {}, {}
  for _ = 1, tonumber(ARGV[8]) do
    local sensor, n = ARGV[pos], tonumber(ARGV[pos + 1])
    pos = pos + 2
    batches[#batches + 1] = {sensor = sensor, first = pos, n = n}
    for i = 0, n - 1 do all_ids[#all_ids + 1] = ARGV[pos + i * 5] end
    pos = pos + n * 5
  end
  local dead_n = tonumber(ARGV[pos]); pos = pos + 1
  local dead_first = pos
  for i = 0, dead_n - 1 do all_ids[#all_ids + 1] = ARGV[pos + i * 3] end
  pos = pos + dead_n * 3
  local lost_n = tonumber(ARGV[pos]); pos = pos + 1
  for i = 0, lost_n - 1 do all_ids[#all_ids + 1] = ARGV[pos + i] end

  local mine = {}
  for _, entry in ipairs(redis.call('XPENDING', KEYS[K_READINGS], group, ARGV[6], ARGV[7], #all_ids + 100000, consumer)) do
    mine[entry[1]] = true
  end
  local stolen = {}
  for _, id in ipairs(all_ids) do
    if not mine[id] then stolen[#stolen + 1] = id end
  end
  if #stolen > 0 then return {'conflict', stolen} end

  for i = 1, #all_ids, 5000 do
    redis.call('XACK', KEYS[K_READINGS], group, unpack(all_ids, i, math.min(i + 4999, #all_ids)))
  end
  local oldest = oldest_pending()
  for i = 0, dead_n - 1 do
    local p = dead_first + i * 3
    dead_letter(ARGV[p], ARGV[p + 1], ARGV[p + 2])
  end
  if lost_n > 0 then count('lost_to_trim', lost_n) end

  for b, batch in ipairs(batches) do
    local sensor = batch.sensor
    local recent_key, rolling_key = KEYS[7 + 2 * b - 1], KEYS[7 + 2 * b]
    local st = load_state(sensor)
    local latest_ts = -INF
    for i = 0, batch.n - 1 do
      local p = batch.first + i * 5
      local ts = tonumber(ARGV[p + 1])
      apply_reading(sensor, st, oldest, recent_key, ARGV[p], ts, tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3]),
                    ARGV[p + 4])
      if ts > latest_ts then latest_ts = ts end
    end
    settle_marks(sensor, st, oldest)
    if st.max_ts > -INF then
      refresh_rolling(sensor, st, recent_key, rolling_key)
      alerts_for_rolling(sensor, st, st.max_ts)
    end
    save_state(sensor, st)
    schedule(sensor, st)
  end
  flush_counters()
  return {'ok', #all_ids, emitted_windows, emitted_alerts}
end

if mode == 'sweep' then
  -- ARGV 6: max sensors to visit. Visits sensors whose deadline has passed.
  local due = redis.call('ZRANGEBYSCORE', KEYS[K_DUE], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
  local oldest = oldest_pending()
  local stuck_cutoff = now - cfg.idle_ms
  local nothing_stuck = oldest == nil or parse_id(oldest) >= stuck_cutoff
  for _, sensor in ipairs(due) do
    local st = load_state(sensor)
    settle_marks(sensor, st, oldest)
    -- A silent sensor's open windows close on the wall clock, but not while an entry has been
    -- pending longer than the idle allowance: it may hold this sensor's readings.
    if nothing_stuck and now - st.last_arrival >= cfg.idle_ms then
      for _, start in ipairs(sorted_window_starts(st)) do
        if now >= start + cfg.window_ms + cfg.grace_ms + cfg.idle_ms then
          close_window(sensor, st, start, 'idle')
        end
      end
    end
    for _, rule in ipairs(cfg.rules) do
      if rule.kind == 'silent' and now - st.last_arrival >= rule.after_ms then
        alert_step(sensor, st.alerts, rule, true, false, now, (now - st.last_arrival) / 1000, nil)
      end
    end
    save_state(sensor, st)
    schedule(sensor, st)
  end
  flush_counters()
  return {'ok', #due, emitted_windows, emitted_alerts}
end

return redis.error_reply('unknown mode ' .. tostring(mode))
