"""A worker's fenced read on one server in two round trips instead of three: WATCH of the
epochs with the read of the epochs and leases in one, MULTI XREADGROUP EXEC in the other.

redis-py's pipeline sends each command it runs while watching as a round trip of its own, and
over a flaky network each round trip is one more reply to lose, each loss a retry of the step
(scripts/bench_lossy.py). The commands and their order are the same: Redis runs the WATCH
before the reads, the check of epochs and leases is made in between, and EXEC runs nothing if
an epoch moved since the WATCH. A cluster keeps redis-py's pipeline (one partition per
transaction, on the node of its slot).
"""

from __future__ import annotations

from telemetry.resp import HeldConnection, command


class WatchedRead(HeldConnection):
    def watch(self, epochs: list[str], keys: list[str]) -> list[bytes | None]:
        """WATCH `epochs`, then the values of `keys`, in one round trip. The WATCH holds until
        `read` or `discard`."""
        self.held()
        return self.exchange(command("WATCH", *epochs) + command("MGET", *keys), 2)[1]

    def read(self, group: str, consumer: str, streams: list[str], count: int) -> list | None:
        """XREADGROUP of `streams` from `>` in MULTI/EXEC: EXEC's reply (XREADGROUP's as Redis
        sent it, nil when nothing was new, in a list of one), or None when a watched epoch moved
        (nothing was read). A lost reply is raised: the read may have run, and the entries it
        delivered are pending to this consumer."""
        payload = b"".join([command("MULTI"),
                            command("XREADGROUP", "GROUP", group, consumer, "COUNT", count, "STREAMS",
                                    *streams, *[">"] * len(streams)),
                            command("EXEC")])
        return self.executed(self.exchange(payload, 3)[-1])
