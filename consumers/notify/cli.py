"""`python -m consumers notify`: flags, settings, sinks, then the notifier's loop."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consumers.notify.notifier import Notifier
from consumers.notify.settings import SECRET_ENV, NotifySettings, webhook_key
from consumers.notify.sinks import AlertmanagerSink, Rendering, RetryPolicy, Sink, WebhookSink
from telemetry import logstream
from telemetry.cli import (
    PipelineConfig,
    StopSignal,
    add_redis_arguments,
    connect_with_retry,
    number_type,
    until_answered,
)
from telemetry.timeutil import parse_duration_ms


def add_parser(commands) -> None:
    notify = commands.add_parser(
        "notify", help="deliver alert events to Prometheus Alertmanager and signed webhooks",
        description="Follow every partition's alert stream as a consumer group (run several notifiers to share "
                    "the work) and deliver each event to every sink: Alertmanager (POST /api/v2/alerts, still-firing "
                    "alerts re-sent every --resend) and webhooks (Alertmanager's webhook body, version 4, signed "
                    f"per Standard Webhooks with the secret in ${SECRET_ENV} or --webhook-secret-file). An event "
                    "is acknowledged once every sink accepted it or gave it up (dead-lettered).")
    notify.add_argument("--alertmanager", action="append", default=[], metavar="URL",
                        help="an Alertmanager's base URL, e.g. http://alertmanager:9093 (repeat for each of a cluster)")
    notify.add_argument("--webhook", action="append", default=[], metavar="URL", help="a webhook receiver (repeatable)")
    notify.add_argument("--webhook-secret-file", type=Path, metavar="FILE",
                        help=f"the webhooks' signing secret, whsec_<base64> (default: ${SECRET_ENV})")
    notify.add_argument("--notify-group", default="notifiers",
                        help="the notifiers' consumer group on the alert streams (default notifiers)")
    notify.add_argument("--consumer", default="", help="this notifier's name in the group (default HOST-PID; "
                        "a fixed name resumes its own unfinished events at once after a restart)")
    notify.add_argument("--start", choices=("new", "all"), default="new",
                        help="where a new notifier group starts: new events only, or every event kept (default new)")
    for flag, default, text in (("timeout", "5s", "a receiver's answer must come within this"),
                                ("retry-initial", "500ms", "first retry delay, doubling with jitter"),
                                ("retry-max", "30s", "longest retry delay"),
                                ("resend", "60s", "re-send every still-firing alert to Alertmanager this often"),
                                ("claim-idle", "30s", "take over a dead notifier's unfinished events after this"),
                                ("grace", "10s", "on SIGINT/SIGTERM, wait this long for deliveries under way")):
        notify.add_argument(f"--{flag}", default=default, help=f"{text} (default {default})")
    notify.add_argument("--max-attempts", type=number_type(int, minimum=1), default=8,
                        help="attempts per event and sink before it is dead-lettered (default 8)")
    notify.add_argument("--webhook-connections", type=number_type(int, minimum=1, maximum=64), default=4,
                        help="connections per webhook; each sensor's events use one, in order (default 4)")
    notify.add_argument("--max-queued", type=number_type(int, minimum=1), default=1000,
                        help="read on while some sink has fewer events than this waiting (default 1000)")
    notify.add_argument("--max-in-flight", type=number_type(int, minimum=1), default=20_000,
                        help="events read and not yet acknowledged by every sink, at most: a slow sink falls "
                             "behind alone up to this (default 20,000)")
    notify.add_argument("--external-url", default="http://localhost:8080",
                        help="the pipeline's web page: generatorURL is URL/sensors/NAME (default http://localhost:8080)")
    notify.add_argument("--duration", help="stop after this long (e.g. 30s)")
    notify.add_argument("--drain", action="store_true", help="stop when nothing is left to read or deliver")
    notify.add_argument("--log-json", action="store_true", help="log one JSON object per line (else timestamped text)")
    notify.add_argument("--metrics-port", type=number_type(int, minimum=1, maximum=65535),
                        help="serve Prometheus metrics here")
    add_redis_arguments(notify)


def notify_settings(args: argparse.Namespace) -> NotifySettings:
    return NotifySettings(
        alertmanagers=tuple(args.alertmanager), webhooks=tuple(args.webhook),
        webhook_key=webhook_key(args.webhook_secret_file) if args.webhook else None,
        notify_group=args.notify_group, consumer=args.consumer, start=args.start,
        timeout_s=parse_duration_ms(args.timeout, field="--timeout") / 1000,
        retry=RetryPolicy(args.max_attempts, parse_duration_ms(args.retry_initial, field="--retry-initial") / 1000,
                          parse_duration_ms(args.retry_max, field="--retry-max") / 1000),
        resend_ms=parse_duration_ms(args.resend, field="--resend"),
        claim_idle_ms=parse_duration_ms(args.claim_idle, field="--claim-idle"),
        max_in_flight=args.max_in_flight, max_queued=args.max_queued, external_url=args.external_url,
        drain=args.drain,
        webhook_connections=args.webhook_connections,
        duration_ms=parse_duration_ms(args.duration, field="--duration") if args.duration else None)


def build_sinks(settings: NotifySettings, pipeline: str) -> list[Sink]:
    rendering = Rendering(pipeline, settings.external_url, settings.receiver, settings.horizon_ms)
    sinks: list[Sink] = [AlertmanagerSink(url, rendering, settings.retry, settings.timeout_s)
                         for url in settings.alertmanagers]
    sinks += [WebhookSink(url, rendering, settings.retry, settings.timeout_s, settings.webhook_key,  # type: ignore[arg-type]
                          settings.webhook_connections) for url in settings.webhooks]
    return sinks


def run(args: argparse.Namespace, config: PipelineConfig, stop: StopSignal) -> int:
    logstream.install(args.log_json)
    settings = notify_settings(args)
    keys = config.keys.notify(settings.notify_group)
    db = connect_with_retry(config, stop)
    layout = until_answered("notify", lambda: config.layout(db), stop)
    streams = [group.alerts for group in layout.groups(config.group)]
    sinks = build_sinks(settings, config.keys.namespace_tag)
    notifier = Notifier(db, streams, keys, settings.consumer, sinks, start=settings.start,
                        max_in_flight=settings.max_in_flight, max_queued=settings.max_queued,
                        claim_idle_ms=settings.claim_idle_ms,
                        resend_ms=settings.resend_ms, horizon_ms=settings.horizon_ms,
                        pipeline=config.keys.namespace_tag, external_url=settings.external_url,
                        block_ms=settings.block_ms, drain=settings.drain, duration_ms=settings.duration_ms)
    if args.metrics_port:
        from consumers.notify.metrics import start_notify_metrics

        start_notify_metrics(args.metrics_port, notifier)
    print(f"notify: {settings.consumer} in group {settings.notify_group} following the alerts of group "
          f"{config.group} on {layout.count} partitions; sinks: " + ", ".join(sink.name for sink in sinks),
          file=sys.stderr)
    stats = notifier.run(lambda: stop.requested, grace_s=parse_duration_ms(args.grace, field="--grace") / 1000)
    counts = "; ".join(f"{sink.name}: delivered {sink.counts.delivered}, retried {sink.counts.retried}, "
                       f"dead-lettered {sink.counts.dead_lettered}" for sink in sinks)
    print(f"notify: read {stats.read}, acknowledged {stats.acknowledged}, claimed {stats.claimed}, "
          f"malformed {stats.malformed}; {counts}", file=sys.stderr)
    return 0
