"""Settle time when replies are lost, against the fault-free run in the same benchmark.

A producer (20 sensors at 20 Hz for 30 s: 12,000 readings) and three workers reach a private
redis-server (AOF on) through a proxy that loses the reply to a given share of every command kind
and closes the connection, as a flaky network does (tests/lossy_proxy.py). Settle time runs from
the producer's start until every window is emitted and nothing is pending. The proxy counts lease
requests and checkpoint reads; what a run with losses makes beyond the fault-free run, divided by
the replies lost (per 1,000), is what lost replies cost. Each run is checked for exactly-once results
(windows against the readings, alerts against one uninterrupted worker's).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench_common import Figure, parser, print_figures

from telemetry.embedded import PrivateRedisServer
from tests.aggregation_helpers import counters
from tests.crash_harness import PARTITIONS, assert_reconciles, fleet_on, spawn, wait_until_settled
from tests.lossy_proxy import LossyProxy

PRODUCER_ARGS = ("--fleet", "lossy-", "20", "--rate", "20", "--duration", "30", "--spike-rate", "432",
                 "--partitions", str(PARTITIONS))
WORKERS = 3


def settle(drop_rate: float, timeout_s: float, seed: int) -> dict:
    """One run: settle seconds (None past the timeout), replies lost, lease requests, checkpoint reads."""
    with tempfile.TemporaryDirectory(prefix="telemetry-lossy-") as folder, \
            PrivateRedisServer(Path(folder)) as server:
        proxy = LossyProxy(server.port, drop_rate, seed=seed, kinds="all").start()
        try:
            with fleet_on(server.url, Path(folder)) as fleet:
                fleet.worker_url = proxy.url
                for name in range(WORKERS):
                    fleet.start_worker(f"w{name}")
                started = time.monotonic()
                producer = spawn("producers", *PRODUCER_ARGS, "--redis-url", proxy.url)
                producer.wait()
                if producer.returncode != 0:
                    raise SystemExit(f"bench_lossy: the producer failed: {producer.stderr.read()[-2000:]}")
                try:
                    wait_until_settled(fleet, timeout_s - (time.monotonic() - started))
                    seconds = time.monotonic() - started
                except AssertionError:
                    seconds = None
                    print(f"bench_lossy: {drop_rate:.0%} lost, not settled after {timeout_s:.0f} s: "
                          f"{counters(fleet.db, fleet.layout)}", file=sys.stderr)
                lost, leases, reads = proxy.dropped, proxy.lease_requests, proxy.checkpoint_reads
                fleet.stop_all()
                if seconds is not None:
                    assert_reconciles(fleet.db, fleet.layout)
        finally:
            proxy.stop()
    return {"seconds": seconds, "lost": lost, "lease_requests": leases, "checkpoint_reads": reads}


def main() -> None:
    arguments = parser(__doc__)
    arguments.add_argument("--drop-rate", type=float, default=0.10, help="share of replies lost (default 0.10)")
    arguments.add_argument("--timeout", type=float, default=200.0, help="give a run up after this many seconds")
    arguments.add_argument("--seed", type=int, default=1)
    args = arguments.parse_args()
    clean = settle(0.0, args.timeout, args.seed)
    lossy = settle(args.drop_rate, args.timeout, args.seed)
    print(f"bench_lossy: fault-free {clean}; {args.drop_rate:.0%} lost {lossy}", file=sys.stderr)
    lost = max(1, lossy["lost"])
    share = f"{args.drop_rate:.0%} lost replies"
    figures = [
        Figure("fault-free: settle time", clean["seconds"] or float("nan"), "s"),
        Figure(f"{share}: settle time", lossy["seconds"] or float("nan"), "s",
               "fault-free", clean["seconds"], "<= 2x" if args.drop_rate <= 0.1 else "<= 4x"),  # issue 23's targets
        Figure(f"{share}: replies lost", lossy["lost"], "replies"),
        # per 1,000: a few in a run of thousands of lost replies would print as 0.0 per one
        Figure(f"{share}: lease requests per 1,000 lost",
               1000 * (lossy["lease_requests"] - clean["lease_requests"]) / lost, "requests"),
        Figure(f"{share}: checkpoint reads per 1,000 lost",
               1000 * (lossy["checkpoint_reads"] - clean["checkpoint_reads"]) / lost, "reads"),
    ]
    print_figures("settle under lost replies, 12,000 readings", figures, args.json)


if __name__ == "__main__":
    main()
