"""Alert rules applied to one sensor's readings in event order, one episode at a time.

A reading that does not carry a rule's metric is skipped by that rule: it neither fires nor
resolves it, and a rule's memory (rate anchors, the stuck run) moves only with readings of its
metric. Silence is about readings, of either metric.

Every decision is a function of the readings: rules see each reading with the rolling statistics
as of that reading, silence is measured on the partition's event clock, and an episode's id is
made of its rule, sensor and the event time its breach began. The same readings therefore give
the same events whatever the batching, the number of workers or a crash in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from consumers import flapping
from consumers.rules import METRICS, AlertRule
from consumers.sensor_state import AlertEpisode, SensorState
from consumers.summary import MetricStats, Summary
from telemetry.records import AlertEvent

Emit = Callable[[AlertEvent], None]


def stats_fields(stats: MetricStats) -> dict[str, float | int | None]:
    return {"count": stats.count, "mean": stats.mean, "std": stats.std, "min": stats.min, "max": stats.max}


# A per-reading rule, compiled once: (emit, sensor, state, ts, temperature, humidity, rolling stats
# before this reading or None). Only `stuck` is given a reading without its metric (None).
ReadingCheck = Callable[[Emit, str, SensorState, int, "float | None", "float | None", "Summary | None"], None]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Rules sorted by when they are evaluated; per-reading ones compiled into closures, so the
    per-reading loop does no dispatch on kind (it runs for every reading). A reading with one
    metric is given only the rules on that metric (and `stuck`, which looks at both), chosen once
    here, so the rules themselves never test for a missing metric."""

    per_reading: tuple[AlertRule, ...]  # threshold on the reading, rate_of_change, zscore, stuck
    on_rolling: tuple[AlertRule, ...]  # threshold on a rolling mean | min | max | std
    silent: tuple[AlertRule, ...]
    reading_checks: tuple[ReadingCheck, ...] = ()
    needs_rolling_before: bool = False  # a zscore rule compares each reading with the statistics before it
    # the metric a one-metric reading carries -> its per-reading checks, its rolling rules
    one_metric_checks: dict[str, tuple[ReadingCheck, ...]] = field(default_factory=dict)
    one_metric_rolling: dict[str, tuple[AlertRule, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: tuple[AlertRule, ...]) -> RuleSet:
        per_reading = tuple(r for r in rules if r.kind in ("rate_of_change", "zscore", "stuck")
                            or (r.kind == "threshold" and r.source == "reading"))
        on_rolling = tuple(r for r in rules if r.kind == "threshold" and r.source != "reading")
        checks = tuple(_reading_check(rule) for rule in per_reading)
        return cls(
            per_reading, on_rolling, tuple(r for r in rules if r.kind == "silent"), checks,
            any(rule.kind == "zscore" for rule in per_reading),
            {metric: tuple(check for rule, check in zip(per_reading, checks)
                           if rule.kind == "stuck" or rule.metric == metric) for metric in METRICS},
            {metric: tuple(rule for rule in on_rolling if rule.metric == metric) for metric in METRICS})


def _reading_check(rule: AlertRule) -> ReadingCheck:
    name, temperature, threshold = rule.name, rule.metric == "temperature_c", rule.threshold
    flap = flap_key(name)  # a rule under way, or with changes in its flap history, is evaluated at every reading
    if rule.kind == "threshold":
        def check(emit, sensor, state, ts_ms, t, h, before):
            value = t if temperature else h
            breach, clear = _compare(rule, value)
            if breach or name in state.alerts or flap in state.rule_memory:
                step(emit, sensor, state, rule, breach, clear, ts_ms, value)
    elif rule.kind == "rate_of_change":
        span = rule.over_ms

        def check(emit, sensor, state, ts_ms, t, h, before):
            reference = _rate_reference(state, name, span, ts_ms, t, h)
            if reference is not None:
                value, last = (t, reference[1]) if temperature else (h, reference[2])
                per_minute = round(abs(value - last) / (ts_ms - reference[0]) * 60_000, 6)
                over = per_minute > threshold
                if over or name in state.alerts or flap in state.rule_memory:
                    step(emit, sensor, state, rule, over, not over, ts_ms, per_minute)
    elif rule.kind == "stuck":
        span, min_count = rule.over_ms, rule.min_count

        def check(emit, sensor, state, ts_ms, t, h, before):
            run = state.rule_memory.get(name)  # [since, count, temperature, humidity] of the unchanged run
            # a metric the reading lacks is taken as unchanged
            if run is None or (run[2] != t and t is not None) or (run[3] != h and h is not None):
                if run is not None and (t is None or h is None):
                    t, h = run[2] if t is None else t, run[3] if h is None else h
                state.rule_memory[name] = [ts_ms, 1, t, h]
                if name in state.alerts or flap in state.rule_memory:
                    step(emit, sensor, state, rule, False, True, ts_ms, 0.0 if run is None else (ts_ms - run[0]) / 1000)
                return
            run[1] += 1
            stuck = run[1] >= min_count and ts_ms - run[0] >= span
            if stuck or name in state.alerts or flap in state.rule_memory:
                step(emit, sensor, state, rule, stuck, not stuck, ts_ms, (ts_ms - run[0]) / 1000)
    else:  # zscore: the reading against the rolling statistics of the readings before it
        min_count, clear_below = rule.min_count, rule.threshold - rule.hysteresis
        def check(emit, sensor, state, ts_ms, t, h, before):
            if before is None or before.n < min_count or (
                    (before.t_missing if temperature else before.h_missing) and before.count(rule.metric) < min_count):
                return
            std = before.std(rule.metric)
            if not std:
                return
            z = abs((t - before.t_mean) if temperature else (h - before.h_mean)) / std
            if z > threshold or name in state.alerts or flap in state.rule_memory:
                step(emit, sensor, state, rule, z > threshold, z <= clear_below, ts_ms, z,
                     stats_fields(before.metric(rule.metric)))
    return check


def _rate_reference(state: SensorState, rule: str, span_ms: int, ts_ms: int, t: float, h: float
                    ) -> list | None:
    """The reading a change is measured from: at least `span_ms` and less than twice that before
    this one. Two anchors per rule, a span apart at least, keep it bounded at any sample rate."""
    anchors = state.rule_memory.get(rule)
    reading = [ts_ms, t, h]
    if anchors is None:
        state.rule_memory[rule] = [None, reading]
        return None
    older, newer = anchors
    if ts_ms - newer[0] >= span_ms:
        anchors[0], anchors[1] = newer, reading
        return newer
    if older is None or ts_ms <= older[0]:
        return None
    return older


def _compare(rule: AlertRule, value: float) -> tuple[bool, bool]:
    """(breach, clear): clear means back beyond the hysteresis band."""
    if rule.above is not None:
        return value > rule.above, value <= rule.above - rule.hysteresis
    return value < rule.below, value >= rule.below + rule.hysteresis  # type: ignore[operator]


def _advance(state: SensorState, rule: AlertRule, breach: bool, clear: bool, ts_ms: int
             ) -> tuple[AlertEpisode | None, str | None]:
    """One observation moves the rule's episode: ok -> pending -> firing (after `for`) -> resolved.
    Returns the episode and the change it made (`firing`, `resolved` or None)."""
    episode = state.alerts.get(rule.name)
    if episode is None:
        if not breach:
            return None, None
        episode = state.alerts[rule.name] = AlertEpisode("pending", ts_ms)
    if episode.state == "firing":
        if clear:
            del state.alerts[rule.name]
            return episode, "resolved"
        return episode, None
    if not breach:
        del state.alerts[rule.name]
        return None, None
    if ts_ms - episode.since_ms >= rule.for_ms:
        episode.state = "firing"
        return episode, "firing"
    return episode, None


def flap_key(rule: str) -> str:
    """The rule's flap history in the sensor's rule memory; rule names hold no ':', so it never
    collides with a rule's own memory."""
    return f"flap:{rule}"


def step(emit: Emit, sensor: str, state: SensorState, rule: AlertRule, breach: bool, clear: bool, ts_ms: int,
         value: float, stats: dict | None = None) -> None:
    """One evaluation of one rule: the episode moves, and its change is emitted unless the rule is
    flapping."""
    before = state.alerts.get(rule.name)
    notified_since = before.since_ms if before is not None and before.state == "firing" else None
    episode, change = _advance(state, rule, breach, clear, ts_ms)
    if rule.flapping is None:
        if change is not None:
            emit(_event(rule, sensor, episode, change, ts_ms, value, stats))
        return
    key = flap_key(rule.name)
    memory = state.rule_memory.get(key)
    if memory is None:
        if change is None:
            return  # every recent state alike: nothing to record
        # [history, flapping since (None: not flapping), the episode notified as firing when it began]
        memory = [flapping.FULL if notified_since is not None else 0, None, None]
    now = state.alerts.get(rule.name)
    firing_since = now.since_ms if now is not None and now.state == "firing" else None
    memory[0] = flapping.push(memory[0], firing_since is not None)
    percent = flapping.percent_change(memory[0])
    was_flapping = memory[1] is not None
    if flapping.verdict(was_flapping, percent, rule.flapping):
        if not was_flapping:  # this change is not notified: the flapping notice is
            memory[1], memory[2] = ts_ms, notified_since
            emit(_flap_event(rule, sensor, memory[1], "flapping", ts_ms, percent, rule.flapping.high))
    elif was_flapping:
        emit(_flap_event(rule, sensor, memory[1], "flapping_stopped", ts_ms, percent, rule.flapping.low))
        _catch_up(emit, sensor, rule, memory[2], firing_since, ts_ms, value, stats)
        memory[1] = memory[2] = None
    elif change is not None:
        emit(_event(rule, sensor, episode, change, ts_ms, value, stats))
    if memory[1] is None and memory[0] in (0, flapping.FULL):
        state.rule_memory.pop(key, None)
    else:
        state.rule_memory[key] = memory


def _catch_up(emit: Emit, sensor: str, rule: AlertRule, notified_since: int | None, firing_since: int | None,
              ts_ms: int, value: float, stats: dict | None) -> None:
    """After flapping: tell what changed while it was not told. The episode last notified as
    firing is resolved if it is over, and an episode firing now is notified."""
    if notified_since == firing_since:
        return
    if notified_since is not None:
        emit(_event(rule, sensor, AlertEpisode("firing", notified_since), "resolved", ts_ms, value, stats))
    if firing_since is not None:
        emit(_event(rule, sensor, AlertEpisode("firing", firing_since), "firing", ts_ms, value, stats))


def _event(rule: AlertRule, sensor: str, episode: AlertEpisode, state: str, ts_ms: int, value: float,
           stats: dict | None) -> AlertEvent:
    return AlertEvent(episode.alert_id(rule.name, sensor), rule.name, rule.kind, sensor, rule.severity, state,
                      value, rule.threshold, ts_ms, rule.unit, stats or {})


def _flap_event(rule: AlertRule, sensor: str, since_ms: int, state: str, ts_ms: int, percent: float,
                limit: float) -> AlertEvent:
    """A flapping notice: its own id (`rule:sensor:start:flapping`), the percent state change as
    its value and the limit it crossed as its threshold."""
    return AlertEvent(f"{rule.name}:{sensor}:{since_ms}:flapping", rule.name, rule.kind, sensor, rule.severity,
                      state, percent, limit, ts_ms, "%")


def on_reading(emit: Emit, rules: RuleSet, sensor: str, state: SensorState, ts_ms: int,
               temperature_c: float | None, humidity_pct: float | None, before: Summary | None) -> None:
    """Per-reading rules. `before`: rolling statistics without this reading (zscore compares a
    reading with its past)."""
    checks = rules.reading_checks
    if temperature_c is None or humidity_pct is None:
        checks = rules.one_metric_checks["humidity_pct" if temperature_c is None else "temperature_c"]
    for check in checks:
        check(emit, sensor, state, ts_ms, temperature_c, humidity_pct, before)
    for rule in rules.silent:  # any reading ends a silence
        if rule.name in state.alerts or flap_key(rule.name) in state.rule_memory:
            step(emit, sensor, state, rule, False, True, ts_ms, 0.0)


def on_rolling(emit: Emit, rules: RuleSet, sensor: str, state: SensorState, ts_ms: int, after: Summary,
               temperature_c: float | None, humidity_pct: float | None) -> None:
    """Rolling rules, after a reading: only those on a metric the reading carries."""
    chosen = rules.on_rolling
    if temperature_c is None or humidity_pct is None:
        chosen = rules.one_metric_rolling["humidity_pct" if temperature_c is None else "temperature_c"]
    for rule in chosen:
        value = after.source(rule.metric, rule.source)
        if value is not None:
            breach, clear = _compare(rule, value)
            if breach or rule.name in state.alerts or flap_key(rule.name) in state.rule_memory:
                step(emit, sensor, state, rule, breach, clear, ts_ms, value, stats_fields(after.metric(rule.metric)))


def on_silence(emit: Emit, rules: RuleSet, sensor: str, state: SensorState, clock_ms: int) -> bool:
    """Fire each silent rule whose `after` has passed since the sensor's newest reading, stamped at
    the moment it passed, so the event does not depend on when the worker noticed. True if the
    sensor's state changed (a flapping rule changes it without an event)."""
    changed = False
    for rule in rules.silent:
        episode = state.alerts.get(rule.name)
        if (episode is None or episode.state != "firing") and clock_ms - state.last_heard >= rule.after_ms:
            step(emit, sensor, state, rule, True, False, state.last_heard + rule.after_ms, rule.after_ms / 1000)
            changed = True
    return changed


def silence_deadline(rules: RuleSet, state: SensorState) -> int | None:
    deadlines = [state.last_heard + rule.after_ms for rule in rules.silent
                 if (episode := state.alerts.get(rule.name)) is None or episode.state != "firing"]
    return min(deadlines) if deadlines else None
