"""Partition leases: who owns a partition, for how long, and the fencing epoch its commits carry.

A lease is a Redis key holding the owner's token with a TTL; taking it bumps the partition's
epoch in the same script, and the commit script refuses any epoch but the current one. Leases
are renewed from a thread of their own, on a client of their own, and only while the main loop
shows progress, so a hung loop gives its partitions up. The owner also fences itself: past
`valid_until` (the monotonic time a renewal was sent, plus the TTL, less a margin) it stops
using the partition, whether or not Redis has expired the key yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from telemetry.backoff import RETRYABLE
from telemetry.keys import GroupKeys
from telemetry.scripts import load_script

SAFETY_MARGIN = 0.2  # of the TTL: what self-fencing keeps in hand for clock drift and slow replies


@dataclass(slots=True)
class Lease:
    keys: GroupKeys
    epoch: int
    valid_until: float  # time.monotonic()


def still_held(token: str, epoch: int, epoch_found: bytes | None, token_found: bytes | None) -> bool:
    """What a read of a partition's epoch and lease keys says of the owner with this token and
    epoch, as the commit script judges it: the epoch tells a later owner, the token an owner
    with the same epoch number (a failover that lost an increment)."""
    return epoch_found == str(epoch).encode() and token_found == token.encode()


class LeaseClient:
    def __init__(self, db: redis.Redis, token: str, ttl_ms: int) -> None:
        self.db = db
        self.token = token
        self.ttl_ms = ttl_ms
        self._acquire = load_script(db, "lease_acquire")
        self._renew = load_script(db, "lease_renew")
        self._release = load_script(db, "lease_release")

    def _valid_until(self, sent: float) -> float:
        return sent + self.ttl_ms / 1000 * (1 - SAFETY_MARGIN)

    def acquire(self, keys: GroupKeys) -> Lease | None:
        sent = time.monotonic()
        epoch = self._acquire(keys=[keys.lease, keys.epoch], args=[self.token, self.ttl_ms])
        return Lease(keys, int(epoch), self._valid_until(sent)) if epoch else None

    def renew(self, lease: Lease) -> bool:
        sent = time.monotonic()
        if self._renew(keys=[lease.keys.lease, lease.keys.epoch], args=[self.token, lease.epoch, self.ttl_ms]):
            lease.valid_until = self._valid_until(sent)
            return True
        return False

    def release(self, lease: Lease) -> None:
        self._release(keys=[lease.keys.lease], args=[self.token])


class LeaseRenewer:
    """Renews every held lease every TTL/3 while `progressing()` says the main loop is alive."""

    def __init__(self, client: LeaseClient, progressing: Callable[[], bool]) -> None:
        self.client = client
        self.progressing = progressing
        self.leases: dict[int, Lease] = {}
        self.lost: set[int] = set()  # partitions whose renewal was refused: the main loop drops them
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def hold(self, index: int, lease: Lease) -> None:
        with self.lock:
            self.leases[index] = lease
            self.lost.discard(index)

    def drop(self, index: int) -> Lease | None:
        with self.lock:
            self.lost.discard(index)
            return self.leases.pop(index, None)

    def valid(self, index: int) -> bool:
        with self.lock:
            lease = self.leases.get(index)
            return lease is not None and index not in self.lost and time.monotonic() < lease.valid_until

    def _run(self) -> None:
        interval = self.client.ttl_ms / 3000
        while not self._stop.wait(interval):
            if not self.progressing():
                continue  # a hung loop must lose its partitions: let the leases lapse
            with self.lock:
                held = list(self.leases.items())
            for index, lease in held:
                try:
                    renewed = self.client.renew(lease)
                except RETRYABLE:
                    continue  # valid_until runs out on its own if Redis stays away
                if not renewed:
                    with self.lock:
                        self.lost.add(index)
