"""The notifier against a real redis-server and local HTTP receivers: signed webhooks with retries,
dead letters, sinks that do not wait for each other, acknowledgement only after every sink."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis

from consumers.notify.messages import Notice, fingerprint, webhook_body
from consumers.notify.notifier import Notifier
from consumers.notify.signing import headers, parse_secret
from consumers.notify.sinks import Rendering, RetryPolicy, WebhookSink
from telemetry.errors import UsageError
from telemetry.keys import Keys
from tests.crash_harness import wait_for
from tests.notify_helpers import (
    SECRET,
    Receiver,
    alert_streams,
    event,
    pending_count,
    verify,
    write_event,
)

FAST_RETRY = RetryPolicy(max_attempts=6, initial_s=0.02, max_s=0.1)


def test_signature_matches_the_spec_written_independently():
    key = parse_secret(SECRET, "test")
    body = b'{"hello": "world"}'
    sent = headers(key, "msg_1", 1_700_000_000, body)
    assert verify(SECRET, sent, body)
    assert not verify(SECRET, sent, body + b" ")
    assert not verify(SECRET, {**sent, "webhook-id": "msg_2"}, body)
    # The spec's own example (standard-webhooks/spec, "Verifying webhooks"): same secret, id, time, body.
    example_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    example = headers(parse_secret(example_secret, "spec"), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                      b'{"test": 2432232314}')
    assert example["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_secrets_that_are_not_whsec_base64_are_refused_in_one_line():
    for bad in ("plain-secret", "whsec_not*base64", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(UsageError, match="whsec_|base64|bytes"):
            parse_secret(bad, "TELEMETRY_WEBHOOK_SECRET")


def test_alertmanager_end_never_precedes_the_start_when_the_sensor_clock_runs_ahead():
    from consumers.notify.messages import alertmanager_alert

    ahead = event("kitchen", 0, since=2_000_000_000_000)  # a sensor clock minutes ahead of this one
    firing = alertmanager_alert(ahead, "telemetry", "http://x", 1_999_999_000_000, 60_000)
    resolved = alertmanager_alert(event("kitchen", 0, "resolved", since=2_000_000_000_000), "telemetry", "http://x",
                                  1_999_999_000_000, 60_000)
    assert firing["endsAt"] >= firing["startsAt"] and resolved["endsAt"] == resolved["startsAt"]


def test_webhook_body_is_alertmanagers_version_4():
    notice = Notice("s", "1-0", event("kitchen", 1), {})
    body = json.loads(webhook_body(notice, "telemetry", "http://dash:8080", "telemetry"))
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "telemetry"
    (alert,) = body["alerts"]
    assert alert["labels"] == {"alertname": "hot", "sensor": "kitchen", "severity": "critical",
                               "kind": "threshold", "pipeline": "telemetry"}
    assert alert["annotations"]["value"] == "42 °C" and alert["annotations"]["threshold"] == "40 °C"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["startsAt"] == "2023-11-14T22:13:20.001Z"
    assert alert["generatorURL"] == "http://dash:8080/sensors/kitchen"
    assert alert["fingerprint"] == fingerprint(alert["labels"]) and body["commonLabels"] == alert["labels"]
    resolved = json.loads(webhook_body(Notice("s", "2-0", event("kitchen", 1, "resolved"), {}), "telemetry",
                                       "http://dash:8080", "telemetry"))
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] == "2023-11-14T22:13:21.001Z"


def notifier_for(db, *sinks, **options) -> Notifier:
    defaults = {"start": "all", "drain": True, "block_ms": 20, "claim_idle_ms": 5_000, "resend_ms": 60_000}
    return Notifier(db, alert_streams(db), Keys().notify("notifiers"), "test-notifier", list(sinks),
                    **{**defaults, **options})


def webhook(url: str, policy: RetryPolicy = FAST_RETRY, timeout_s: float = 0.5) -> WebhookSink:
    return WebhookSink(url, Rendering("telemetry", "http://localhost:8080"), policy, timeout_s,
                       parse_secret(SECRET, "test"))


def test_retries_keep_the_webhook_id_and_end_in_one_delivery(db):
    answers = iter(["500", "hang", "reset", "ok"])
    with Receiver(lambda number, body: next(answers, "ok"), hang_s=1.0) as receiver:
        write_event(db, event("kitchen", 1))
        sink = webhook(receiver.url)
        notifier_for(db, sink).run(lambda: False)
        requests = receiver.snapshot()
    assert [r.answered for r in requests] == ["500", "hang", "reset", "ok"]
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert all(verify(SECRET, r.headers, r.body) for r in requests)
    assert (sink.counts.delivered, sink.counts.retried, sink.counts.dead_lettered) == (1, 3, 0)
    assert pending_count(db) == 0 and db.xlen(Keys().notify("notifiers").dead_letter) == 0


def test_a_4xx_and_exhausted_retries_go_to_the_dead_letter_stream_and_are_acknowledged(db):
    def behaviour(number, body):
        return "400" if b'"kitchen"' in body else "500"

    with Receiver(behaviour) as receiver:
        write_event(db, event("kitchen", 1))
        write_event(db, event("attic", 2))
        sink = webhook(receiver.url, RetryPolicy(max_attempts=3, initial_s=0.01, max_s=0.02))
        notifier_for(db, sink).run(lambda: False)
        attempts = [json.loads(r.body)["alerts"][0]["labels"]["sensor"] for r in receiver.snapshot()]
    assert sorted(attempts) == ["attic", "attic", "attic", "kitchen"]  # 4xx: never retried
    letters = {fields["sensor"]: fields for _, fields in db.xrange(Keys().notify("notifiers").dead_letter)}
    assert letters["kitchen"]["reason"] == "refused: HTTP 400" and "test says no" in letters["kitchen"]["response"]
    assert letters["attic"]["reason"] == "gave up after 3 attempts: HTTP 500" and letters["attic"]["attempts"] == "3"
    assert json.loads(letters["attic"]["event"])["alert_id"] == event("attic", 2).alert_id
    assert sink.counts.dead_lettered == 2 and pending_count(db) == 0


@pytest.mark.parametrize(("max_in_flight", "reaching_fast"), [(100, 60), (30, 30)])
def test_a_hanging_receiver_does_not_hold_up_another_sink(db, max_in_flight, reaching_fast):
    """The slow sink falls behind alone, past --max-queued (10), until it holds --max-in-flight."""
    with Receiver(lambda n, b: "hang", hang_s=30.0) as slow, Receiver() as fast:
        for number in range(60):
            write_event(db, event(f"s{number}", number))
        slow_sink = webhook(slow.url, RetryPolicy(max_attempts=100, initial_s=0.5, max_s=1.0), timeout_s=30.0)
        notifier = notifier_for(db, slow_sink, webhook(fast.url), drain=False, max_queued=10,
                                max_in_flight=max_in_flight)
        when_done = []  # the slow sink's counts when the fast receiver had every event it could get
        deadline = time.monotonic() + 20

        def fast_has_all() -> bool:
            if len(fast.accepted()) >= reaching_fast:
                time.sleep(0.5)  # would more come?
                when_done.append((slow_sink.counts, len(slow.snapshot()), len(fast.accepted())))
            return bool(when_done) or time.monotonic() > deadline

        notifier.run(fast_has_all, grace_s=0)
        assert when_done, f"the fast receiver got {len(fast.accepted())} events"
        counts, slow_requests, fast_got = when_done[0]
        # All 60, or the --max-in-flight bound (a read of P partitions may pass it by P - 1).
        assert reaching_fast <= fast_got < reaching_fast + 4
        assert counts.delivered == counts.retried == 0  # while the slow one had not answered even once
        assert slow_requests <= 4  # each of its 4 connections still on its first event
    assert pending_count(db) == fast_got, "acknowledged before every sink finished"


def test_events_are_acknowledged_only_after_every_sink(db):
    with Receiver() as first, Receiver(lambda n, b: "500" if n < 3 else "ok") as second:
        for number in range(5):
            write_event(db, event("kitchen", number))
        notifier_for(db, webhook(first.url), webhook(second.url)).run(lambda: False)
        ids = [[r.headers["webhook-id"] for r in receiver.accepted()] for receiver in (first, second)]
    assert ids[0] == ids[1] and len(set(ids[0])) == 5  # same ids, same order
    assert pending_count(db) == 0


def test_notify_flags_are_checked_in_one_line(tmp_path):
    from tests.conftest import run_cli

    secret_file = tmp_path / "secret"
    secret_file.write_text("not-a-whsec")
    for args, says in (([], "give at least one sink"),
                       (["--webhook", "ftp://x"], "expected an http:// or https:// URL"),
                       (["--webhook", "http://x/hook"], "signing needs a secret"),
                       (["--webhook", "http://x/hook", "--webhook-secret-file", str(secret_file)], "whsec_"),
                       (["--alertmanager", "http://am:9093", "--resend", "soon"], "not a duration")):
        result = run_cli("consumers", "notify", *args, "--redis-url", "redis://127.0.0.1:1",
                         env_extra={"TELEMETRY_WEBHOOK_SECRET": ""})
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_malformed_alert_entry_is_dead_lettered_not_retried(db):
    with Receiver() as receiver:
        stream = alert_streams(db)[0]
        db.xadd(stream, {"alert_id": "x", "state": "firing"})
        fields = event("kitchen", 1).fields()
        db.xadd(stream, {**dict(zip(fields[::2], fields[1::2])), "alert_id": "hot:kitchen"})  # no time in its id
        notifier_for(db, webhook(receiver.url)).run(lambda: False)
        assert receiver.snapshot() == []
    letters = [fields for _, fields in db.xrange(Keys().notify("notifiers").dead_letter)]
    assert [letter["reason"].split(":")[0] for letter in letters] == ["malformed alert entry"] * 2
    assert "is not rule:sensor:time" in letters[1]["reason"] and pending_count(db) == 0


@pytest.fixture()
def redis_client(redis_url):
    return redis.Redis.from_url(redis_url, decode_responses=True)


def test_status_shows_each_sink_delivered_retried_dead_lettered_and_the_oldest_undelivered(db, redis_url):
    from consumers.status import collect_status, render_status
    from telemetry.partitions import open_layout

    with Receiver(lambda n, b: "500" if n == 0 else "400" if b'"attic"' in b else "ok") as receiver, \
            Receiver(lambda n, b: "hang", hang_s=3.0) as stuck:
        write_event(db, event("kitchen", 1))
        write_event(db, event("attic", 2))
        notifier_for(db, webhook(receiver.url)).run(lambda: False)
        layout = open_layout(db, Keys(), 4)
        (group,) = collect_status(db, layout, "aggregators", 0).notify
        (sink,) = group.sinks
        assert (sink.kind, sink.url, sink.delivered, sink.retried, sink.dead_lettered) == (
            "webhook", receiver.url, 1, 1, 1)
        assert sink.oldest_undelivered_s is None and group.pending == 0 and group.dead_letters == 1
        # A notifier stuck on a hanging receiver: its event's age shows, for that sink only.
        write_event(db, event("cellar", 3))
        stuck_notifier = notifier_for(db, webhook(stuck.url, RetryPolicy(100, 0.5, 1.0), timeout_s=2.0),
                                      drain=False)
        thread_result = []
        import threading

        runner = threading.Thread(target=lambda: thread_result.append(
            stuck_notifier.run(lambda: len(thread_result) > 0 or time.monotonic() > deadline, grace_s=0)))
        deadline = time.monotonic() + 4
        runner.start()
        wait_for(lambda: len(stuck.snapshot()) >= 1, 5, "the stuck receiver's first request")
        time.sleep(1.5)
        status = collect_status(db, layout, "aggregators", 0)
        shown = render_status(status)
        stuck_row = next(s for s in status.notify[0].sinks if s.url == stuck.url)
        assert stuck_row.oldest_undelivered_s is not None and stuck_row.oldest_undelivered_s >= 1.0
        assert f"webhook {receiver.url}: delivered 1, retried 1, dead-lettered 1" in shown
        runner.join()


def test_while_a_sensor_is_silent_its_other_events_are_marked_inhibited_for_webhooks(db):
    with Receiver() as receiver:
        write_event(db, event("cellar", 0))  # before the silence: not inhibited
        write_event(db, event("cellar", 1, rule="sensor-silent", kind="silent"))
        write_event(db, event("cellar", 0, "resolved"))  # while silent
        write_event(db, event("garage", 2))  # another sensor
        write_event(db, event("cellar", 1, "resolved", rule="sensor-silent", kind="silent"))
        write_event(db, event("cellar", 3))  # after the silence
        notifier_for(db, webhook(receiver.url)).run(lambda: False)
        marks = [(r.json["alerts"][0]["labels"]["sensor"], r.json["alerts"][0]["labels"]["alertname"],
                  r.json["status"], r.json["alerts"][0]["annotations"].get("inhibited_by"))
                 for r in receiver.accepted()]
    silent_id = event("cellar", 1, rule="sensor-silent").alert_id
    assert sorted(marks, key=str) == sorted([
        ("cellar", "hot", "firing", None), ("cellar", "sensor-silent", "firing", None),
        ("cellar", "hot", "resolved", silent_id), ("garage", "hot", "firing", None),
        ("cellar", "sensor-silent", "resolved", None), ("cellar", "hot", "firing", None)], key=str)


def test_from_readings_through_a_worker_to_a_webhook(db):
    """The whole path: readings, a real aggregator worker, its alert streams, the notifier, a webhook."""
    from consumers.rules import parse_rules
    from telemetry.schema import Reading
    from tests.aggregation_helpers import START, add_readings, drain, layout_of, make_worker

    layout = layout_of(db, 4)
    temperatures = [30.0] * 5 + [45.0] * 5 + [30.0] * 5
    add_readings(db, layout, [Reading("boiler", START + i * 1000, t, 50.0, i) for i, t in enumerate(temperatures)])
    rules = parse_rules('[[rule]]\nname = "hot"\nkind = "threshold"\nabove = 40.0\nseverity = "critical"\n', "t")
    drain(make_worker(db, layout, rules=rules), START + 10**7)
    with Receiver() as receiver:
        notifier_for(db, webhook(receiver.url)).run(lambda: False)
        bodies = [r.json for r in receiver.accepted()]
    assert [(b["status"], b["alerts"][0]["labels"]["sensor"], b["alerts"][0]["annotations"]["value"]) for b in bodies] \
        == [("firing", "boiler", "45 °C"), ("resolved", "boiler", "30 °C")]
    assert bodies[0]["alerts"][0]["startsAt"] == bodies[1]["alerts"][0]["startsAt"] == "2023-11-14T22:13:25.000Z"
    assert bodies[1]["alerts"][0]["endsAt"] == "2023-11-14T22:13:30.000Z"


def test_old_resolutions_are_forgotten_and_metrics_show_each_sink(db):
    from consumers.notify.metrics import SinkCollector

    old = event("shed", 0, "resolved", since=1_600_000_000_000)  # resolved years ago: past the retention
    write_event(db, event("shed", 0, since=1_600_000_000_000))
    write_event(db, old)
    porch = event("porch", 1, since=int(time.time() * 1000))
    write_event(db, porch)
    with Receiver(lambda n, b: "500" if n == 0 else "ok") as receiver:
        sink = webhook(receiver.url)
        notifier = notifier_for(db, sink)
        notifier.run(lambda: False)
        db.delete(Keys().notify("notifiers").resend_lock)  # the next interval
        notifier.resend_firing()
        kept = set(db.hkeys(Keys().notify("notifiers").firing))
        samples = {(metric.name, sample.labels["sink"], sample.value) for metric in SinkCollector(notifier).collect()
                   for sample in metric.samples if not sample.name.endswith("_created")}
    assert kept == {porch.alert_id}  # the old resolution is forgotten, the firing alert kept
    assert ("telemetry_notify_delivered", "webhook", 3.0) in samples
    assert ("telemetry_notify_retried", "webhook", 1.0) in samples
    assert ("telemetry_notify_queued", "webhook", 0.0) in samples


def test_two_notifiers_share_the_work_and_a_dead_ones_events_are_claimed(db):
    import threading

    for number in range(200):
        write_event(db, event(f"room-{number % 10}", number))
    streams = alert_streams(db)
    keys = Keys().notify("notifiers")
    for stream in streams:
        db.xgroup_create(stream, "notifiers", id="0", mkstream=True)
    taken = sum(len(found) for _, found in db.xreadgroup("notifiers", "dead", dict.fromkeys(streams, ">"), count=5))
    assert taken > 0  # read by a notifier that died before delivering them
    with Receiver() as receiver:
        pair = [Notifier(db, streams, keys, name, [webhook(receiver.url)], start="all", block_ms=20,
                         claim_idle_ms=500) for name in ("n1", "n2")]
        def all_delivered() -> bool:
            return len({r.headers["webhook-id"] for r in receiver.accepted()}) == 200 and pending_count(db) == 0

        threads = [threading.Thread(target=notifier.run, args=(all_delivered,)) for notifier in pair]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        delivered = {r.headers["webhook-id"] for r in receiver.accepted()}
    assert len(delivered) == 200 and pending_count(db) == 0
    assert all(notifier.stats.read > 0 for notifier in pair), [n.stats for n in pair]
    assert sum(notifier.stats.claimed for notifier in pair) == taken
