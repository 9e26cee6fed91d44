"""The pipeline on a local Redis Cluster: every command unchanged, partitions spread over the
masters, workers killed at random with nothing lost or doubled, and a master failover."""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import pandas as pd
import pytest

from telemetry.errors import UsageError
from telemetry.local_cluster import PrivateRedisCluster
from tests.conftest import run_cli
from tests.crash_harness import (
    PARTITIONS,
    WINDOW_MS,
    Fleet,
    assert_reconciles,
    fleet_on,
    readings_of,
    run_kill_loop,
    spawn,
    wait_for,
    wait_until_settled,
)
from tests.test_crash_recovery import PRODUCER_ARGS


def other_node_url(cluster: PrivateRedisCluster) -> str:
    """Not the first node: any node must do."""
    return cluster.nodes[-1].url


def test_any_node_is_enough_and_partitions_spread_evenly_over_the_masters(cluster_url, redis_cluster):
    url = other_node_url(redis_cluster)
    produced = run_cli("producers", "a", "b", "c", "--count", "5", "--start=-1m", "--redis-url", url)
    assert produced.returncode == 0, produced.stderr
    assert "Redis Cluster of 3 masters" in produced.stderr
    status = run_cli("consumers", "status", "--json", "--redis-url", url)
    assert status.returncode == 0, status.stderr
    masters = Counter(row["master"] for row in json.loads(status.stdout)["partitions"])
    assert sorted(masters.values()) == [5, 5, 6], masters  # 16 partitions, the default
    assert set(masters) == {f"127.0.0.1:{port}" for port in redis_cluster.master_ports()}


def test_every_command_runs_unchanged_on_a_cluster(cluster_url, tmp_path):
    produced = run_cli("producers", "--fleet", "c-", "20", "--count", "120", "--rate", "2", "--spike-rate", "400",
                       "--start=-2h", "--redis-url", cluster_url)
    assert produced.returncode == 0, produced.stderr
    aggregated = run_cli("consumers", "aggregate", "--drain", "--start", "all", "--window", "10s", "--idle", "1s",
                         "--redis-url", cluster_url)
    assert aggregated.returncode == 0, aggregated.stderr
    assert "2400 readings" in aggregated.stderr
    for kind in ("readings", "aggregates", "alerts"):
        out = tmp_path / f"{kind}.csv"
        exported = run_cli("analytics", "export", "--kind", kind, "--out", str(out), "--redis-url", cluster_url)
        assert exported.returncode == 0, exported.stderr
        rows = pd.read_csv(out)
        assert len(rows) == 2400 if kind == "readings" else len(rows) > 0, kind
    report = run_cli("analytics", "report", "--json", "--redis-url", cluster_url)
    assert report.returncode == 0, report.stderr
    assert len(json.loads(report.stdout)["sensors"]) == 20
    alerts = run_cli("consumers", "alerts", "--from-start", "--no-follow", "--json", "--redis-url", cluster_url)
    assert alerts.returncode == 0, alerts.stderr
    assert alerts.stdout.count("\n") == len(pd.read_csv(tmp_path / "alerts.csv"))
    from tests.notify_helpers import SECRET, Receiver

    with Receiver() as receiver:
        notified = run_cli("consumers", "notify", "--webhook", receiver.url, "--start", "all", "--drain",
                           "--redis-url", cluster_url, env_extra={"TELEMETRY_WEBHOOK_SECRET": SECRET})
        assert notified.returncode == 0, notified.stderr
        assert len({r.headers["webhook-id"] for r in receiver.accepted()}) == alerts.stdout.count("\n")
    status = run_cli("consumers", "status", "--redis-url", cluster_url)
    assert status.returncode == 0 and "pending 0" in status.stdout, status.stdout + status.stderr
    assert f"webhook {receiver.url}: delivered {alerts.stdout.count(chr(10))}" in status.stdout, status.stdout


@pytest.mark.slow
def test_workers_killed_at_random_on_a_cluster_lose_and_double_nothing(cluster_url, tmp_path):
    with fleet_on(cluster_url, tmp_path) as fleet:
        fleet.start_worker("w0")
        producer = spawn("producers", *PRODUCER_ARGS, "--redis-url", cluster_url)
        run_kill_loop(fleet, producer, random.Random(11), sizes=(1, 2, 3, 3, 2, 1), min_kills=12)
        assert producer.returncode == 0, producer.stderr.read()
        if not fleet.workers:
            fleet.start_worker("last")
        wait_until_settled(fleet, timeout_s=90)
        fleet.stop_all()
        assert fleet.kills >= 12
        assert_reconciles(fleet.db, fleet.layout)


@pytest.mark.slow
def test_a_master_failover_carries_on_and_counts_what_it_lost_once(tmp_path):
    """kill -9 of a master while a producer and two workers run: its replica is promoted, they go
    on without a restart, and whatever the asynchronous replication lost is counted, not doubled."""
    cluster = PrivateRedisCluster(tmp_path / "cluster", masters=3, replicas=1, node_timeout_ms=1000)
    try:
        cluster.start()
    except UsageError as error:  # a redis-server without cluster support
        cluster.stop()
        pytest.skip(f"no Redis Cluster here: {error}")
    try:
        with fleet_on(cluster.url, tmp_path) as fleet:
            for name in ("w1", "w2"):
                fleet.start_worker(name)
            producer = spawn("producers", *PRODUCER_ARGS[:-4], "--duration", "20", "--partitions", str(PARTITIONS),
                             "--redis-url", cluster.url)
            time.sleep(5)
            # Not the node the test's own client was given: that one must answer after the failover.
            victim = next(port for port in cluster.master_ports() if port != cluster.nodes[0].port)
            cluster.node_on(victim).kill()
            wait_for(lambda: victim not in cluster.master_ports() and len(cluster.master_ports()) == 3, 30,
                     "a replica to be promoted")
            assert producer.wait(timeout=120) == 0, producer.stderr.read()
            assert all(process.poll() is None for process in fleet.workers.values()), "a worker died in the failover"
            wait_until_settled(fleet, timeout_s=90)
            fleet.stop_all()
            assert_counted_once(fleet)
    finally:
        cluster.stop()


def assert_counted_once(fleet: Fleet) -> None:
    """Over the readings that survived: each window exact and emitted once, each seq once, and
    every seq gap (a reading lost with the master) counted as missing exactly once."""
    from tests.aggregation_helpers import counters, latest_windows, outputs

    db, layout = fleet.db, fleet.layout
    readings = readings_of(db, layout)
    expected = Counter((r.sensor, r.ts_ms - r.ts_ms % WINDOW_MS) for r in readings)
    aggregates = latest_windows(outputs(db, layout, "aggregates"))
    emitted = {(row.sensor, int(row.window_start)): int(row.count) for row in aggregates.itertuples()}
    assert emitted == dict(expected)
    totals = counters(db, layout)
    assert totals["processed"] == len(readings)
    gaps = 0
    for sensor in {r.sensor for r in readings}:
        seqs = sorted(r.seq for r in readings if r.sensor == sensor)
        assert len(seqs) == len(set(seqs)), f"{sensor}: a seq twice"
        gaps += seqs[-1] + 1 - len(seqs)
    assert totals.get("missing_seq", 0) == gaps, (totals, gaps)
    assert not {"late", "duplicates", "dead_lettered"} & set(totals), totals
    print(f"failover: {gaps} readings lost with the master, counted as missing_seq")
