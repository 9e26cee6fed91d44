"""A lost reply or a dropped connection costs a worker a retry, not a reload: it keeps its
partitions (no lease request, no checkpoint read) where nothing changed owner, and still finds
the entries a read whose reply was lost delivered to it. Real redis-server, reached through a
proxy that loses chosen replies (tests/lossy_proxy.py)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from redis.connection import AbstractConnection

from consumers.worker import AggregatorWorker
from telemetry.backoff import Backoff
from telemetry.connection import RedisTarget, client_like, connect
from telemetry.schema import Reading
from tests.aggregation_helpers import START, add_readings, counters, layout_of, make_worker, pending
from tests.crash_harness import wait_for
from tests.lossy_proxy import LossyProxy


def readings(first: int, count: int, sensors: int = 8) -> list[Reading]:
    return [Reading(f"s{n % sensors}", START + 100 * n, 20.0 + n % 7, 50.0, n // sensors)
            for n in range(first, first + count)]


@contextmanager
def running(worker: AggregatorWorker) -> Iterator[None]:
    """The worker's own loop, in a thread, stopped (gracefully) when the block ends."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop.is_set,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.fixture()
def proxy(redis_server):
    lossy = LossyProxy(redis_server.port, drop_rate=0.0).start()
    yield lossy
    lossy.stop()


def worker_through(proxy: LossyProxy, layout, **settings) -> AggregatorWorker:
    return make_worker(connect(RedisTarget(proxy.url, "test"), announce=False), layout, **settings)


def epochs(db, layout) -> list[int]:
    return [int(db.get(keys.epoch)) for keys in layout.groups("aggregators")]


def test_a_lost_read_reply_keeps_the_partitions_and_its_entries_are_processed_once(db, proxy):
    layout = layout_of(db, 2)
    add_readings(db, layout, readings(0, 100))
    worker = worker_through(proxy, layout, block_ms=5_000)
    with running(worker):
        wait_for(lambda: counters(db, layout).get("processed") == 100, 20, "the first readings")
        before = epochs(db, layout), proxy.lease_requests, proxy.checkpoint_reads
        proxy.lose_next = b"XREADGROUP"  # the worker waits in XREAD: its next fenced read finds these
        add_readings(db, layout, readings(100, 100))
        wait_for(lambda: counters(db, layout).get("processed") == 200 and pending(db, layout) == 0, 20,
                 "the readings the lost read delivered")
        after = epochs(db, layout), proxy.lease_requests, proxy.checkpoint_reads
    assert proxy.dropped == 1
    assert after == before, "a lost reply cost a lease request or a checkpoint read"
    assert worker.stats.unseen > 0, "the lost read delivered nothing: the test proved nothing"
    assert worker.stats.takeovers == 2
    assert counters(db, layout)["processed"] == 200


def test_a_lease_that_lapsed_while_nobody_took_the_partition_is_taken_again_with_its_state(
        db, proxy, redis_server):
    """Redis frozen past the lease: the worker's epoch is still the current one when it comes
    back, so it takes the lease again (epoch + 1) and keeps its state: no checkpoint read."""
    layout = layout_of(db, 2)
    add_readings(db, layout, readings(0, 100))
    worker = worker_through(proxy, layout, lease_ms=1_000)
    with running(worker):
        wait_for(lambda: counters(db, layout).get("processed") == 100, 20, "the first readings")
        before, reads = epochs(db, layout), proxy.checkpoint_reads
        redis_server.process.send_signal(signal.SIGSTOP)
        time.sleep(2.0)  # past the lease and its renewals
        redis_server.process.send_signal(signal.SIGCONT)
        wait_for(lambda: epochs(db, layout) == [epoch + 1 for epoch in before], 20, "the leases taken again")
        add_readings(db, layout, readings(100, 100))
        wait_for(lambda: counters(db, layout).get("processed") == 200 and pending(db, layout) == 0, 20,
                 "the readings after the pause")
        assert proxy.checkpoint_reads == reads, worker.log.getvalue()
    assert worker.stats.takeovers == 2
    assert counters(db, layout)["processed"] == 200


def test_a_partition_taken_over_while_the_owner_was_away_is_dropped_not_kept(db, proxy, redis_server):
    """The other side of keeping state: a worker whose partition another worker took while
    Redis did not answer it gives the partition up, and its late commits change nothing."""
    layout = layout_of(db, 1)
    add_readings(db, layout, readings(0, 50))
    first = worker_through(proxy, layout, lease_ms=1_000, consumer="first")
    first.step(START + 10**9)
    assert first.owned
    keys = layout.groups("aggregators")[0]
    db.delete(keys.lease)  # as if it lapsed while the owner was cut off
    second = make_worker(db, layout, lease_ms=1_000, consumer="second")
    second.take_over(0)
    assert second.owned, "the second worker did not take the free partition"
    first.in_doubt = True  # what the loop sets after a transport error
    add_readings(db, layout, readings(50, 50))
    first.step(START + 10**9)
    assert not first.owned and first.stats.fenced == 1
    first.release_all()  # leaves the membership: the partition is the second worker's alone
    while second.step(START + 10**9):
        pass
    assert counters(db, layout)["processed"] == 100 and pending(db, layout) == 0


