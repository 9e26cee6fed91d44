"""The notifier against a real Prometheus Alertmanager (Debian's prometheus-alertmanager, started
on a free port with a webhook receiver of the test): grouped firing notification, resolution with
the event's end time, an alert kept firing by re-sends past its endsAt and across notifier
restarts, and the silent-sensor inhibition of the README's configuration."""

from __future__ import annotations

import json
import os
import time

import pytest

from consumers.notify.local_alertmanager import PrivateAlertmanager, alertmanager_binary
from consumers.notify.messages import fingerprint, labels
from consumers.notify.sinks import AlertmanagerSink, Rendering, RetryPolicy
from telemetry.keys import Keys
from tests.notify_helpers import Receiver, event, pending_count, write_event
from tests.test_notify import notifier_for

if alertmanager_binary() is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI must have prometheus-alertmanager (.ci/run installs it)")
    pytest.skip("prometheus-alertmanager is not installed (apt-get install -y prometheus-alertmanager)",
                allow_module_level=True)


@pytest.fixture()
def manager(tmp_path):
    with Receiver() as receiver, PrivateAlertmanager(tmp_path / "am", receiver.url) as running:
        running.receiver = receiver
        yield running


def sink(url: str, horizon_ms: int = 240_000) -> AlertmanagerSink:
    return AlertmanagerSink(url, Rendering("telemetry", "http://dash:8080", horizon_ms=horizon_ms),
                            RetryPolicy(max_attempts=5, initial_s=0.05, max_s=0.2), 2.0)


def notifications(receiver: Receiver) -> list[dict]:
    return [request.json for request in receiver.accepted()]


def run_until(notifier, condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    notifier.run(lambda: condition() or time.monotonic() > deadline, grace_s=2)


def test_firing_then_resolved_reach_alertmanagers_webhook_grouped(db, tmp_path):
    with Receiver() as receiver, PrivateAlertmanager(tmp_path / "am", receiver.url, group_by=("alertname",)) as am:
        now = int(time.time() * 1000)
        for sensor in ("kitchen", "attic"):
            write_event(db, event(sensor, 0, since=now - 5000))
        write_event(db, event("kitchen", 0, rule="humid", since=now - 5000))
        notifier = notifier_for(db, sink(am.url), drain=False)
        run_until(notifier, lambda: len(notifications(receiver)) >= 2, 20)
        firing = notifications(receiver)
        assert {n["status"] for n in firing} == {"firing"}
        grouped = {n["groupLabels"]["alertname"]: n for n in firing}
        assert sorted(a["labels"]["sensor"] for a in grouped["hot"]["alerts"]) == ["attic", "kitchen"]  # one page
        assert [a["labels"]["sensor"] for a in grouped["humid"]["alerts"]] == ["kitchen"]
        alert = next(a for a in grouped["hot"]["alerts"] if a["labels"]["sensor"] == "kitchen")
        assert alert["labels"] == labels(event("kitchen", 0), "telemetry")
        assert alert["fingerprint"] == fingerprint(alert["labels"])  # Alertmanager's own, computed alike here
        assert alert["generatorURL"] == "http://dash:8080/sensors/kitchen"
        assert alert["annotations"]["value"] == "41 °C"
        resolved = event("kitchen", 0, "resolved", since=now - 5000)
        write_event(db, resolved)
        run_until(notifier_for(db, sink(am.url), drain=False),
                  lambda: any(n["status"] == "resolved" for n in notifications(receiver)), 20)
        time.sleep(2)  # group_interval: anything else would have come by now
        later = notifications(receiver)[len(firing):]
        # The group's next notification: kitchen resolved (with its event's end), attic still firing.
        assert len(later) == 1 and later[0]["groupLabels"] == {"alertname": "hot"}
        states = {a["labels"]["sensor"]: (a["status"], a["endsAt"]) for a in later[0]["alerts"]}
        assert states["kitchen"][0] == "resolved" and states["attic"][0] == "firing"
        assert states["kitchen"][1].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(resolved.ts / 1000)))
    assert pending_count(db) == 0


def test_an_alert_firing_past_its_horizon_stays_firing_across_restarts_and_resolves_once(db, tmp_path):
    """Fast-forwarded: re-sends every second, endsAt 3 s ahead, Alertmanager's resolve_timeout 2 s,
    15 s of firing with the notifier restarted twice; then the resolution."""
    with Receiver() as receiver, PrivateAlertmanager(tmp_path / "am", receiver.url, resolve_timeout="2s") as am:
        now = int(time.time() * 1000)
        write_event(db, event("attic", 0, since=now))
        seen_states = []
        for _ in range(3):  # three notifier lives, 5 s each
            notifier = notifier_for(db, sink(am.url, horizon_ms=3000), drain=False, resend_ms=1000)
            deadline = time.monotonic() + 5

            def check(deadline: float = deadline) -> bool:
                held = am.alerts()
                seen_states.append([a["status"]["state"] for a in held if a["labels"]["sensor"] == "attic"])
                time.sleep(0.2)
                return time.monotonic() > deadline

            notifier.run(check, grace_s=1)
        assert seen_states and all(states == ["active"] for states in seen_states[3:]), seen_states
        assert [n["status"] for n in notifications(receiver)] == ["firing"]
        write_event(db, event("attic", 0, "resolved", since=now))
        run_until(notifier_for(db, sink(am.url, horizon_ms=3000), drain=False, resend_ms=1000),
                  lambda: len(notifications(receiver)) >= 2, 20)
        time.sleep(3)  # no second resolution, no new firing
        assert [n["status"] for n in notifications(receiver)] == ["firing", "resolved"]


def test_a_silent_sensor_inhibits_its_other_alerts_in_alertmanager(db, manager):
    now = int(time.time() * 1000)
    write_event(db, event("cellar", 0, since=now))
    write_event(db, event("cellar", 0, rule="sensor-silent", kind="silent", since=now))
    write_event(db, event("garage", 0, since=now))
    notifier = notifier_for(db, sink(manager.url), drain=False)

    def states() -> dict:
        return {(a["labels"]["alertname"], a["labels"]["sensor"]): a["status"] for a in manager.alerts()}

    run_until(notifier, lambda: len(states()) == 3 and states()[("hot", "cellar")]["state"] == "suppressed", 20)
    held = states()
    assert held[("hot", "cellar")]["state"] == "suppressed" and held[("hot", "cellar")]["inhibitedBy"]
    assert held[("sensor-silent", "cellar")]["state"] == "active" and held[("hot", "garage")]["state"] == "active"


def test_the_firing_set_survives_and_a_late_firing_does_not_revive_a_resolution(db, manager):
    keys = Keys().notify("notifiers")
    write_event(db, event("porch", 0, "resolved"))
    write_event(db, event("porch", 0))  # redelivered late, after its resolution
    notifier_for(db, sink(manager.url)).run(lambda: False)
    stored = json.loads(db.hget(keys.firing, event("porch", 0).alert_id))
    assert stored["state"] == "resolved"
