-- The aggregator's state machine, run atomically inside Redis.
--
-- mode 'commit': apply one worker batch. Acknowledges each entry; one no longer pending was
--   committed by a consumer that claimed it meanwhile, so it is skipped (first commit wins).
--   A batch read while no entry changed hands (the handover counter, bumped by every claim and
--   every re-read of a consumer's own pending entries, still reads as it did just before the
--   read) cannot have been committed by anyone else: it is acknowledged in bulk.
--   Writes dead letters, merges the readings into per-sensor windows, rolling stats and alert
--   states, and emits closed windows and alert transitions. All or nothing, so a worker killed
--   at any moment either applied a batch completely or not at all, and nothing is applied twice.
-- mode 'sweep': visit sensors whose next wall-clock deadline has passed: settle watermarks,
--   close windows of silent sensors, fire 'silent' alerts.
--
-- The worker sends each sensor's readings already summarised (consumers/payload.py): window
-- partials, shifted sums, extremes, largest rate of change. A sensor in the usual case costs a
-- few merges here, whatever its reading count. A sensor this script cannot vouch for that way
-- (readings out of order or already stored, a window already closed, entries claimed away, an
-- alert rule that may change state) is applied reading by reading through the same merges.
--
-- Watermarks are held back by the group's pending entries: a reading moves its sensor's
-- watermark only once every older stream entry is committed. So a window never closes while an
-- older reading is still in a crashed worker's hands, and results do not depend on how many
-- workers ran or in what order they committed.
--
-- KEYS: 1 readings, 2 dead-letter, 3 aggregates, 4 alerts, 5 sensor-state, 6 counters,
--       7 sensor-due (zset: sensor -> next sweep deadline), 8 handovers (counter), then per
--       sensor of the payload, in order: recent (zset by event time), rolling (hash).
-- ARGV: 1 mode, 2 group, 3 consumer, 4 now_ms, 5 config json,
--       6 commit: the payload (msgpack); sweep: max sensors to visit.

local K_READINGS, K_DEAD, K_AGG, K_ALERTS, K_STATE, K_COUNTERS, K_DUE, K_HANDOVERS = 1, 2, 3, 4, 5, 6, 7, 8
local STATE_VERSION = 2  -- 2: rolling buckets keep sums (states without it are rebuilt on first use)
local mode, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local now, now_text = tonumber(ARGV[4]), ARGV[4]
local cfg = cjson.decode(ARGV[5])
local INF = math.huge
local NO_SEQ = -1
local CHUNK = 2000  -- arguments per command: Lua's unpack has a limit
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

local function int(x)
  return string.format('%d', x)
end

local window_s_text = fmt(cfg.rolling_ms / 1000)

