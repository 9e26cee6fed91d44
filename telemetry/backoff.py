"""Retry delays that fit the fault: at once after a single failure (a lost reply, a dropped
connection, which a resend on a new connection settles), then exponential with jitter while
Redis keeps refusing, so that many clients coming back do not arrive together."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import redis

# Errors after which the same call may succeed later: the server is away, slow or loading its AOF,
# or a cluster is failing a master over to its replica (slots uncovered, TRYAGAIN, CLUSTERDOWN).
RETRYABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.exceptions.ClusterError,
             redis.exceptions.TryAgainError, redis.exceptions.SlotNotCoveredError)


@dataclass(slots=True)
class Backoff:
    initial_s: float = 0.1
    max_s: float = 5.0
    attempt: int = field(default=0)

    def next_delay(self) -> float:
        """0 for the first retry since the last reset, then initial_s doubling up to max_s, each
        drawn from its upper half."""
        self.attempt += 1
        if self.attempt == 1:
            return 0.0
        delay = min(self.max_s, self.initial_s * (2 ** (self.attempt - 2)))
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0
