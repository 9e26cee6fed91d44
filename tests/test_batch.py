"""Sorting entries into a commit: fields as redis-py returns them (str) and as the worker's raw
reads keep them (bytes) must make the same batch, bad entries included."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.batch import build_batch
from telemetry.schema import FieldMap, Reading

NOW = 1_700_000_100_000


def flat(fields: dict[str, str]) -> list[str]:
    return [part for item in fields.items() for part in item]


def good(sensor: str, seq: int) -> dict[str, str]:
    return Reading(sensor, NOW - 60_000 + seq, 20.0 + seq / 10, 50.0, seq).encode()


METRICS = ("temperature_c", "humidity_pct")


def without(fields: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in fields.items() if key != name}


def text_entries(with_non_number: bool) -> list:
    entries = [(f"{NOW - 1000 + i}-0", flat(good("a" if i % 2 else "b", i))) for i in range(20)]
    reordered = dict(reversed(list(good("c", 1).items())))  # not in the producers' field order
    entries += [
        ("1700000099100-0", flat(reordered)),
        ("1700000099101-0", flat({k: v for k, v in good("a", 30).items() if k not in METRICS})),  # neither metric
        ("1700000099102-0", flat(dict(good("a", 31), temperature_c="nan"))),
        ("1700000099103-0", flat(dict(good("a", 32), humidity_pct="101"))),
        ("1700000099104-0", flat(dict(good("a", 33), sensor="no spaces"))),
        ("1700000099105-0", flat(dict(good("a", 34), ts=str(NOW + 3_600_000)))),  # future
        ("1700000099106-0", None),  # trimmed while pending
        ("1700000099108-0", flat(without(good("d", 1), "humidity_pct"))),  # one metric, producers' order
        ("1700000099109-0", flat(dict(reversed(without(good("d", 2), "temperature_c").items())))),  # one, reordered
        ("1700000099110-0", flat(dict(without(good("d", 3), "humidity_pct"), temperature_c="151"))),  # one, bad
    ]
    if with_non_number:
        entries += [("1700000099107-0", flat(dict(good("a", 35), temperature_c="2\n1")))]
    return entries


def as_bytes(entries: list) -> list:
    return [(entry_id, None if fields is None else [value.encode() for value in fields]) for entry_id, fields in entries]


@pytest.mark.parametrize("with_non_number", [False, True], ids=["range-checks", "a-value-not-a-number"])
def test_bytes_fields_make_the_same_batch_as_str_fields(with_non_number):
    entries = text_entries(with_non_number)
    text = build_batch(entries, FieldMap(), NOW, 300_000)
    raw = build_batch(as_bytes(entries), FieldMap(), NOW, 300_000)
    assert raw.entry_ids == text.entry_ids and raw.lost_ids == text.lost_ids == ["1700000099106-0"]
    assert raw.dead_letters == text.dead_letters
    reasons = [dead.reason.split(":")[0] for dead in raw.dead_letters]
    assert reasons == ["malformed"] * (5 + with_non_number) + ["future"]
    bad_one = next(dead for dead in raw.dead_letters if dead.entry_id == "1700000099110-0")
    assert "temperature_c='151': outside" in bad_one.reason and "humidity_pct" not in bad_one.fields
    for column in ("ids", "sensors"):
        assert getattr(raw.readings, column) == getattr(text.readings, column)
    for column in ("ts_ms", "temperature_c", "humidity_pct", "seq"):
        np.testing.assert_array_equal(getattr(raw.readings, column), getattr(text.readings, column))
    assert len(raw.readings) == 23
    assert "neither" not in raw.dead_letters[0].reason and "both missing" in raw.dead_letters[0].reason
    absent = {entry_id: (np.isnan(t), np.isnan(h)) for entry_id, t, h in zip(
        raw.readings.ids, raw.readings.temperature_c.tolist(), raw.readings.humidity_pct.tolist())}
    assert absent.pop("1700000099108-0") == (False, True) and absent.pop("1700000099109-0") == (True, False)
    assert not any(t or h for t, h in absent.values())


def test_bytes_that_are_not_utf8_are_dead_lettered_not_raised():
    fields = [value.encode() for value in flat(good("a", 1))]
    fields[1] = b"caf\xe9"  # the sensor name, in Latin-1
    batch = build_batch([("1-0", fields), ("2-0", [value.encode() for value in flat(good("a", 2))])],
                        FieldMap(), NOW, 300_000)
    assert [dead.entry_id for dead in batch.dead_letters] == ["1-0"] and batch.readings.ids == ["2-0"]
    assert batch.dead_letters[0].fields["sensor"] == "caf\ufffd"


@pytest.mark.parametrize("as_raw", [False, True], ids=["str", "bytes"])
def test_values_other_readers_would_read_differently_are_dead_lettered_alone(as_raw):
    """Python's float() takes '4_5.5' and int() takes 2**63; Lua, JSON and pandas do not. Each odd
    entry is dead-lettered naming its field, and the valid readings of its batch are kept."""
    odd = {"1-1": ("temperature_c", "4_5.5"), "1-2": ("ts", str(2**63)), "1-3": ("seq", str(2**60)),
           "1-4": ("humidity_pct", " 50"), "1-5": ("temperature_c", "1e308"), "1-6": ("temperature_c", "x" * 1_000_000)}
    entries = [(f"0-{i}", flat(good("a", i))) for i in range(1, 6)]
    entries += [(entry_id, flat(dict(good("b", 1), **{name: value}))) for entry_id, (name, value) in odd.items()]
    batch = build_batch(as_bytes(entries) if as_raw else entries, FieldMap(), NOW, 300_000)
    assert batch.readings.ids == [f"0-{i}" for i in range(1, 6)]
    reasons = {dead.entry_id: dead.reason for dead in batch.dead_letters}
    assert set(reasons) == set(odd)
    for entry_id, (name, _) in odd.items():
        assert name in reasons[entry_id] and len(reasons[entry_id]) < 200
