"""kill -9 and freeze real worker processes, again and again, while a producer runs, and restart
Redis under them: nothing lost, nothing doubled, alerts as one uninterrupted worker's."""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.crash_harness import (
    PARTITIONS,
    assert_reconciles,
    fleet_on,
    run_kill_loop,
    spawn,
    wait_for,
    wait_until_settled,
)
from tests.lossy_proxy import LossyProxy

# Spikes, so that alert rules fire and their events can be compared with an uninterrupted run.
PRODUCER_ARGS = ("--fleet", "k-", "8", "--rate", "40", "--spike-rate", "432", "--duration", "15",
                 "--partitions", str(PARTITIONS))


@pytest.mark.slow
def test_workers_killed_at_random_moments_and_rescaled_lose_and_double_nothing(redis_url, fleet):
    kill_drill(fleet, spawn("producers", *PRODUCER_ARGS, "--redis-url", redis_url))


@pytest.mark.slow
def test_the_kill_drill_with_every_process_under_its_acl_role(acl_server, tmp_path):
    """The same drill on a server that knows only the ACL roles: the admin creates the pipeline,
    the producer and every worker connect as their roles, with passwords from files."""
    acl_server.clean()
    created = acl_server.run("admin", "consumers", "group", "create", "--partitions", str(PARTITIONS), "--to", "start")
    assert created.returncode == 0, created.stderr
    with fleet_on(acl_server.root_url, tmp_path) as fleet:
        fleet.worker_url = acl_server.url("worker")
        fleet.worker_env = {"TELEMETRY_REDIS_PASSWORD_FILE": str(acl_server.secrets / "worker")}
        kill_drill(fleet, spawn("producers", *PRODUCER_ARGS, env_extra=acl_server.env("producer")))
    assert acl_server.denials() == []


def kill_drill(fleet, producer) -> None:
    """kill -9 workers at random moments, some between read and commit, and rescale, while the
    producer runs; then every window, alert and seq as one uninterrupted worker's."""
    fleet.start_worker("w0")
    run_kill_loop(fleet, producer, random.Random(7), sizes=(1, 2, 3, 3, 3, 3, 3, 2, 1), min_kills=20)
    assert producer.returncode == 0, producer.stderr.read()
    if not fleet.workers:
        fleet.start_worker("last")
    wait_until_settled(fleet, timeout_s=60)
    fleet.stop_all()
    print(f"kills: {fleet.kills}, with an uncommitted batch: {fleet.kills_with_uncommitted_batch}")
    assert fleet.kills >= 20
    assert fleet.kills_with_uncommitted_batch >= 5, "too few kills landed between read and commit"
    assert_reconciles(fleet.db, fleet.layout)


@pytest.mark.slow
def test_redis_killed_and_restarted_under_load_reconciles(redis_server, redis_url, fleet):
    """kill -9 of redis-server (AOF on) and a graceful restart, while data flows and workers die."""
    for name in ("w1", "w2"):
        fleet.start_worker(name)
    producer = spawn("producers", *PRODUCER_ARGS, "--redis-url", redis_url)
    ticks = {"n": 0}

    def restart_redis() -> None:
        ticks["n"] += 1
        if ticks["n"] == 8:
            redis_server.kill()
            redis_server.start()
        if ticks["n"] == 20:
            redis_server.restart()

    rng = random.Random(3)
    while producer.poll() is None:
        time.sleep(rng.uniform(0.15, 0.4))
        restart_redis()
        if ticks["n"] in (4, 14):
            fleet.kill_worker(min(fleet.workers))
            fleet.start_worker(f"w{fleet.started + 1}")
    assert producer.returncode == 0, producer.stderr.read()
    assert ticks["n"] >= 20, "the producer ended before the second restart"
    wait_until_settled(fleet, timeout_s=90)
    fleet.stop_all()
    assert_reconciles(fleet.db, fleet.layout)


