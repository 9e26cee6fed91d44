-- The aggregator's state machine, run atomically inside Redis.
--
-- mode 'commit': apply one worker batch. Skips entries no longer pending (another consumer
--   claimed and committed them first: first commit wins), XACKs the rest, writes dead letters, folds the readings into per-sensor windows, rolling buffers and alert states,
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
local emitted_windows, emitted_alerts, processed = 0, 0, 0
local alert_labels = {}  -- 'rule:severity' of each alert fired, for the worker's metrics

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

-- Oldest entry still pending anywhere in the group, as (ms, seq); everything older is committed.
-- With nothing pending the bound is infinite.
local oldest_ms, oldest_seq = INF, INF
local function find_oldest_pending()
  local summary = redis.call('XPENDING', KEYS[K_READINGS], group)
  if summary[1] ~= 0 then oldest_ms, oldest_seq = parse_id(summary[2]) end
end

local function before_oldest(ms, seq)
  return ms < oldest_ms or (ms == oldest_ms and seq < oldest_seq)
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
          alerts = {}, roll = {}, last_ts = -INF,
          next_close = INF, rsum = {n = 0, t = 0, tt = 0, h = 0, hh = 0, tmin = INF, tmax = -INF, hmin = INF,
                                    hmax = -INF, tmin_n = 0, tmax_n = 0, hmin_n = 0, hmax_n = 0, cut = -INF}}
end

local function save_state(sensor, st)
  redis.call('HSET', KEYS[K_STATE], sensor, cmsgpack.pack(st))
end

---------------------------------------------------------------------------------------------
-- Alerts: one firing and one resolved event per episode, because the state lives here.

