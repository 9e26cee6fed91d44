"""Each device format on payloads as the devices publish them (tests/fixtures/mqtt/<format>.json):
readings with the right sensor, time, °C and %RH, topics without readings skipped, bad payloads
refused with a reason."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from producers.mqtt.device_payloads import SIMULATOR_JSON_MAP, device_messages
from producers.mqtt.formats import DEFAULT_TOPICS, FORMATS, FormatOptions, parser_for
from producers.mqtt.formats.json_mapping import JsonMapping
from producers.mqtt.message import MAX_PAYLOAD_BYTES, MqttMessage, PayloadError, sensor_name
from telemetry.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures" / "mqtt"
ARRIVAL_MS = 1_700_000_000_000


def cases():
    for name in FORMATS:
        for case in json.loads((FIXTURES / f"{name}.json").read_text()):
            yield pytest.param(name, case, id=f"{name}: {case['name']}")


def parse(format_name: str, case: dict) -> list[dict]:
    options = FormatOptions(zone=ZoneInfo(case.get("zone", "UTC")), unit=case.get("unit", "C"),
                            mapping=JsonMapping.parse(case["map"]) if "map" in case else None)
    payload = bytes.fromhex(case["payload_hex"]) if "payload_hex" in case else case["payload"].encode()
    message = MqttMessage(case["topic"], payload, ARRIVAL_MS)
    return [asdict(reading) for reading in parser_for(format_name, options)(message)]


@pytest.mark.parametrize(("format_name", "case"), list(cases()))
def test_fixture(format_name, case):
    if "error" in case:
        with pytest.raises(PayloadError, match=re.escape(case["error"])):
            parse(format_name, case)
    else:
        assert parse(format_name, case) == case["readings"]


def test_every_format_has_fixtures_of_readings_and_of_errors():
    for name in FORMATS:
        fixture = json.loads((FIXTURES / f"{name}.json").read_text())
        assert any(case.get("readings") for case in fixture), name
        assert any("error" in case for case in fixture), name


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_a_huge_message_is_refused_before_it_is_read(format_name):
    options = FormatOptions(mapping=JsonMapping.parse("sensor=topic:0,temperature=t"))
    topics = {"json": "x", **{name: topic.replace("+", "dev").replace("#", "dev") for name, topic in DEFAULT_TOPICS.items()}}
    topic = topics[format_name]
    if format_name == "esphome":
        topic = "dev/sensor/temperature/state"
    elif format_name == "shelly":
        topic = "shellies/dev/sensor/temperature"
    message = MqttMessage(topic, b"{" + b" " * MAX_PAYLOAD_BYTES + b"}", ARRIVAL_MS)
    with pytest.raises(PayloadError, match="more than"):
        parser_for(format_name, options)(message)


def test_sensor_names_from_device_names():
    assert sensor_name("living room/thermometer") == "living_room.thermometer"
    assert sensor_name("tank", "DS18B20-1") == "tank.DS18B20-1"
    assert sensor_name("Küche") == "K_che"
    with pytest.raises(PayloadError):
        sensor_name("x" * 65)


@pytest.mark.parametrize(("spec", "problem"), [
    ("temperature=t", "say where the sensor"),
    ("sensor=topic:1", "map temperature"),
    ("sensor=topic:x,temperature=t", "topic:N"),
    ("sensor=topic:1,temperature=t,time=ts:weeks", "the format is one of"),
    ("sensor=topic:1,temperature=t,unit=K", "C or F"),
    ("sensor=topic:1,colour=t", "PART=VALUE"),
])
def test_bad_mappings_name_the_part(spec, problem):
    with pytest.raises(UsageError, match=problem):
        JsonMapping.parse(spec)


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_what_the_simulators_publish_reads_back(format_name):
    """The simulators' payloads (--to-mqtt) read back as the reading they carry; the split
    formats as one metric per message, at arrival time."""
    ts_ms = 1_704_067_200_000 + (0 if format_name == "tasmota" else 123)
    mapping = JsonMapping.parse(SIMULATOR_JSON_MAP) if format_name == "json" else None
    parse = parser_for(format_name, FormatOptions(mapping=mapping))
    readings = [reading for topic, payload in device_messages(format_name, "kitchen-1", ts_ms, 21.5, 48.25)
                for reading in parse(MqttMessage(topic, payload, ARRIVAL_MS))]
    split = format_name in ("shelly", "esphome")
    if split:
        assert [(r.temperature_c, r.humidity_pct, r.ts_ms) for r in readings] == [
            (21.5, None, ARRIVAL_MS), (None, 48.25, ARRIVAL_MS)]
    else:
        assert [(r.sensor, r.ts_ms, r.device_time, r.temperature_c, r.humidity_pct) for r in readings] == [
            ("kitchen-1", ts_ms, True, 21.5, 48.25)]