def test_a_frozen_owner_is_fenced_when_it_wakes_and_changes_nothing(redis_url, fleet):
    """The zombie: SIGSTOP an owner past its lease, another takes over and commits, SIGCONT."""
    fleet.start_worker("zombie")
    producer = spawn("producers", "--fleet", "z-", "8", "--rate", "40", "--spike-rate", "432", "--duration", "6",
                     "--partitions", str(PARTITIONS), "--redis-url", redis_url)
    db = fleet.db
    checkpoints = [keys.checkpoint for keys in fleet.layout.groups("aggregators")]
    wait_for(lambda: fleet.holds_uncommitted("zombie") or db.exists(*checkpoints) > 0, 20,
             "the zombie to process readings")  # polling alone may miss its brief uncommitted moments
    fleet.catch_between_read_and_commit("zombie", random.Random(1))
    zombie = fleet.workers["zombie"]
    fleet.start_worker("successor")
    time.sleep(4)  # past the zombie's lease: the successor takes every partition and commits
    layout = fleet.layout
    epochs_before = [int(db.get(keys.epoch)) for keys in layout.groups("aggregators")]
    assert all(epoch >= 2 for epoch in epochs_before), "the successor did not take every partition"
    zombie.send_signal(signal.SIGCONT)
    producer.wait(timeout=60)
    wait_until_settled(fleet, timeout_s=60)
    fleet.stop_all()
    said = fleet.log_of("zombie")
    assert "lapsed" in said or "taken over by another worker" in said, "the zombie did not give its partitions up"
    assert_reconciles(db, layout)


def test_sigterm_commits_the_batch_in_hand_releases_leases_and_exits_0(redis_url, fleet):
    from tests.conftest import run_cli

    assert run_cli("producers", "s", "--count", "3000", "--start=-2h", "--partitions", str(PARTITIONS),
                   "--redis-url", redis_url).returncode == 0
    fleet.start_worker("graceful")
    db, layout = fleet.db, fleet.layout
    wait_for(lambda: db.exists(*[keys.checkpoint for keys in layout.groups("aggregators")]) > 0, 30,
             "the worker to commit")
    process = fleet.workers["graceful"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "aggregator:" in fleet.log_of("graceful")
    assert not fleet.holds_uncommitted("graceful")
    assert not any(db.exists(keys.lease) for keys in layout.groups("aggregators")), "a lease was not released"


@pytest.mark.slow
def test_lost_replies_to_commits_and_producer_batches_double_nothing(redis_server, redis_url, fleet):
    """Every script call's reply may be lost after Redis ran it; clients resend (redis-py's own
    retries and ours), and the resend must be answered as a duplicate."""
    proxy = LossyProxy(redis_server.port, drop_rate=0.05, seed=5).start()
    try:
        fleet.worker_url = proxy.url
        for name in ("w1", "w2"):
            fleet.start_worker(name)
        producer = spawn("producers", *PRODUCER_ARGS[:-4], "--duration", "8", "--partitions", str(PARTITIONS),
                         "--redis-url", proxy.url)
        assert producer.wait(timeout=120) == 0, producer.stderr.read()
        wait_until_settled(fleet, timeout_s=90)
        fleet.stop_all()
    finally:
        proxy.stop()
    print(f"replies lost: {proxy.dropped}")
    assert proxy.dropped >= 20
    assert_reconciles(fleet.db, fleet.layout)


@pytest.mark.slow
def test_redis_paused_and_workers_down_give_the_results_of_an_uninterrupted_run(redis_server, redis_url, fleet):
    """Redis frozen (SIGSTOP) for longer than the silence rule, then every worker down for as
    long, while the producer keeps its clock: no reading late, no false 'silent' alert."""
    fleet.start_worker("w1")
    producer = spawn("producers", *PRODUCER_ARGS[:-4], "--duration", "20", "--partitions", str(PARTITIONS),
                     "--redis-url", redis_url)
    time.sleep(3)
    redis_server.process.send_signal(signal.SIGSTOP)
    time.sleep(9)  # past the leases, and past the silence rule plus the wall-clock margin
    redis_server.process.send_signal(signal.SIGCONT)
    time.sleep(2)
    fleet.stop_all()
    fleet.workers.clear()
    time.sleep(5)  # the producer goes on; nobody reads
    fleet.start_worker("w2")
    assert producer.wait(timeout=90) == 0, producer.stderr.read()
    wait_until_settled(fleet, timeout_s=90)
    fleet.stop_all()
    assert_reconciles(fleet.db, fleet.layout)
