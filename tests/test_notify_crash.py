"""The notifier killed with kill -9 ten times while alert events flow and the webhook receiver
fails 30% of requests: every event reaches the receiver, every resend carries the same
webhook-id and body, and after de-duplication by id the receiver holds exactly the events of
the alert streams, in order per sensor."""

from __future__ import annotations

import json
import random
import threading
import time

from telemetry.records import AlertEvent
from tests.crash_harness import spawn, wait_for
from tests.notify_helpers import SECRET, Receiver, alert_streams, event, pending_count, verify, write_event

SENSORS = [f"room-{index}" for index in range(12)]


def test_kill_9_ten_times_loses_nothing_and_keeps_ids(db, redis_url, tmp_path):
    rng = random.Random(20)
    lock = threading.Lock()

    def flaky(number: int, body: bytes) -> str:
        with lock:
            draw = rng.random()
        return "ok" if draw >= 0.3 else rng.choice(["500", "reset", "hang"])

    written: dict[str, list[str]] = {sensor: [] for sensor in SENSORS}  # sensor -> webhook ids in stream order
    stop_writing = threading.Event()

    def writer() -> None:
        from consumers.notify.messages import Notice

        for number in range(400):
            if stop_writing.is_set():
                return
            sensor = SENSORS[number % len(SENSORS)]
            state = "firing" if (number // len(SENSORS)) % 2 == 0 else "resolved"
            alert = event(sensor, (number // (2 * len(SENSORS))) * 10, state)
            stream, entry_id = write_event(db, alert)
            written[sensor].append(Notice(stream, entry_id, alert, {}).message_id)
            time.sleep(0.02)

    log = tmp_path / "notify.log"
    flags = ["notify", "--webhook", None, "--redis-url", redis_url, "--partitions", "4", "--start", "all",
             "--consumer", "notifier-1", "--timeout", "300ms", "--retry-initial", "10ms", "--retry-max", "100ms",
             "--max-attempts", "10000", "--claim-idle", "3s"]
    with Receiver(flaky, hang_s=0.5) as receiver:
        flags[2] = receiver.url
        alert_streams(db)  # the pipeline record, before the writer and the notifier race to make it
        thread = threading.Thread(target=writer)
        thread.start()
        kills = 0
        try:
            while kills < 10:
                with log.open("a") as out:
                    process = spawn("consumers", *flags, env_extra={"TELEMETRY_WEBHOOK_SECRET": SECRET}, stderr=out)
                before = len(receiver.accepted())
                wait_for(lambda before=before, process=process: len(receiver.accepted()) > before + 5
                         or process.poll() is not None, 30, "deliveries before the kill")
                time.sleep(random.uniform(0.0, 0.4))
                process.kill()
                process.wait()
                kills += 1
            thread.join()
            with log.open("a") as out:
                process = spawn("consumers", *flags, "--drain", env_extra={"TELEMETRY_WEBHOOK_SECRET": SECRET},
                                stderr=out)
            process.wait(timeout=120)
        finally:
            stop_writing.set()
            thread.join()
        requests = receiver.snapshot()
    assert process.returncode == 0, log.read_text()[-2000:]
    assert pending_count(db) == 0
    assert all(verify(SECRET, r.headers, r.body) for r in requests)
    bodies: dict[str, bytes] = {}
    for request in requests:  # every attempt and resend of an id carries the same body
        assert bodies.setdefault(request.headers["webhook-id"], request.body) == request.body
    first_seen: dict[str, list[str]] = {sensor: [] for sensor in SENSORS}
    seen = set()
    for request in receiver.accepted():
        message_id = request.headers["webhook-id"]
        if message_id not in seen:
            seen.add(message_id)
            first_seen[json.loads(request.body)["alerts"][0]["labels"]["sensor"]].append(message_id)
    assert first_seen == written, "lost, extra or out-of-order events after de-duplication"
    accepted = len(receiver.accepted())
    assert sum(map(len, written.values())) == 400 and accepted >= 400
    assert len([r for r in requests if r.answered != "ok"]) > 50, "the receiver did not fail often"
    print(f"{len(requests)} requests, {accepted} accepted for 400 events, {kills} kills")


def test_sigterm_waits_for_deliveries_under_way_then_leaves_the_rest_for_the_next_notifier(db, redis_url, tmp_path):
    import signal

    for number in range(3):
        write_event(db, event("attic", number))
    log = tmp_path / "notify.log"
    flags = ["notify", "--redis-url", redis_url, "--partitions", "4", "--start", "all", "--consumer", "n1",
             "--timeout", "60s", "--grace", "1s"]
    with Receiver(lambda n, b: "hang", hang_s=60) as stuck:
        with log.open("a") as out:
            process = spawn("consumers", *flags, "--webhook", stuck.url,
                            env_extra={"TELEMETRY_WEBHOOK_SECRET": SECRET}, stderr=out)
        wait_for(lambda: len(stuck.snapshot()) == 1, 30, "the first delivery")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert pending_count(db) == 3  # nothing acknowledged that no receiver accepted
    with Receiver() as receiver:
        with log.open("a") as out:
            process = spawn("consumers", *flags, "--webhook", receiver.url, "--drain",
                            env_extra={"TELEMETRY_WEBHOOK_SECRET": SECRET}, stderr=out)
        assert process.wait(timeout=60) == 0, log.read_text()
        assert len(receiver.accepted()) == 3 and pending_count(db) == 0
    assert "Traceback" not in log.read_text()


def test_redis_killed_restarted_and_paused_under_the_notifier_loses_nothing(db, redis_server, redis_url, tmp_path):
    """kill -9 of redis-server (AOF on), a restart, then Redis frozen (SIGSTOP) for 3 s, while
    events flow: the notifier retries with backoff and delivers every event Redis kept."""
    import signal

    import redis as redis_py

    from consumers.notify.messages import Notice

    log = tmp_path / "notify.log"
    with Receiver() as receiver:
        with log.open("a") as out:
            process = spawn("consumers", "notify", "--webhook", receiver.url, "--redis-url", redis_url,
                            "--partitions", "4", "--start", "all", "--consumer", "n1",
                            env_extra={"TELEMETRY_WEBHOOK_SECRET": SECRET}, stderr=out)
        try:
            number = 0
            for phase in ("kill", "pause", "after"):
                client = redis_py.Redis.from_url(redis_url, decode_responses=True)
                for _ in range(30):
                    write_event(client, event(f"room-{number % 5}", number))
                    number += 1
                wait_for(lambda number=number: len(receiver.accepted()) >= number - 5, 30, f"deliveries before {phase}")
                if phase == "kill":
                    redis_server.kill()
                    redis_server.start()
                elif phase == "pause":
                    redis_server.process.send_signal(signal.SIGSTOP)
                    time.sleep(3)
                    redis_server.process.send_signal(signal.SIGCONT)
            client = redis_py.Redis.from_url(redis_url, decode_responses=True)
            kept = {Notice("s", entry_id, AlertEvent.decode(fields), fields).message_id
                    for stream in alert_streams(client) for entry_id, fields in client.xrange(stream)}
            wait_for(lambda: kept <= {r.headers["webhook-id"] for r in receiver.accepted()}
                     and pending_count(client) == 0, 60, "every kept event delivered and acknowledged")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    assert len(kept) >= 80  # AOF kept (nearly) every event
    assert process.returncode == 0 and "Traceback" not in log.read_text(), log.read_text()[-2000:]