def test_backoff_retries_at_once_then_waits_longer_with_jitter_up_to_its_cap():
    backoff = Backoff(initial_s=0.1, max_s=1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays[0] == 0.0, "a single lost reply is retried at once"
    assert 0.05 <= delays[1] <= 0.1 and 0.1 <= delays[2] <= 0.2 and 0.2 <= delays[3] <= 0.4
    assert all(0.5 <= delay <= 1.0 for delay in delays[5:]), "capped"
    backoff.reset()
    assert backoff.next_delay() == 0.0


def test_a_producer_whose_first_reads_go_unanswered_retries_instead_of_exiting(db, proxy):
    """Its saved seqs are read once at start; replies lost there, more times running than
    redis-py retries a command, are retried with backoff, not a traceback."""
    from tests.conftest import run_cli

    proxy.lose_next, proxy.lose_times = b"HMGET", 6
    produced = run_cli("producers", "p", "--count", "20", "--start=-1h", "--partitions", "2",
                       "--redis-url", proxy.url)
    assert produced.returncode == 0, produced.stderr[-3000:]
    assert "Traceback" not in produced.stderr and proxy.dropped == 6
    assert sum(db.xlen(partition.readings) for partition in layout_of(db, 2).partitions) == 20


def test_replies_lost_one_after_another_while_redis_answers_in_between_are_each_retried_at_once(db, proxy):
    """Backoff is for a Redis that keeps refusing: when the check after each lost reply is
    answered, the next lost reply is again a single one. Escalating instead (eight lost reads:
    seconds of sleep) let the leases lapse over a flaky connection alone."""
    layout = layout_of(db, 2)
    add_readings(db, layout, readings(0, 100))
    worker = worker_through(proxy, layout, lease_ms=1_000, block_ms=5_000)
    with running(worker):
        wait_for(lambda: counters(db, layout).get("processed") == 100, 20, "the first readings")
        before = epochs(db, layout)
        proxy.lose_next, proxy.lose_times = b"XREADGROUP", 8
        add_readings(db, layout, readings(100, 100))
        wait_for(lambda: counters(db, layout).get("processed") == 200 and pending(db, layout) == 0, 30,
                 "the readings after the lost replies")
    assert proxy.dropped == 8
    assert epochs(db, layout) == before, "the leases lapsed while the worker backed off"


@pytest.mark.parametrize("handshake", [b"SETINFO", b"HELLO", b"MAINT_NOTIFICATIONS", b"PING"])
def test_a_new_connection_waits_for_no_reply_before_its_first_command(db, proxy, handshake):
    """Replies a new connection waits for before its first command are more to lose on every
    reconnect: at 30% lost replies most reconnects failed before their first command (CLIENT
    SETINFO; with redis-py 8, HELLO and CLIENT MAINT_NOTIFICATIONS; the health check's PING).
    Nothing is sent before it now, on the first connection or a reconnect."""
    client = connect(RedisTarget(proxy.url, "test"), announce=False)
    proxy.lose_next, proxy.lose_times = handshake, 10
    fresh = client_like(client, decode_responses=False)
    assert fresh.get("absent") is None
    client.connection_pool.disconnect()
    assert client.get("absent") is None
    assert proxy.dropped == 0


def test_a_fenced_read_on_one_server_is_two_round_trips(db, proxy, monkeypatch):
    """Each round trip of a step is one more reply to lose: the WATCH of the epochs goes with
    the read of the epochs and leases, then MULTI XREADGROUP EXEC (redis-py's pipeline sent the
    WATCH and the reads one round trip each)."""
    layout = layout_of(db, 2)
    add_readings(db, layout, readings(0, 40))
    worker = worker_through(proxy, layout)
    worker.step(START)  # takes the partitions over
    add_readings(db, layout, readings(40, 40))
    sent = []
    send = AbstractConnection.send_packed_command
    monkeypatch.setattr(AbstractConnection, "send_packed_command",
                        lambda connection, *args, **kwargs: sent.append(args[0]) or send(connection, *args, **kwargs))
    read = worker._fenced_read()
    assert sum(len(entries) for entries in read.values()) == 40
    assert len(sent) == 2, sent
