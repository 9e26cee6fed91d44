"""Device times as epoch milliseconds: ISO text with or without an offset, Unix seconds or ms."""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo

from producers.mqtt.message import PayloadError

# A device time before 2000 or after 2100 is a clock that was never set (Tasmota reports 1970
# until NTP answers): taken as no time at all would hide it, so it is refused.
EARLIEST_MS = 946_684_800_000
LATEST_MS = 4_102_444_800_000


def _checked(what: str, ts_ms: int) -> int:
    if not EARLIEST_MS <= ts_ms < LATEST_MS:
        raise PayloadError(f"{what}: {ts_ms} ms is not between 2000 and 2100 (device clock not set?)")
    return ts_ms


def iso_ms(what: str, value: object, zone: tzinfo = UTC) -> int:
    """ISO 8601 text; without an offset it is read in `zone` (Tasmota's local time)."""
    if not isinstance(value, str):
        raise PayloadError(f"{what}: {value!r} is not ISO 8601 text")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PayloadError(f"{what}: {value[:40]!r} is not ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return _checked(what, round(moment.timestamp() * 1000))


def epoch_ms(what: str, value: object, per_second: int) -> int:
    """Unix time in seconds (per_second=1000) or milliseconds (1), as a JSON number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PayloadError(f"{what}: {value!r} is not a Unix time")
    return _checked(what, round(value * per_second))


TIME_FORMATS = {
    "iso": lambda what, value, zone: iso_ms(what, value, zone),
    "epoch_s": lambda what, value, zone: epoch_ms(what, value, 1000),
    "epoch_ms": lambda what, value, zone: epoch_ms(what, value, 1),
}
