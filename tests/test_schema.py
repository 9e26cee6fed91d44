import math

import pytest

from telemetry.errors import UsageError
from telemetry.schema import FieldMap, Reading, SchemaError, entry_layout

GOOD = {"sensor": "greenhouse-01", "ts": "1700000000000", "temperature_c": "21.5", "humidity_pct": "40.1",
        "seq": "7", "v": "1"}


def test_round_trip_is_exact():
    reading = Reading("s.1_a-B", 1_700_000_000_123, 21.3, 45.7, 42)
    assert Reading.decode(reading.encode(), "1-0") == reading


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("sensor", None, "missing"),
        ("sensor", "bad name", "must be 1-64"),
        ("sensor", "x" * 65, "must be 1-64"),
        ("ts", "soon", "not an integer"),
        ("ts", "-5", "negative"),
        ("temperature_c", "hot", "not a number"),
        ("temperature_c", "nan", "not finite"),
        ("temperature_c", "inf", "not finite"),
        ("temperature_c", "150.1", "outside"),
        ("temperature_c", "-80.5", "outside"),
        ("humidity_pct", "100.5", "outside"),
        ("humidity_pct", "", "not a number"),  # present but empty is not absent
        ("seq", "1.5", "not an integer"),
        ("temperature_c", "4_5.5", "not a plain number"),
        ("temperature_c", " 45.5", "not a plain number"),
        ("temperature_c", "\u0664\u0665", "not a plain number"),
        ("temperature_c", "1e308", "outside"),
        ("ts", "1_000", "not a plain number"),
        ("ts", str(2**63), "above 2^53"),
        ("seq", str(2**64), "above 2^53"),
        ("v", "2", "unsupported"),
    ],
)
def test_decode_names_the_bad_field_and_value(field, value, problem):
    entry = dict(GOOD)
    if value is None:
        del entry[field]
    else:
        entry[field] = value
    with pytest.raises(SchemaError) as caught:
        Reading.decode(entry, "1-0")
    assert caught.value.field == field
    assert problem in caught.value.problem
    assert field in str(caught.value)


@pytest.mark.parametrize("absent", ["temperature_c", "humidity_pct"])
def test_a_reading_with_one_metric_leaves_the_other_absent(absent):
    entry = {name: value for name, value in GOOD.items() if name != absent}
    reading = Reading.decode(entry, "1-0")
    assert getattr(reading, absent) is None
    assert reading.encode() == entry  # absent again, not empty
    assert Reading.decode(reading.encode(), "1-0") == reading


def test_a_reading_without_either_metric_is_refused_naming_both():
    entry = {name: value for name, value in GOOD.items() if name not in ("temperature_c", "humidity_pct")}
    with pytest.raises(SchemaError) as caught:
        Reading.decode(entry, "1-0")
    assert str(caught.value) == "temperature_c/humidity_pct=None: both missing: a reading carries at least one metric"


def test_seed_tutorial_entries_decode_with_the_seed_preset():
    seed_entry = {"sensor_id": "sensor1", "temp": "0.42", "humidity": "0.77"}
    reading = Reading.decode(seed_entry, "1700000000123-0", FieldMap.parse("seed"))
    assert reading == Reading("sensor1", 1_700_000_000_123, 0.42, 0.77, None)


def test_field_map_parses_overrides_and_rejects_unknown_parts():
    mapped = FieldMap.parse("sensor=device,temperature_c=t,seq=")
    assert (mapped.sensor, mapped.temperature_c, mapped.seq) == ("device", "t", None)
    assert entry_layout(mapped) == ("device", "ts", "t", "humidity_pct", "v")
    with pytest.raises(UsageError, match="colour"):
        FieldMap.parse("colour=red")
    with pytest.raises(UsageError, match="required"):
        FieldMap.parse("sensor=")


def test_boundaries_are_inclusive():
    entry = dict(GOOD, temperature_c="-80", humidity_pct="100")
    reading = Reading.decode(entry, "1-0")
    assert reading.temperature_c == -80.0 and reading.humidity_pct == 100.0
    assert not math.isnan(reading.temperature_c)