-- Rules sorted once by when they are evaluated: per reading, per batch (rolling), per closed window.
local reading_rules, rolling_rules, window_rules, silent_rules = {}, {}, {}, {}
for _, rule in ipairs(cfg.rules) do
  if rule.kind == 'threshold' and rule.source ~= 'reading' then
    rolling_rules[#rolling_rules + 1] = rule
  elseif rule.kind == 'stuck' then
    window_rules[#window_rules + 1] = rule
  else
    reading_rules[#reading_rules + 1] = rule
  end
  if rule.kind == 'silent' then silent_rules[#silent_rules + 1] = rule end
end

local function roll_stats(st, metric)
  local r = st.roll[metric]
  if r == nil then return nil end
  return {count = r.n, mean = r.mean, std = r.std, min = r.min, max = r.max}
end

-- context: a metric name (the event carries that metric's rolling stats) or a table of stats.
local function emit_alert(sensor, rule, st, state, ts, value, sensor_state, context)
  local stats = context
  if type(context) == 'string' then stats = roll_stats(sensor_state, context) end
  local fields = {'alert_id', st.id, 'rule', rule.name, 'kind', rule.kind, 'sensor', sensor,
                  'severity', rule.severity, 'state', state, 'value', fmt(value),
                  'threshold', fmt(rule.threshold), 'ts', ts, 'emitted_ms', now}
  for name, v in pairs(stats or {}) do
    fields[#fields + 1] = 'stats_' .. name
    fields[#fields + 1] = fmt(v)
  end
  xadd(KEYS[K_ALERTS], cfg.output_maxlen, fields)
  emitted_alerts = emitted_alerts + 1
  if state == 'firing' then alert_labels[#alert_labels + 1] = rule.name .. ':' .. rule.severity end
end

-- breach: the condition holds now; clear: it is gone beyond the hysteresis band.
local function alert_step(sensor, sensor_state, rule, breach, clear, ts, value, context)
  local st = sensor_state.alerts[rule.name]
  if st == nil then
    if not breach then return end
    st = {s = 'ok'}
    sensor_state.alerts[rule.name] = st
  end
  if st.s == 'firing' then
    if clear then
      emit_alert(sensor, rule, st, 'resolved', ts, value, sensor_state, context)
      st.s, st.since, st.id = 'ok', nil, nil
    end
  elseif breach then
    if st.s ~= 'pending' then st.s, st.since = 'pending', ts end
    if ts - st.since >= rule.for_ms then
      st.s = 'firing'
      st.id = rule.name .. ':' .. sensor .. ':' .. string.format('%d', st.since)
      emit_alert(sensor, rule, st, 'firing', ts, value, sensor_state, context)
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

-- Rules that look at a single reading, evaluated in stream order within the batch. Each becomes
-- a closure over its own parameters, so the per-reading loop does no dispatch on kind, and skips
-- alert_step when the condition does not hold and the rule has no state for this sensor.
local function reading_check(rule)
  local name, metric, threshold = rule.name, rule.metric, rule.threshold
  local humidity = metric == 'humidity_pct'
  if rule.kind == 'threshold' then
    local above, below, band = rule.above, rule.below, rule.hysteresis
    return function(sensor, st, ts, t, h)
      local value = t
      if humidity then value = h end
      local breach, clear
      if above ~= nil then
        breach, clear = value > above, value <= above - band
      else
        breach, clear = value < below, value >= below + band
      end
      if breach or st.alerts[name] ~= nil then alert_step(sensor, st, rule, breach, clear, ts, value, metric) end
    end
  elseif rule.kind == 'rate_of_change' then
    return function(sensor, st, ts, t, h)
      local last_ts = st.last_ts
      if ts > last_ts and last_ts > -INF then
        local value, previous = t, st.last_t
        if humidity then value, previous = h, st.last_h end
        local per_min = math.abs(value - previous) / (ts - last_ts) * 60000
        if per_min > threshold or st.alerts[name] ~= nil then
          alert_step(sensor, st, rule, per_min > threshold, per_min <= threshold, ts, per_min, nil)
        end
      end
    end
  elseif rule.kind == 'zscore' then
    local min_count, band = rule.min_count, rule.hysteresis
    return function(sensor, st, ts, t, h)
      local r = st.roll[metric]
      if r ~= nil and r.n >= min_count and r.std ~= nil and r.std > 0 then
        local value = t
        if humidity then value = h end
        local z = math.abs(value - r.mean) / r.std
        if z > threshold or st.alerts[name] ~= nil then
          alert_step(sensor, st, rule, z > threshold, z <= threshold - band, ts, z, metric)
        end
      end
    end
  end
  return function(sensor, st, ts)  -- silent: any reading resolves it
    if st.alerts[name] ~= nil then alert_step(sensor, st, rule, false, true, ts, 0, nil) end
  end
end

local reading_checks = {}
for _, rule in ipairs(reading_rules) do reading_checks[#reading_checks + 1] = reading_check(rule) end

local function alerts_for_reading(sensor, st, ts, t, h)
  for _, check in ipairs(reading_checks) do check(sensor, st, ts, t, h) end
end

-- Rules on the rolling aggregate, evaluated once the batch's rolling stats are known.
local function alerts_for_rolling(sensor, st, ts)
  for _, rule in ipairs(rolling_rules) do
    local r = st.roll[rule.metric]
    if r ~= nil and r.n > 0 and r[rule.source] ~= nil then
      local value = r[rule.source]
      local breach, clear = compare(rule, value)
      alert_step(sensor, st, rule, breach, clear, ts, value, rule.metric)
    end
  end
end

local function alerts_for_window(sensor, st, w)
  for _, rule in ipairs(window_rules) do
    local stuck = w.n >= rule.min_count and w.t.max == w.t.min and w.h.max == w.h.min
    alert_step(sensor, st, rule, stuck, not stuck, w.last_ts, w.t.max - w.t.min,
               {count = w.n, temperature_c_mean = w.t.mean, humidity_pct_mean = w.h.mean})
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

-- The earliest moment (in watermark terms) any open window may close, so that a reading which
-- moves the watermark costs one comparison unless a window is actually due.
local function recompute_next_close(st)
  local next_close = INF
  for start, _ in pairs(st.windows) do
    next_close = math.min(next_close, start + cfg.window_ms + cfg.grace_ms)
  end
  st.next_close = next_close
end

local function close_by_watermark(sensor, st)
  for _, start in ipairs(sorted_window_starts(st)) do
    if start + cfg.window_ms + cfg.grace_ms <= st.wm then
      close_window(sensor, st, start, 'watermark')
    end
  end
  recompute_next_close(st)
end

local function advance_watermark(sensor, st, ts)
  if ts > st.wm then
    st.wm = ts
    if ts >= st.next_close then close_by_watermark(sensor, st) end
  end
end

local function settle_marks(sensor, st)
  local kept = {}
  for _, mark in ipairs(st.marks) do
    if before_oldest(parse_id(mark[1])) then
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
  for _, rule in ipairs(silent_rules) do
    local a = st.alerts[rule.name]
    if a == nil or a.s ~= 'firing' then
      due = math.min(due, st.last_arrival + rule.after_ms)
    end
  end
  return due
end

-- Deadlines are rounded up to the second, so a busy sensor's entry changes about once a second
-- rather than on every batch; a sweep may come up to a second later, never earlier.
local function schedule(sensor, st)
  local due = next_due(st)
  if due <= now then due = now + 1000 end  -- blocked for now (e.g. a stuck entry): look again soon
  if due ~= INF then due = math.ceil(due / 1000) * 1000 end
  if due == st.due then return end
  st.due = due
  if due == INF then
    redis.call('ZREM', KEYS[K_DUE], sensor)
  else
    redis.call('ZADD', KEYS[K_DUE], due, sensor)
  end
end

---------------------------------------------------------------------------------------------
-- Rolling stats over (max_ts - rolling, max_ts]. Sums of values shifted by the sensor's first
-- reading are kept incrementally: a reading adds itself, and a batch subtracts what slid out of
-- the window. When the last copy of the current min or max is evicted, the stats are recomputed
-- from the recent set, which also resets rounding drift.

local function parse_member(member)
  local tv, hv = string.match(member, '^[^:]*:[^:]*:([^:]*):([^:]*)$')
  return tonumber(tv), tonumber(hv)
end

-- Extremes carry how many readings in the window hold them, so that evicting one copy of the
-- minimum (common with 0.1-resolution values) does not force a rescan.
local function rolling_add(rs, t, h)
  if rs.t0 == nil then rs.t0, rs.h0 = t, h end
  local dt, dh = t - rs.t0, h - rs.h0
  rs.n, rs.t, rs.tt, rs.h, rs.hh = rs.n + 1, rs.t + dt, rs.tt + dt * dt, rs.h + dh, rs.hh + dh * dh
  if t < rs.tmin then rs.tmin, rs.tmin_n = t, 1 elseif t == rs.tmin then rs.tmin_n = rs.tmin_n + 1 end
  if t > rs.tmax then rs.tmax, rs.tmax_n = t, 1 elseif t == rs.tmax then rs.tmax_n = rs.tmax_n + 1 end
  if h < rs.hmin then rs.hmin, rs.hmin_n = h, 1 elseif h == rs.hmin then rs.hmin_n = rs.hmin_n + 1 end
  if h > rs.hmax then rs.hmax, rs.hmax_n = h, 1 elseif h == rs.hmax then rs.hmax_n = rs.hmax_n + 1 end
end

-- Take one reading out of the sums; true when that removed the last copy of an extreme.
local function rolling_remove(rs, t, h)
  local dt, dh = t - rs.t0, h - rs.h0
  rs.n, rs.t, rs.tt, rs.h, rs.hh = rs.n - 1, rs.t - dt, rs.tt - dt * dt, rs.h - dh, rs.hh - dh * dh
  local lost = false
  if t == rs.tmin then rs.tmin_n = rs.tmin_n - 1; lost = lost or rs.tmin_n <= 0 end
  if t == rs.tmax then rs.tmax_n = rs.tmax_n - 1; lost = lost or rs.tmax_n <= 0 end
  if h == rs.hmin then rs.hmin_n = rs.hmin_n - 1; lost = lost or rs.hmin_n <= 0 end
  if h == rs.hmax then rs.hmax_n = rs.hmax_n - 1; lost = lost or rs.hmax_n <= 0 end
  return lost
end

local function rolling_clear(rs)
  rs.n, rs.t, rs.tt, rs.h, rs.hh = 0, 0, 0, 0, 0
  rs.tmin, rs.tmax, rs.hmin, rs.hmax = INF, -INF, INF, -INF
  rs.tmin_n, rs.tmax_n, rs.hmin_n, rs.hmax_n = 0, 0, 0, 0
end

local function score_bound(x, exclusive)
  if x == -INF then return '-inf' end
  return (exclusive and '(' or '') .. string.format('%d', x)
end

local function rolling_summary(n, sum, sumsq, shift, low, high)
  if n == 0 then return {n = 0} end
  local std = nil
  if n >= 2 then
    local var = (sumsq - sum * sum / n) / (n - 1)
    if low == high or var < 0 then var = 0 end
    std = math.sqrt(var)
  end
  return {n = n, mean = shift + sum / n, std = std, min = low, max = high}
end

local function refresh_rolling(st, recent_key, rolling_key)
  local rs = st.rsum
  local new_cut = st.max_ts - cfg.rolling_ms
  if new_cut > rs.cut then
    local recompute = false
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', recent_key, score_bound(rs.cut, true), new_cut)) do
      local t, h = parse_member(member)
      if rolling_remove(rs, t, h) then recompute = true end
    end
    rs.cut = new_cut
    if recompute or rs.n <= 0 then
      rolling_clear(rs)
      for _, member in ipairs(redis.call('ZRANGEBYSCORE', recent_key, score_bound(new_cut, true), '+inf')) do
        local t, h = parse_member(member)
        rolling_add(rs, t, h)
      end
    end
  end
  -- Members below both horizons are dropped in steps of a rolling window, not on every batch.
  local keep_from = math.min(new_cut, st.wm - cfg.window_ms - cfg.grace_ms)
  if keep_from > -INF and keep_from - (rs.trimmed_to or -INF) >= cfg.rolling_ms then
    redis.call('ZREMRANGEBYSCORE', recent_key, '-inf', score_bound(keep_from, true))
    rs.trimmed_to = keep_from
  end
  local t = rolling_summary(rs.n, rs.t, rs.tt, rs.t0 or 0, rs.tmin, rs.tmax)
  local h = rolling_summary(rs.n, rs.h, rs.hh, rs.h0 or 0, rs.hmin, rs.hmax)
  st.roll = {temperature_c = t, humidity_pct = h}
  redis.call('HSET', rolling_key, 'count', rs.n, 'as_of_ts', string.format('%d', st.max_ts),
    'temperature_c_mean', fmt(t.mean), 'temperature_c_std', fmt(t.std),
    'temperature_c_min', fmt(t.min), 'temperature_c_max', fmt(t.max),
    'humidity_pct_mean', fmt(h.mean), 'humidity_pct_std', fmt(h.std),
    'humidity_pct_min', fmt(h.min), 'humidity_pct_max', fmt(h.max),
    'window_s', cfg.rolling_ms / 1000, 'updated_ms', now)
end

---------------------------------------------------------------------------------------------

-- Readings missing by seq: the count of seq numbers never seen between a sensor's lowest and
-- highest, kept as (max - min + 1) - seen whatever order readings arrive in (workers commit out
-- of order). Whatever stays missing was dropped before Redis or trimmed by MAXLEN before any
-- worker of the group read it.
local function track_seq(st, seq)
  if seq == nil then return end
  if st.max_seq == nil then
    st.min_seq, st.max_seq = seq, seq
  elseif seq > st.max_seq then
    count('missing_seq', seq - st.max_seq - 1)
    st.max_seq = seq
  elseif seq < st.min_seq then
    count('missing_seq', st.min_seq - seq - 1)
    st.min_seq = seq
  else
    count('missing_seq', -1)  -- fills a gap (duplicates were filtered out before)
  end
end

-- A reading's member in its sensor's recent set: identical for a resent copy, so it dedupes.
local function member_at(p)
  return ARGV[p + 1] .. ':' .. ARGV[p + 4] .. ':' .. ARGV[p + 2] .. ':' .. ARGV[p + 3]
end

-- One reading at ARGV position p: id, ts, temperature, humidity, seq (all as sent), and its
-- member in the recent set. known: members already stored or seen earlier in this batch;
-- fresh: members to store.
local function apply_reading(sensor, st, p, member, known, fresh)
  local id, seq = ARGV[p], ARGV[p + 4]
  local ts, t, h = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3])
  local start = ts - (ts % cfg.window_ms)
  local window_end = start + cfg.window_ms
  if window_end + cfg.grace_ms <= st.wm or window_end <= st.closed_through then
    count('late')
    dead_letter(id, 'late: window ' .. string.format('%d', start) .. ' already closed (watermark '
      .. string.format('%d', st.wm) .. ')', cjson.encode({sensor = sensor, ts = ts, temperature_c = t,
                                                           humidity_pct = h, seq = seq}))
    return
  end
  if known[member] then
    count('duplicates')
    return
  end
  known[member] = true
  fresh[#fresh + 1] = ts
  fresh[#fresh + 1] = member
  track_seq(st, tonumber(seq))
  local w = st.windows[start]
  if w == nil then
    w = {n = 0, t = acc_new(), h = acc_new(), first_ts = ts, last_ts = ts}
    st.windows[start] = w
    st.next_close = math.min(st.next_close, window_end + cfg.grace_ms)
  end
  w.n = w.n + 1
  acc_add(w.t, t)
  acc_add(w.h, h)
  if ts < w.first_ts then w.first_ts = ts end
  if ts > w.last_ts then w.last_ts = ts end
  processed = processed + 1
  if ts > st.max_ts then st.max_ts = ts end
  if ts > st.rsum.cut then rolling_add(st.rsum, t, h) end
  if #reading_rules > 0 then alerts_for_reading(sensor, st, ts, t, h) end
  if ts > st.last_ts then st.last_ts, st.last_t, st.last_h = ts, t, h end
  if oldest_ms == INF or before_oldest(parse_id(id)) then
    advance_watermark(sensor, st, ts)
  else
    st.marks[#st.marks + 1] = {id, ts}
  end
end

-- A sensor's readings from one batch, in stream order. Which are already stored is asked in one
-- ZMSCORE and the new ones stored in one ZADD: per-reading calls cost more than the rest.
local function apply_sensor_readings(sensor, st, recent_key, first, n, skipped, skipped_n)
  local positions, members = {}, {}
  for i = 0, n - 1 do
    local p = first + i * 5
    if skipped_n == 0 or not skipped[ARGV[p]] then
      positions[#positions + 1] = p
      members[#members + 1] = member_at(p)
    end
  end
  local known = {}
  if #members > 0 then
    local scores = redis.call('ZMSCORE', recent_key, unpack(members))
    for i, score in ipairs(scores) do
      if score then known[members[i]] = true end
    end
  end
  local fresh = {}
  for i, p in ipairs(positions) do apply_reading(sensor, st, p, members[i], known, fresh) end
  if #positions > 0 then  -- entries come in stream order: the last one arrived last
    local arrival = parse_id(ARGV[positions[#positions]])
    if arrival > st.last_arrival then st.last_arrival = arrival end
  end
  for i = 1, #fresh, 2000 do
    redis.call('ZADD', recent_key, unpack(fresh, i, math.min(i + 1999, #fresh)))
  end
end

local function flush_counters()
  for name, by in pairs(counters) do
    redis.call('HINCRBY', KEYS[K_COUNTERS], name, by)
  end
  if processed > 0 then redis.call('HINCRBY', KEYS[K_COUNTERS], 'processed', processed) end
  if emitted_windows > 0 then redis.call('HINCRBY', KEYS[K_COUNTERS], 'windows_emitted', emitted_windows) end
  if emitted_alerts > 0 then redis.call('HINCRBY', KEYS[K_COUNTERS], 'alerts_emitted', emitted_alerts) end
end

if mode == 'commit' then
  -- ARGV 6, 7: the batch's first and last entry ids; 8: number of sensors S, then per sensor:
  -- name, n, n x (id, ts, t, h, seq); then D, D x (id, reason, fields json) dead letters;
  -- then L, L x id entries trimmed away.
  -- An entry that is no longer pending was committed by a consumer that claimed it meanwhile,
  -- so it is skipped here: first commit wins. One XPENDING over the batch's range finds them,
  -- and one XACK acknowledges the rest (one command, not one per entry, in the AOF).
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

  local still_pending = {}
  for _, entry in ipairs(redis.call('XPENDING', KEYS[K_READINGS], group, ARGV[6], ARGV[7], #all_ids + 100000)) do
    still_pending[entry[1]] = true
  end
  local skipped, skipped_n, to_ack = {}, 0, {}
  for _, id in ipairs(all_ids) do
    if still_pending[id] then
      to_ack[#to_ack + 1] = id
    else
      skipped[id] = true
      skipped_n = skipped_n + 1
    end
  end
  for i = 1, #to_ack, 5000 do
    redis.call('XACK', KEYS[K_READINGS], group, unpack(to_ack, i, math.min(i + 4999, #to_ack)))
  end
  find_oldest_pending()
  for i = 0, dead_n - 1 do
    local p = dead_first + i * 3
    if not skipped[ARGV[p]] then dead_letter(ARGV[p], ARGV[p + 1], ARGV[p + 2]) end
  end
  for i = 0, lost_n - 1 do
    if not skipped[ARGV[pos + i]] then count('lost_to_trim') end
  end

  for b, batch in ipairs(batches) do
    local sensor = batch.sensor
    local recent_key, rolling_key = KEYS[7 + 2 * b - 1], KEYS[7 + 2 * b]
    local st = load_state(sensor)
    apply_sensor_readings(sensor, st, recent_key, batch.first, batch.n, skipped, skipped_n)
    settle_marks(sensor, st)
    if st.max_ts > -INF then
      refresh_rolling(st, recent_key, rolling_key)
      alerts_for_rolling(sensor, st, st.max_ts)
    end
    save_state(sensor, st)
    schedule(sensor, st)
  end
  flush_counters()
  return {'ok', #all_ids - skipped_n, emitted_windows, emitted_alerts, skipped_n, counters.late or 0,
          alert_labels}
end

if mode == 'sweep' then
  -- ARGV 6: max sensors to visit. Visits sensors whose deadline has passed.
  local due = redis.call('ZRANGEBYSCORE', KEYS[K_DUE], '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
  find_oldest_pending()
  local nothing_stuck = oldest_ms >= now - cfg.idle_ms
  for _, sensor in ipairs(due) do
    local st = load_state(sensor)
    settle_marks(sensor, st)
    -- A silent sensor's open windows close on the wall clock, but not while an entry has been
    -- pending longer than the idle allowance: it may hold this sensor's readings.
    if nothing_stuck and now - st.last_arrival >= cfg.idle_ms then
      for _, start in ipairs(sorted_window_starts(st)) do
        if now >= start + cfg.window_ms + cfg.grace_ms + cfg.idle_ms then
          close_window(sensor, st, start, 'idle')
        end
      end
      recompute_next_close(st)
    end
    for _, rule in ipairs(silent_rules) do
      if now - st.last_arrival >= rule.after_ms then
        alert_step(sensor, st, rule, true, false, now, (now - st.last_arrival) / 1000, nil)
      end
    end
    save_state(sensor, st)
    schedule(sensor, st)
  end
  flush_counters()
  return {'ok', #due, emitted_windows, emitted_alerts, 0, 0, alert_labels}
end

return redis.error_reply('unknown mode ' .. tostring(mode))
