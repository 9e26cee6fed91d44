"""`python -m producers --from-mqtt URL ...`: the bridge's flags, and the run that ties the
settings, Redis, the sink and the loop together."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.exceptions import NoPermissionError

from producers.mqtt.bridge import MqttBridge
from producers.mqtt.device_publisher import DevicePublisher
from producers.mqtt.formats import FORMATS, FormatOptions, parser_for
from producers.mqtt.formats.json_mapping import JsonMapping
from producers.mqtt.settings import (
    DEFAULT_MAX_IN_FLIGHT,
    PASSWORD_ENV,
    BridgeSettings,
    BrokerTarget,
    default_client_id,
)
from producers.mqtt.sink import ReadingSink
from telemetry.backoff import RETRYABLE
from telemetry.cli import (
    PipelineConfig,
    StopSignal,
    connect_with_retry,
    number_type,
    replica_wait,
    until_answered,
)
from telemetry.errors import UsageError
from telemetry.partitions import partition_maxlen
from telemetry.progress import ProgressLine
from telemetry.refusals import refusal_line
from telemetry.timeutil import parse_duration_ms

STATUS_EVERY_S = 1.0
STATUS_TTL_MS = 15_000


def add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("MQTT (real sensors in: --from-mqtt; README 'Real sensors over MQTT')")
    group.add_argument("--from-mqtt", metavar="URL",
                       help="bridge a broker's messages into the pipeline: mqtt://[user@]host[:port] or mqtts://; "
                            f"the password from ${PASSWORD_ENV} or --mqtt-password-file")
    group.add_argument("--to-mqtt", metavar="URL",
                       help="simulated sensors publish to this broker (QoS 1) in --format instead of writing to Redis")
    group.add_argument("--format", choices=sorted(FORMATS), help="the devices' payload format")
    group.add_argument("--topic", action="append", default=[], metavar="FILTER",
                       help="topic filter to subscribe to, wildcards allowed (repeatable; default: the format's usual one)")
    group.add_argument("--map", metavar="SPEC",
                       help="--format json: sensor=topic:N|FIELD,temperature=FIELD,humidity=FIELD,"
                            "time=FIELD:iso|epoch_s|epoch_ms,unit=C|F")
    group.add_argument("--tz", default="UTC", help="zone of device times written without an offset (Tasmota; default UTC)")
    group.add_argument("--unit", choices=("C", "F"), default="C",
                       help="temperature unit of payloads that do not say it (Shelly gen1, ESPHome; default C)")
    group.add_argument("--share", metavar="GROUP", help="MQTT 5 shared subscription: bridges of one GROUP split the messages")
    group.add_argument("--client-id", help="fixed MQTT client id, so the broker keeps the session while the bridge is "
                                           "away (default telemetry-PREFIX-HOSTNAME; each bridge needs its own)")
    group.add_argument("--max-in-flight", type=number_type(int, minimum=1, maximum=65535),
                       default=DEFAULT_MAX_IN_FLIGHT,
                       help=f"messages received and not yet acknowledged (default {DEFAULT_MAX_IN_FLIGHT})")
    group.add_argument("--mqtt-password-file", type=Path, metavar="FILE", help="the broker password, in a file")
    group.add_argument("--mqtt-ca", type=Path, metavar="FILE", help="mqtts://: CA certificate(s) to trust")
    group.add_argument("--mqtt-cert", type=Path, metavar="FILE", help="mqtts://: client certificate")
    group.add_argument("--mqtt-key", type=Path, metavar="FILE", help="mqtts://: client key")


def device_publisher(args: argparse.Namespace) -> DevicePublisher:
    if args.format is None:
        raise UsageError(f"--to-mqtt needs --format ({'|'.join(sorted(FORMATS))})")
    if args.from_csv is not None:
        raise UsageError("--to-mqtt publishes simulated sensors, not a CSV")
    broker = BrokerTarget.from_url(args.to_mqtt, password_file=args.mqtt_password_file, ca_file=args.mqtt_ca,
                                   cert_file=args.mqtt_cert, key_file=args.mqtt_key, flag="--to-mqtt")
    print(f"producer: publishing to {broker!r} as {args.format} devices", file=sys.stderr)
    return DevicePublisher(broker, args.format)


def format_options(args: argparse.Namespace) -> FormatOptions:
    try:
        zone = ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--tz {args.tz!r}: not a time zone (e.g. Europe/Berlin, UTC)") from None
    if args.map is not None and args.format != "json":
        raise UsageError("--map goes with --format json")
    if args.format == "json" and args.map is None:
        raise UsageError("--format json needs --map (where the sensor, temperature, humidity and time are)")
    return FormatOptions(zone, args.unit, JsonMapping.parse(args.map) if args.map else None)


def bridge_settings(args: argparse.Namespace, prefix: str) -> BridgeSettings:
    if args.format is None:
        raise UsageError(f"--from-mqtt needs --format ({'|'.join(sorted(FORMATS))})")
    if args.names or args.fleet:
        raise UsageError("--from-mqtt bridges real sensors: name no simulated ones")
    duration = parse_duration_ms(args.duration, field="--duration") / 1000 if args.duration else None
    broker = BrokerTarget.from_url(args.from_mqtt, password_file=args.mqtt_password_file, ca_file=args.mqtt_ca,
                                   cert_file=args.mqtt_cert, key_file=args.mqtt_key)
    return BridgeSettings(broker, args.format, format_options(args), args.client_id or default_client_id(prefix),
                          tuple(args.topic), args.share, args.max_in_flight, args.batch, duration_s=duration)


def publish_status(db, config: PipelineConfig, bridge: MqttBridge, *, stopped: bool = False) -> None:
    """Best effort: `consumers status` shows it; an outage shows as a stale or expired status."""
    try:
        pipeline = db.pipeline(transaction=False)
        pipeline.sadd(config.keys.mqtt_bridges, bridge.settings.client_id)
        pipeline.set(config.keys.mqtt_bridge(bridge.settings.client_id),
                     json.dumps({**bridge.status(), "stopped": stopped}), px=None if stopped else STATUS_TTL_MS)
        pipeline.execute()
    except (*RETRYABLE, NoPermissionError) as error:  # the readings go on; a refusal is said
        if isinstance(error, NoPermissionError):
            print(f"bridge: status not published: {refusal_line(error)}", file=sys.stderr)


def run_bridge(args: argparse.Namespace, config: PipelineConfig, stop: StopSignal) -> int:
    settings = bridge_settings(args, config.keys.prefix)
    parse = parser_for(settings.format_name, settings.options)
    db = connect_with_retry(config, stop)
    layout = until_answered("bridge", lambda: config.layout(db), stop)
    sink = ReadingSink(db, layout, config.keys, config.field_map, partition_maxlen(args.maxlen, layout.count),
                       settings.client_id, wait=replica_wait(args, "bridge"))
    bridge = MqttBridge(settings, sink, parse)
    print(f"bridge: {settings.format_name} from {settings.broker!r}, topics {', '.join(settings.subscribed())}, "
          f"at most {settings.max_in_flight} messages in flight", file=sys.stderr)
    progress = ProgressLine("bridge", "messages", None, sys.stderr, every_s=30.0,
                            details=lambda: (f"{bridge.counts.written:,} written, {bridge.counts.duplicates:,} "
                                             f"duplicates, {bridge.counts.dead_lettered:,} dead-lettered, "
                                             f"{bridge.in_flight} in flight, "
                                             f"{'connected' if bridge.connected else 'DISCONNECTED'}"))
    if args.metrics_port:
        from producers.mqtt.metrics import start_bridge_metrics

        start_bridge_metrics(args.metrics_port, bridge)
    next_status = 0.0

    def on_step(handled: int) -> None:
        nonlocal next_status
        progress.add(handled)
        if time.monotonic() >= next_status:
            publish_status(db, config, bridge)
            next_status = time.monotonic() + STATUS_EVERY_S

    bridge.start()
    try:
        bridge.run(lambda: stop.requested, on_step)
    finally:
        bridge.close()
        progress.close()
        publish_status(db, config, bridge, stopped=True)
    counts = bridge.counts.as_dict()
    if args.json:
        print(json.dumps({"stopped_by_signal": stop.requested, "bridge": counts}))
    else:
        print("bridge: " + ", ".join(f"{name.replace('_', ' ')} {value:,}" for name, value in counts.items()))
    return 0