local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function call_in_chunks(command, key, args, step)
  for i = 1, #args, step do
    redis.call(command, key, unpack(args, i, math.min(i + step - 1, #args)))
  end
end

-- Scores of members (false where absent), in chunks.
local function zmscore(key, members)
  local scores = {}
  for i = 1, #members, CHUNK do
    local part = redis.call('ZMSCORE', key, unpack(members, i, math.min(i + CHUNK - 1, #members)))
    for j = 1, #part do scores[i + j - 1] = part[j] end
  end
  return scores
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
                                         'fields', fields_json, 'dead_lettered_ms', now_text})
  count('dead_lettered')
end

---------------------------------------------------------------------------------------------
-- Windows are arrays, so that a partial from the worker and the state share one layout:
-- 1 start, 2 n, then per metric (temperature at 3, humidity at 7) mean, M2, min, max; 11 first
-- ts, 12 last ts. Merging is Chan's parallel update, exact in any order; one reading is a
-- partial of one, which makes it Welford's update.

local W_N, W_FIRST, W_LAST = 2, 11, 12
local T_AT, H_AT = 3, 7

local function merge_window(w, p)
  local na, nb = w[W_N], p[W_N]
  local n = na + nb
  for at = T_AT, H_AT, H_AT - T_AT do
    local delta = p[at] - w[at]
    w[at] = w[at] + delta * nb / n
    w[at + 1] = w[at + 1] + p[at + 1] + delta * delta * na * nb / n
    if p[at + 2] < w[at + 2] then w[at + 2] = p[at + 2] end
    if p[at + 3] > w[at + 3] then w[at + 3] = p[at + 3] end
  end
  w[W_N] = n
  if p[W_FIRST] < w[W_FIRST] then w[W_FIRST] = p[W_FIRST] end
  if p[W_LAST] > w[W_LAST] then w[W_LAST] = p[W_LAST] end
end

local function window_std(w, at)
  if w[W_N] < 2 then return nil end
  return math.sqrt(math.max(w[at + 1], 0) / (w[W_N] - 1))
end

---------------------------------------------------------------------------------------------
-- Rolling stats over (max_ts - rolling, max_ts] live in buckets a tenth of the window wide, kept
-- in the state as [start, per metric (temperature at 2, humidity at 6) min, how many readings
-- hold it, max, how many hold it, then n, and sums and sums of squares of both metrics shifted
-- by the window's base values t0 and h0]. Every bucket describes exactly its readings still in
-- the window. When the window's edge moves, buckets wholly behind it are dropped without
-- looking at their readings; only the bucket the edge cuts through is touched: what left it is
-- subtracted, or it is rebuilt from its remaining readings when that lost the last holder of an
-- extreme or the edge entered it just now. The totals are then summed over the buckets, so
-- rounding from subtraction never outlives a bucket. The worker sends readings already
-- summarised per bucket (consumers/payload.py), so adding readings also costs per bucket.

local B_N, B_T, B_TT, B_H, B_HH = 10, 11, 12, 13, 14

local function extremes_clear(rs)
  rs.tmin, rs.tmax, rs.hmin, rs.hmax = INF, -INF, INF, -INF
end

local function extremes_add(rs, b)
  if b[2] < rs.tmin then rs.tmin = b[2] end
  if b[4] > rs.tmax then rs.tmax = b[4] end
  if b[6] < rs.hmin then rs.hmin = b[6] end
  if b[8] > rs.hmax then rs.hmax = b[8] end
end

local function rolling_clear(rs)
  rs.n, rs.t, rs.tt, rs.h, rs.hh, rs.t0, rs.h0 = 0, 0, 0, 0, 0, nil, nil
  extremes_clear(rs)
end

-- Sums of x - base become sums of x - base0, base0 = base - delta.
local function shift(b, sum_at, n, delta)
  if delta ~= 0 then
    b[sum_at + 1] = b[sum_at + 1] + 2 * delta * b[sum_at] + n * delta * delta
    b[sum_at] = b[sum_at] + n * delta
  end
end

local function merge_extreme(b, p, at, lower)
  local v = p[at]
  if (lower and v < b[at]) or (not lower and v > b[at]) then
    b[at], b[at + 1] = v, p[at + 1]
  elseif v == b[at] then
    b[at + 1] = b[at + 1] + p[at + 1]
  end
end

-- A bucket partial (from the worker, or one reading's) whose sums are shifted by (t_base, h_base).
local function rolling_add_bucket(st, p, t_base, h_base)
  local rs = st.rs
  if rs.t0 == nil then rs.t0, rs.h0 = t_base, h_base end
  local n = p[B_N]
  shift(p, B_T, n, t_base - rs.t0)
  shift(p, B_H, n, h_base - rs.h0)
  rs.n, rs.t, rs.tt, rs.h, rs.hh = rs.n + n, rs.t + p[B_T], rs.tt + p[B_TT], rs.h + p[B_H], rs.hh + p[B_HH]
  extremes_add(rs, p)
  local b = st.rb[p[1]]
  if b == nil then
    st.rb[p[1]] = p
  else
    merge_extreme(b, p, 2, true)
    merge_extreme(b, p, 4, false)
    merge_extreme(b, p, 6, true)
    merge_extreme(b, p, 8, false)
    for at = B_N, B_HH do b[at] = b[at] + p[at] end
  end
end

local function rolling_add_reading(st, ts, t, h)
  rolling_add_bucket(st, {ts - ts % cfg.bucket_ms, t, 1, t, 1, h, 1, h, 1, 1, 0, 0, 0, 0}, t, h)
end

-- A member of a sensor's recent set: 'ts:seq:temperature:humidity' (consumers/payload.py).
-- Anchored patterns, so that a match is one pass over the member.
local function parse_member(member)
  local ts, seq, tv, hv = string.match(member, '^([^:]*):([^:]*):([^:]*):([^:]*)$')
  return tonumber(ts), tonumber(seq) or NO_SEQ, tonumber(tv), tonumber(hv)
end

local function member_values(member)
  local tv, hv = string.match(member, '^[^:]*:[^:]*:([^:]*):([^:]*)$')
  return tonumber(tv), tonumber(hv)
end

-- Bucket `start` anew from its readings after the window's edge.
local function rebuild_bucket(st, recent_key, start)
  local rs = st.rs
  local members = redis.call('ZRANGEBYSCORE', recent_key, '(' .. int(math.max(rs.cut, start - 1)),
                             '(' .. int(start + cfg.bucket_ms))
  if #members == 0 then
    st.rb[start] = nil
    return
  end
  local t0, h0 = rs.t0, rs.h0
  local tmin, tmax, hmin, hmax = INF, -INF, INF, -INF
  local tmin_n, tmax_n, hmin_n, hmax_n = 0, 0, 0, 0
  local t_sum, t_sumsq, h_sum, h_sumsq = 0, 0, 0, 0
  for i = 1, #members do
    local t, h = member_values(members[i])
    local dt, dh = t - t0, h - h0
    t_sum, t_sumsq, h_sum, h_sumsq = t_sum + dt, t_sumsq + dt * dt, h_sum + dh, h_sumsq + dh * dh
    if t < tmin then tmin, tmin_n = t, 1 elseif t == tmin then tmin_n = tmin_n + 1 end
    if t > tmax then tmax, tmax_n = t, 1 elseif t == tmax then tmax_n = tmax_n + 1 end
    if h < hmin then hmin, hmin_n = h, 1 elseif h == hmin then hmin_n = hmin_n + 1 end
    if h > hmax then hmax, hmax_n = h, 1 elseif h == hmax then hmax_n = hmax_n + 1 end
  end
  st.rb[start] = {start, tmin, tmin_n, tmax, tmax_n, hmin, hmin_n, hmax, hmax_n,
                  #members, t_sum, t_sumsq, h_sum, h_sumsq}
end

-- The edge moved from `old_cut` within bucket `b`: subtract the readings that left it.
local function bucket_remove(st, recent_key, b, old_cut)
  local members = redis.call('ZRANGEBYSCORE', recent_key, '(' .. int(old_cut), int(st.rs.cut))
  if #members == 0 then return end
  local t0, h0 = st.rs.t0, st.rs.h0
  for i = 1, #members do
    local t, h = member_values(members[i])
    local dt, dh = t - t0, h - h0
    b[B_T], b[B_TT], b[B_H], b[B_HH] = b[B_T] - dt, b[B_TT] - dt * dt, b[B_H] - dh, b[B_HH] - dh * dh
    if t == b[2] then b[3] = b[3] - 1 end
    if t == b[4] then b[5] = b[5] - 1 end
    if h == b[6] then b[7] = b[7] - 1 end
    if h == b[8] then b[9] = b[9] - 1 end
  end
  b[B_N] = b[B_N] - #members
  if b[3] <= 0 or b[5] <= 0 or b[7] <= 0 or b[9] <= 0 then rebuild_bucket(st, recent_key, b[1]) end
end

-- Move the window's edge to `new_cut`.
local function rolling_evict(st, recent_key, new_cut)
  local rs = st.rs
  local old_cut, edge = rs.cut, new_cut - new_cut % cfg.bucket_ms
  rs.cut = new_cut
  for start, _ in pairs(st.rb) do
    if start < edge then st.rb[start] = nil end
  end
  local b = st.rb[edge]
  if b ~= nil then
    if old_cut >= edge then  -- the edge moved within this bucket
      bucket_remove(st, recent_key, b, old_cut)
    else
      rebuild_bucket(st, recent_key, edge)
    end
  end
  local n, t, tt, h, hh = 0, 0, 0, 0, 0
  extremes_clear(rs)
  for _, bucket in pairs(st.rb) do
    n, t, tt, h, hh = n + bucket[B_N], t + bucket[B_T], tt + bucket[B_TT], h + bucket[B_H], hh + bucket[B_HH]
    extremes_add(rs, bucket)
  end
  if n == 0 then
    rolling_clear(rs)
  else
    rs.n, rs.t, rs.tt, rs.h, rs.hh = n, t, tt, h, hh
  end
end

-- State from before buckets kept sums: rebuilt from the recent set.
local function rebuild_rolling(st, recent_key)
  st.rs = {cut = st.rs.cut, trimmed_to = st.rs.trimmed_to}
  st.rb = {}
  rolling_clear(st.rs)
  local lower = '-inf'
  if st.rs.cut > -INF then lower = '(' .. int(st.rs.cut) end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', recent_key, lower, '+inf')) do
    local ts, _, t, h = parse_member(member)
    rolling_add_reading(st, ts, t, h)
  end
  st.v = STATE_VERSION
end

local function metric_summary(n, sum, sumsq, shift, low, high)
  if n == 0 then return {count = 0} end
  local std = nil
  if n >= 2 then
    local var = (sumsq - sum * sum / n) / (n - 1)
    if low == high or var < 0 then var = 0 end
    std = math.sqrt(var)
  end
  return {count = n, mean = shift + sum / n, std = std, min = low, max = high}
end

local function rolling_summary(rs)
  return {temperature_c = metric_summary(rs.n, rs.t, rs.tt, rs.t0 or 0, rs.tmin, rs.tmax),
          humidity_pct = metric_summary(rs.n, rs.h, rs.hh, rs.h0 or 0, rs.hmin, rs.hmax)}
end

---------------------------------------------------------------------------------------------
-- Per-sensor state, one msgpack value in the sensor-state hash. The rolling summary is derived
-- on load rather than stored.

local function load_state(sensor)
  local packed = redis.call('HGET', KEYS[K_STATE], sensor)
  local st
  if packed then
    st = cmsgpack.unpack(packed)
  else
    st = {wm = -INF, closed_through = -INF, max_ts = -INF, last_arrival = 0, last_ts = -INF, next_close = INF,
          windows = {}, marks = {}, alerts = {}, rs = {cut = -INF}, rb = {}, v = STATE_VERSION}
    rolling_clear(st.rs)
  end
  st.roll = rolling_summary(st.rs)
  return st
end

local function save_state(sensor, st)
  st.roll = nil
  redis.call('HSET', KEYS[K_STATE], sensor, cmsgpack.pack(st))
end

---------------------------------------------------------------------------------------------
-- Alerts: one firing and one resolved event per episode, because the state lives here. A rule
-- with no episode under way keeps no state at all.

-- Rules sorted once by when they are evaluated: per reading, per batch (rolling), per closed window.
local reading_rules, rolling_rules, window_rules, silent_rules = {}, {}, {}, {}
for _, rule in ipairs(cfg.rules) do
  local short = (rule.metric == 'humidity_pct') and 'h' or 't'
  rule.min_key, rule.max_key, rule.rate_key = short .. '_min', short .. '_max', short .. '_rate'
  rule.first_key = 'first_' .. short
  if rule.kind == 'threshold' and rule.source ~= 'reading' then
    rolling_rules[#rolling_rules + 1] = rule
  elseif rule.kind == 'stuck' then
    window_rules[#window_rules + 1] = rule
  else
    reading_rules[#reading_rules + 1] = rule
  end
  if rule.kind == 'silent' then silent_rules[#silent_rules + 1] = rule end
end

-- context: a metric name (the event carries that metric's rolling stats) or a table of stats.
local function emit_alert(sensor, rule, st, state, ts, value, sensor_state, context)
  local stats = context
  if type(context) == 'string' then stats = sensor_state.roll[context] end
  local fields = {'alert_id', st.id, 'rule', rule.name, 'kind', rule.kind, 'sensor', sensor,
                  'severity', rule.severity, 'state', state, 'value', fmt(value),
                  'threshold', fmt(rule.threshold), 'ts', ts, 'emitted_ms', now_text}
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
      st.s = 'ok'
    end
  elseif breach then
    if st.s ~= 'pending' then st.s, st.since = 'pending', ts end
    if ts - st.since >= rule.for_ms then
      st.s = 'firing'
      st.id = rule.name .. ':' .. sensor .. ':' .. int(st.since)
      emit_alert(sensor, rule, st, 'firing', ts, value, sensor_state, context)
    end
  else
    st.s = 'ok'
  end
  if st.s == 'ok' then sensor_state.alerts[rule.name] = nil end
end

local function compare(rule, value)
  -- returns breach, clear for a threshold with hysteresis
  if rule.above ~= nil then
    return value > rule.above, value <= rule.above - rule.hysteresis
  end
  return value < rule.below, value >= rule.below + rule.hysteresis
end

-- Rules that look at a single reading, evaluated in stream order. Each becomes a closure over its
-- own parameters, so the per-reading loop does no dispatch on kind.
local function reading_check(rule)
  local name, metric, threshold = rule.name, rule.metric, rule.threshold
  local humidity = metric == 'humidity_pct'
  if rule.kind == 'threshold' then
    return function(sensor, st, ts, t, h)
      local value = humidity and h or t
      local breach, clear = compare(rule, value)
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
      if r.count >= min_count and r.std ~= nil and r.std > 0 then
        local value = humidity and h or t
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

-- Whether any per-reading rule could change state on this sensor's readings `s`: only then are
-- they visited one by one. No episode under way, and no reading beyond a threshold, means none.
local function reading_rules_may_act(st, s)
  for _, rule in ipairs(reading_rules) do
    if st.alerts[rule.name] ~= nil then return true end
    if rule.kind == 'threshold' then
      if compare(rule, rule.above ~= nil and s[rule.max_key] or s[rule.min_key]) then return true end
    elseif rule.kind == 'rate_of_change' then
      if s[rule.rate_key] > rule.threshold then return true end
      if st.last_ts > -INF then
        local first_ts = tonumber(s.by_time[1])
        if first_ts <= st.last_ts then return true end
        local previous = st.last_t
        if rule.metric == 'humidity_pct' then previous = st.last_h end
        if math.abs(s[rule.first_key] - previous) / (first_ts - st.last_ts) * 60000 > rule.threshold then
          return true
        end
      end
    elseif rule.kind == 'zscore' then
      local r = st.roll[rule.metric]
      if r.count >= rule.min_count and r.std ~= nil and r.std > 0 and
         math.max(s[rule.max_key] - r.mean, r.mean - s[rule.min_key]) / r.std > rule.threshold then
        return true
      end
    end
  end
  return false
end

-- Rules on the rolling aggregate, evaluated once the batch's rolling stats are known.
local function alerts_for_rolling(sensor, st, ts)
  for _, rule in ipairs(rolling_rules) do
    local r = st.roll[rule.metric]
    if r.count > 0 and r[rule.source] ~= nil then
      local value = r[rule.source]
      local breach, clear = compare(rule, value)
      alert_step(sensor, st, rule, breach, clear, ts, value, rule.metric)
    end
  end
end

local function alerts_for_window(sensor, st, w)
  for _, rule in ipairs(window_rules) do
    local stuck = w[W_N] >= rule.min_count and w[T_AT + 3] == w[T_AT + 2] and w[H_AT + 3] == w[H_AT + 2]
    alert_step(sensor, st, rule, stuck, not stuck, w[W_LAST], w[T_AT + 3] - w[T_AT + 2],
               {count = w[W_N], temperature_c_mean = w[T_AT], humidity_pct_mean = w[H_AT]})
  end
end

---------------------------------------------------------------------------------------------
-- Windows

local function close_window(sensor, st, start, closed_by)
  local w = st.windows[start]
  local window_end = start + cfg.window_ms
  xadd(KEYS[K_AGG], cfg.output_maxlen, {
    'sensor', sensor, 'window_start', int(start), 'window_end', int(window_end), 'count', w[W_N],
    'temperature_c_mean', fmt(w[T_AT]), 'temperature_c_min', fmt(w[T_AT + 2]),
    'temperature_c_max', fmt(w[T_AT + 3]), 'temperature_c_std', fmt(window_std(w, T_AT)),
    'humidity_pct_mean', fmt(w[H_AT]), 'humidity_pct_min', fmt(w[H_AT + 2]),
    'humidity_pct_max', fmt(w[H_AT + 3]), 'humidity_pct_std', fmt(window_std(w, H_AT)),
    'first_ts', int(w[W_FIRST]), 'last_ts', int(w[W_LAST]), 'closed_by', closed_by, 'emitted_ms', now_text})
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

local function window_closed(st, start)
  local window_end = start + cfg.window_ms
  return window_end + cfg.grace_ms <= st.wm or window_end <= st.closed_through
end

local function add_to_window(st, p)
  local w = st.windows[p[1]]
  if w == nil then
    st.windows[p[1]] = p
    st.next_close = math.min(st.next_close, p[1] + cfg.window_ms + cfg.grace_ms)
  else
    merge_window(w, p)
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

-- Deadlines are rounded up to the second; a sweep may come up to a second later, never earlier.
-- A deadline that moved later is written only once the stored one has passed (the sweep's visit
-- then writes it): a sweep may come early and find nothing to do, and an active sensor, whose
-- deadline moves with every reading, costs one visit per silent-alert or idle period instead of a
-- ZADD on every commit.
local function schedule(sensor, st)
  local due = next_due(st)
  if due <= now then due = now + 1000 end  -- blocked for now (e.g. a stuck entry): look again soon
  if due ~= INF then due = math.ceil(due / 1000) * 1000 end
  local stored = st.due or -INF
  if due == stored or (due > stored and stored > now) then return end
  st.due = due
  if due == INF then
    redis.call('ZREM', KEYS[K_DUE], sensor)
  else
    redis.call('ZADD', KEYS[K_DUE], due, sensor)
  end
end

---------------------------------------------------------------------------------------------
-- Readings missing by seq: the count of seq numbers never seen between a sensor's lowest and
-- highest, kept as (max - min + 1) - seen whatever order readings arrive in (workers commit out
-- of order). Whatever stays missing was dropped before Redis or trimmed by MAXLEN before any
-- worker of the group read it. `n` new seqs between `low` and `high` (duplicates filtered out).
local function track_seq(st, n, low, high)
  if n == 0 then return end
  local before = 0
  if st.max_seq ~= nil then
    before = st.max_seq - st.min_seq + 1
    low, high = math.min(low, st.min_seq), math.max(high, st.max_seq)
  end
  st.min_seq, st.max_seq = low, high
  count('missing_seq', (high - low + 1) - before - n)
end

local function refresh_rolling(st, keys)
  local recent_key, rolling_key = keys[1], keys[2]
  local rs = st.rs
  local new_cut = st.max_ts - cfg.rolling_ms
  if new_cut > rs.cut then rolling_evict(st, recent_key, new_cut) end
  -- Members below both horizons are kept for duplicate checks while their window may be open,
  -- and dropped in steps of a rolling window, not on every batch.
  local keep_from = math.min(new_cut, st.wm - cfg.window_ms - cfg.grace_ms)
  if keep_from > -INF and keep_from - (rs.trimmed_to or -INF) >= cfg.rolling_ms then
    redis.call('ZREMRANGEBYSCORE', recent_key, '-inf', '(' .. int(keep_from))
    rs.trimmed_to = keep_from
  end
  st.roll = rolling_summary(rs)
  local t, h = st.roll.temperature_c, st.roll.humidity_pct
  redis.call('HSET', rolling_key, 'count', rs.n, 'as_of_ts', int(st.max_ts),
    'temperature_c_mean', fmt(t.mean), 'temperature_c_std', fmt(t.std),
    'temperature_c_min', fmt(t.min), 'temperature_c_max', fmt(t.max),
    'humidity_pct_mean', fmt(h.mean), 'humidity_pct_std', fmt(h.std),
    'humidity_pct_min', fmt(h.min), 'humidity_pct_max', fmt(h.max),
    'window_s', window_s_text, 'updated_ms', now_text)
end

---------------------------------------------------------------------------------------------
-- Applying one sensor's readings `s` (a sensor of the payload).

-- The short way: merge the worker's summaries. `held` says the readings wait behind an older
-- pending entry, so they leave one mark instead of moving the watermark.
local function apply_summary(sensor, st, s, keys, held)
  for _, p in ipairs(s.windows) do add_to_window(st, p) end
  local n = #s.ids
  track_seq(st, s.seq_n, s.seq_min, s.seq_max)
  processed = processed + n
  for _, p in ipairs(s.buckets) do rolling_add_bucket(st, p, s.t_base, s.h_base) end
  if s.ts_max > st.max_ts then st.max_ts = s.ts_max end
  if s.ts_max > st.last_ts then st.last_ts, st.last_t, st.last_h = s.ts_max, s.last_t, s.last_h end
  if held then
    st.marks[#st.marks + 1] = {s.ids[n], s.ts_max}
  else
    advance_watermark(sensor, st, s.ts_max)
  end
  call_in_chunks('ZADD', keys[1], s.by_time, CHUNK)
end

-- The long way, in stream order: late ones dead-lettered, duplicates and entries claimed away
-- skipped, each reading's own alert checks and watermark step.
local function apply_readings(sensor, st, s, keys, stored, skipped)
  local known = {}
  for i = 1, #s.ids do
    if stored[i] then known[s.by_time[2 * i]] = true end
  end
  local by_time = {}
  local rs = st.rs
  for i = 1, #s.ids do
    local id, member = s.ids[i], s.by_time[2 * i]
    local ts, seq, t, h = parse_member(member)
    local start = ts - (ts % cfg.window_ms)
    if skipped[id] then
      -- committed by the consumer that claimed it
    elseif window_closed(st, start) then
      count('late')
      dead_letter(id, 'late: window ' .. int(start) .. ' already closed (watermark ' .. int(st.wm) .. ')',
                  cjson.encode({sensor = sensor, ts = ts, temperature_c = t, humidity_pct = h,
                                seq = (seq ~= NO_SEQ) and seq or nil}))
    elseif known[member] then
      count('duplicates')
    else
      known[member] = true
      local stored_n = #by_time
      by_time[stored_n + 1], by_time[stored_n + 2] = ts, member
      if ts > rs.cut then rolling_add_reading(st, ts, t, h) end
      if seq ~= NO_SEQ then track_seq(st, 1, seq, seq) end
      add_to_window(st, {start, 1, t, 0, t, t, h, 0, h, h, ts, ts})
      processed = processed + 1
      if ts > st.max_ts then st.max_ts = ts end
      for _, check in ipairs(reading_checks) do check(sensor, st, ts, t, h) end
      if ts > st.last_ts then st.last_ts, st.last_t, st.last_h = ts, t, h end
      if oldest_ms == INF or before_oldest(parse_id(id)) then
        advance_watermark(sensor, st, ts)
      else
        st.marks[#st.marks + 1] = {id, ts}
      end
    end
  end
  call_in_chunks('ZADD', keys[1], by_time, CHUNK)
end

local function apply_sensor(s, keys, skipped, any_skipped)
  local sensor = s.name
  local st = load_state(sensor)
  if st.v ~= STATE_VERSION then
    rebuild_rolling(st, keys[1])
    st.roll = rolling_summary(st.rs)
  end
  -- Seqs only grow, so readings in order above every seq applied so far cannot be stored already.
  local stored, any_stored = {}, false
  if not (s.ordered and s.seq_n == #s.ids and st.max_seq ~= nil and s.seq_min > st.max_seq) then
    local members = {}
    for i = 1, #s.ids do members[i] = s.by_time[2 * i] end
    stored = zmscore(keys[1], members)
    for i = 1, #s.ids do any_stored = any_stored or stored[i] end
  end
  local simple = s.ordered and not any_stored and s.ts_min > st.rs.cut and not reading_rules_may_act(st, s)
  if simple and any_skipped then
    for i = 1, #s.ids do
      if skipped[s.ids[i]] then simple = false end
    end
  end
  for _, p in ipairs(s.windows) do
    if not simple then break end
    if window_closed(st, p[1]) then simple = false end
  end
  local first_before = before_oldest(parse_id(s.ids[1]))
  local last_before = before_oldest(parse_id(s.ids[#s.ids]))
  if simple and first_before == last_before then
    apply_summary(sensor, st, s, keys, not last_before)
  else
    apply_readings(sensor, st, s, keys, stored, skipped)
  end
  if s.arrival > st.last_arrival then st.last_arrival = s.arrival end
  settle_marks(sensor, st)
  if st.max_ts > -INF then
    refresh_rolling(st, keys)
    alerts_for_rolling(sensor, st, st.max_ts)
  end
  schedule(sensor, st)  -- before saving: the state remembers the deadline written
  save_state(sensor, st)
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
  -- A commit allocates megabytes that all die with it; collecting while it runs would keep
  -- re-marking the payload. Collection resumes after the commit (Redis's own periodic GC step
  -- re-arms it too, should the script fail before that).
  collectgarbage('stop')
  local batch = cmsgpack.unpack(ARGV[6])
  -- Every entry of the batch is a reading of some sensor, a dead letter or a lost one.
  local ids = {}
  for _, s in ipairs(batch.sensors) do
    for _, id in ipairs(s.ids) do ids[#ids + 1] = id end
  end
  for _, dead in ipairs(batch.dead) do ids[#ids + 1] = dead[1] end
  for _, id in ipairs(batch.lost) do ids[#ids + 1] = id end
  local entries, skipped, skipped_n = #ids, {}, 0
  if batch.epoch ~= nil and tonumber(redis.call('GET', KEYS[K_HANDOVERS]) or 0) == batch.epoch then
    -- Nothing changed hands since the read, so every entry is still this consumer's: ack in bulk.
    local acked = 0
    for i = 1, #ids, CHUNK do
      acked = acked + redis.call('XACK', KEYS[K_READINGS], group, unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    end
    -- Only an XACK or XAUTOCLAIM from outside the project's code can do this; say so rather than guess.
    if acked < entries then count('acked_outside_commit', entries - acked) end
  else
    -- XACK one id at a time tells which entries were still pending: bulk XACK could not.
    for _, id in ipairs(ids) do
      if redis.call('XACK', KEYS[K_READINGS], group, id) == 0 then
        skipped[id] = true
        skipped_n = skipped_n + 1
      end
    end
  end
  find_oldest_pending()
  for _, dead in ipairs(batch.dead) do
    if not skipped[dead[1]] then dead_letter(dead[1], dead[2], dead[3]) end
  end
  for _, id in ipairs(batch.lost) do
    if not skipped[id] then count('lost_to_trim') end
  end
  for b, s in ipairs(batch.sensors) do
    apply_sensor(s, {KEYS[7 + 2 * b], KEYS[8 + 2 * b]}, skipped, skipped_n > 0)
  end
  flush_counters()
  collectgarbage('restart')
  return {'ok', entries - skipped_n, emitted_windows, emitted_alerts, skipped_n, counters.late or 0,
          alert_labels}
end

if mode == 'sweep' then
  -- Visits sensors whose deadline has passed.
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
    schedule(sensor, st)
    save_state(sensor, st)
  end
  flush_counters()
  return {'ok', #due, emitted_windows, emitted_alerts, 0, 0, alert_labels}
end

return redis.error_reply('unknown mode ' .. tostring(mode))
