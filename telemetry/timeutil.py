"""Every conversion between stream ids, epoch milliseconds and human time lives here."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from telemetry.errors import UsageError

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def stream_id_ms(entry_id: str) -> int:
    """The server time, in epoch ms, at which Redis accepted an entry: the part before the dash."""
    return int(entry_id.split("-", 1)[0])


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """A sort key: stream ids compare as (ms, sequence), not as strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def iso_utc(ts_ms: int) -> str:
    """ISO-8601 in UTC with millisecond precision and a trailing Z, as spreadsheets and pandas read it."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def parse_time_ms(text: str, *, now: int | None = None, field: str = "time") -> int:
    """Parse an ISO-8601 time, epoch milliseconds, 'now', or a relative time such as -15m."""
    value = text.strip()
    reference = now_ms() if now is None else now
    if value == "now":
        return reference
    relative = _RELATIVE.match(value)
    if relative:
        return reference - int(float(relative.group(1)) * _UNIT_MS[relative.group(2)])
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{field}: {text!r} is not a time (use ISO-8601, epoch ms, 'now' or e.g. -15m)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_duration_ms(text: str, *, field: str) -> int:
    """Parse 90, 90s, 1.5m, 250ms, 2h: a bare number means seconds."""
    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?", value)
    if not match:
        raise UsageError(f"{field}: {text!r} is not a duration (e.g. 30, 30s, 5m, 250ms)")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2) or "s"])
