"""Alert rules: loaded from TOML, validated with messages that name the rule and field.

Rule kinds: threshold (on a reading or a rolling aggregate, with `for` and hysteresis),
rate_of_change (per minute, over at least `over` of event time, so the sample rate does not matter),
zscore (against the rolling window),
silent (no reading for `after`), stuck (the same values for at least `over` and `min_count` readings).
Every kind takes `flapping`: Nagios' flap detection limits, on by default (consumers/flapping.py).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from consumers.flapping import FlapLimits
from telemetry.errors import UsageError
from telemetry.timeutil import parse_duration_ms

KINDS = ("threshold", "rate_of_change", "zscore", "silent", "stuck")
METRICS = ("temperature_c", "humidity_pct")
SOURCES = ("reading", "mean", "min", "max", "std")
SEVERITIES = ("warning", "critical")
METRIC_UNITS = {"temperature_c": "°C", "humidity_pct": "%RH"}
NAGIOS_LIMITS = FlapLimits()


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    kind: str
    severity: str = "warning"
    metric: str = "temperature_c"
    source: str = "reading"  # threshold only: the reading itself or a rolling aggregate
    above: float | None = None
    below: float | None = None
    threshold: float | None = None  # rate_of_change: per minute; zscore: z; silent, stuck: seconds; threshold: above/below
    for_ms: int = 0
    hysteresis: float = 0.0
    min_count: int = 10
    after_ms: int = 0
    over_ms: int = 0  # rate_of_change: the shortest span a change is measured over; stuck: unchanged for
    flapping: FlapLimits | None = NAGIOS_LIMITS  # None: no flap detection

    @property
    def unit(self) -> str:
        """The unit of the value and threshold an alert event of this rule carries."""
        metric_unit = METRIC_UNITS[self.metric]
        return {"threshold": metric_unit, "rate_of_change": f"{metric_unit}/min", "zscore": "sigma",
                "silent": "s", "stuck": "s"}[self.kind]


DEFAULT_RULES_TOML = """
[[rule]]
name = "temperature-high"
kind = "threshold"
metric = "temperature_c"
above = 40.0
for = "30s"
hysteresis = 1.0
severity = "critical"

[[rule]]
name = "humidity-low"
kind = "threshold"
metric = "humidity_pct"
source = "mean"
below = 20.0
hysteresis = 2.0
severity = "warning"

[[rule]]
name = "temperature-jump"
kind = "rate_of_change"
metric = "temperature_c"
per_minute = 3.0
over = "60s"
severity = "warning"

[[rule]]
name = "temperature-anomaly"
kind = "zscore"
metric = "temperature_c"
z = 6.0
hysteresis = 1.0
min_count = 30
severity = "warning"

[[rule]]
name = "sensor-silent"
kind = "silent"
after = "30s"
severity = "critical"

