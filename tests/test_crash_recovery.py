"""kill -9 real worker processes, again and again, while a producer runs; nothing lost or doubled."""

from __future__ import annotations

import random
import signal

import pytest

from telemetry.keys import Keys
from tests.conftest import run_cli
from tests.crash_harness import Fleet, assert_reconciles, run_kill_loop, spawn, wait_for, wait_until_all_windows_closed

PRODUCER_ARGS = ("--fleet", "k-", "5", "--rate", "40", "--duration", "10")


@pytest.fixture()
def fleet(redis_url):
    """Worker processes that are stopped whatever the test's outcome, so none outlives it."""
    workers = Fleet(redis_url)
    yield workers
    workers.stop_all()


def test_workers_killed_at_random_moments_lose_and_double_nothing(redis_url, fleet):
    keys = Keys()
    for name in ("w1", "w2", "w3"):
        fleet.start_worker(name)
    producer = spawn("producers", *PRODUCER_ARGS, "--redis-url", redis_url)
    run_kill_loop(fleet, keys, producer, random.Random(7))
    assert producer.returncode == 0, producer.stderr.read()
    wait_until_all_windows_closed(fleet.db, keys, timeout_s=60)
    fleet.stop_all()
    print(f"kills: {fleet.kills}, with an uncommitted batch: {fleet.kills_with_uncommitted_batch}")
    assert fleet.kills >= 10
    assert fleet.kills_with_uncommitted_batch >= 3, "too few kills landed between read and commit"
    assert_reconciles(fleet.db, keys)


def test_redis_restart_and_two_worker_kills_reconcile(redis_server, redis_url, fleet):
    """The fault drill: a graceful Redis restart (AOF on) and two kill -9s while data flows."""
    keys = Keys()
    for name in ("w1", "w2"):
        fleet.start_worker(name)
    producer = spawn("producers", *PRODUCER_ARGS, "--redis-url", redis_url)
    ticks = {"n": 0}

    def restart_once() -> None:
        ticks["n"] += 1
        if ticks["n"] == 6:
            redis_server.restart()

    run_kill_loop(fleet, keys, producer, random.Random(3), max_kills=2, on_tick=restart_once)
    assert producer.returncode == 0, producer.stderr.read()
    assert ticks["n"] >= 6, "the producer ended before the restart"
    wait_until_all_windows_closed(fleet.db, keys, timeout_s=90)
    fleet.stop_all()
    assert fleet.kills == 2
    assert_reconciles(fleet.db, keys)


def test_sigterm_commits_the_batch_in_hand_and_exits_0(redis_url, fleet):
    keys = Keys()
    assert run_cli("producers", "s", "--count", "3000", "--start=-2h", "--redis-url", redis_url).returncode == 0
    fleet.start_worker("graceful")
    db = fleet.db
    wait_for(lambda: int(db.hget(keys.counters, "processed") or 0) > 0, 30, "the worker to start")
    process = fleet.workers["graceful"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "aggregator:" in process.stderr.read()
    assert db.xpending_range(keys.readings, "aggregators", "-", "+", 10, consumername="graceful") == []