[[rule]]
name = "sensor-stuck"
kind = "stuck"
over = "5m"
min_count = 5
severity = "warning"
"""

_ALLOWED = {
    "threshold": {"metric", "source", "above", "below", "for", "hysteresis"},
    "rate_of_change": {"metric", "per_minute", "over", "for"},
    "zscore": {"metric", "z", "hysteresis", "min_count", "for"},
    "silent": {"after"},
    "stuck": {"min_count", "over"},
}


def _number(where: str, table: dict, key: str, default: float | None = None, minimum: float | None = None) -> float | None:
    value = table.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{where}: {key} = {value!r} is not a finite number")
    if minimum is not None and value < minimum:
        raise UsageError(f"{where}: {key} = {value} is below {minimum:g}")
    return float(value)


def _flap_limits(where: str, value: object) -> FlapLimits | None:
    """`flapping = false`, `true` (Nagios' defaults, 20 and 30), or `{ low = 20, high = 30 }`."""
    if isinstance(value, bool):
        return NAGIOS_LIMITS if value else None
    if not isinstance(value, dict) or set(value) - {"low", "high"}:
        raise UsageError(f"{where}: flapping = {value!r}, expected true, false or {{ low = 20, high = 30 }}")
    low = _number(where, value, "low", NAGIOS_LIMITS.low, minimum=0)
    high = _number(where, value, "high", NAGIOS_LIMITS.high, minimum=0)
    if not low < high <= 100:  # type: ignore[operator]
        raise UsageError(f"{where}: flapping needs 0 <= low < high <= 100 (percent state change), got {low:g} and {high:g}")
    return FlapLimits(low, high)  # type: ignore[arg-type]


def _rule(index: int, table: dict, seen: set[str]) -> AlertRule:
    where = f"rule #{index + 1}"
    name = table.get("name")
    if not isinstance(name, str) or not name or ":" in name:
        raise UsageError(f"{where}: name is required (text without ':')")
    where = f"rule #{index + 1} ({name})"
    if name in seen:
        raise UsageError(f"{where}: name is used twice")
    seen.add(name)
    kind = table.get("kind")
    if kind not in KINDS:
        raise UsageError(f"{where}: kind = {kind!r}, expected one of {', '.join(KINDS)}")
    unknown = set(table) - {"name", "kind", "severity", "flapping"} - _ALLOWED[kind]
    if unknown:
        raise UsageError(f"{where}: unknown field(s) for kind {kind}: {', '.join(sorted(unknown))}")
    severity = table.get("severity", "warning")
    if severity not in SEVERITIES:
        raise UsageError(f"{where}: severity = {severity!r}, expected warning or critical")
    metric = table.get("metric", "temperature_c")
    if metric not in METRICS:
        raise UsageError(f"{where}: metric = {metric!r}, expected one of {', '.join(METRICS)}")

    def duration(key: str) -> int:
        value = table.get(key, 0)
        return parse_duration_ms(str(value), field=f"{where}: {key}")

    def positive_duration(key: str, default: str) -> int:
        value_ms = parse_duration_ms(str(table.get(key, default)), field=f"{where}: {key}")
        if value_ms <= 0:
            raise UsageError(f'{where}: {key} must be positive (e.g. "{default}")')
        return value_ms

    common = {"name": name, "kind": kind, "severity": severity, "metric": metric, "for_ms": duration("for"),
              "flapping": _flap_limits(where, table.get("flapping", True))}
    if kind == "threshold":
        source = table.get("source", "reading")
        if source not in SOURCES:
            raise UsageError(f"{where}: source = {source!r}, expected one of {', '.join(SOURCES)}")
        above, below = _number(where, table, "above"), _number(where, table, "below")
        if (above is None) == (below is None):
            raise UsageError(f"{where}: give exactly one of above or below")
        return AlertRule(**common, source=source, above=above, below=below,
                         threshold=above if above is not None else below,
                         hysteresis=_number(where, table, "hysteresis", 0.0, minimum=0))
    if kind == "rate_of_change":
        limit = _number(where, table, "per_minute", minimum=0)
        if limit is None:
            raise UsageError(f"{where}: per_minute is required")
        return AlertRule(**common, threshold=limit, over_ms=positive_duration("over", "60s"))
    if kind == "zscore":
        return AlertRule(**common, threshold=_number(where, table, "z", 3.0, minimum=0),
                         hysteresis=_number(where, table, "hysteresis", 0.0, minimum=0),
                         min_count=int(_number(where, table, "min_count", 30, minimum=2)))
    if kind == "silent":
        after_ms = duration("after")
        if after_ms <= 0:
            raise UsageError(f"{where}: after is required and positive (e.g. \"30s\")")
        return AlertRule(**common, after_ms=after_ms, threshold=after_ms / 1000)
    over_ms = positive_duration("over", "5m")
    return AlertRule(**common, min_count=int(_number(where, table, "min_count", 5, minimum=2)), over_ms=over_ms,
                     threshold=over_ms / 1000)


def parse_rules(text: str, source: str) -> tuple[AlertRule, ...]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{source}: {error}") from None
    if "rule" not in document:
        raise UsageError(f"{source}: defines no [[rule]] tables (write `rule = []` to run without alert rules)")
    tables = document["rule"]
    if not isinstance(tables, list) or set(document) - {"rule"}:
        raise UsageError(f"{source}: expected only [[rule]] tables")
    seen: set[str] = set()
    try:
        return tuple(_rule(index, table, seen) for index, table in enumerate(tables))
    except UsageError as error:
        raise UsageError(f"{source}: {error}") from None


def load_rules(path: Path | None) -> tuple[AlertRule, ...]:
    if path is None:
        return parse_rules(DEFAULT_RULES_TOML, "built-in rules")
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"--rules {path}: {error.strerror}") from None
    return parse_rules(text, str(path))
