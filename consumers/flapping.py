"""Flap detection as Nagios does it (base/flapping.c): a rule's state on one sensor is recorded at
every evaluation, the last 21 states are kept, and each change between two neighbouring states
counts with a weight growing linearly from 0.75 (the oldest change) to 1.25 (the newest), so
recent changes count more. The percent state change is 100 x the weighted sum / 20. Flapping
starts at a percent >= `high` and stops at <= `low`; in between the previous verdict stands.

The history is 21 bits of an int, the newest state in bit 0: change j (bit j differs from bit
j + 1) is the change at Nagios' position x = 20 - j, with weight 0.75 + (x - 1) * 0.5 / 19.
A history whose states are all equal has no change and is not stored: the rule's episode says
which state it is (`consumers/alerting.py`), so steady rules cost nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

HISTORY = 21
FULL = (1 << HISTORY) - 1  # 21 states, all firing
LOW_WEIGHT, HIGH_WEIGHT = 0.75, 1.25
# WEIGHTS[j]: the weight of a change between the states j and j + 1 evaluations ago.
WEIGHTS = tuple(LOW_WEIGHT + (HISTORY - 2 - j) * (HIGH_WEIGHT - LOW_WEIGHT) / (HISTORY - 2)
                for j in range(HISTORY - 1))


@dataclass(frozen=True, slots=True)
class FlapLimits:
    """Percent state change that starts flapping (`high`) and that ends it (`low`)."""

    low: float = 20.0
    high: float = 30.0


def push(history: int, firing: bool) -> int:
    """The history with one more evaluation's state, the oldest dropped."""
    return ((history << 1) | firing) & FULL


def percent_change(history: int) -> float:
    """Nagios' curved percent state change of a 21-state history (newest state in bit 0), summed
    from the oldest change to the newest, as Nagios sums."""
    changes = history ^ (history >> 1)
    total = 0.0
    for j in range(HISTORY - 2, -1, -1):
        if changes >> j & 1:
            total += WEIGHTS[j]
    return total * 100.0 / (HISTORY - 1)


def history_of(states_oldest_first: list[bool]) -> int:
    """A history from states listed oldest first (tests, and reading a history aloud)."""
    history = 0
    for state in states_oldest_first[-HISTORY:]:
        history = push(history, state)
    return history


def verdict(flapping: bool, percent: float, limits: FlapLimits) -> bool:
    """Hysteresis: starts at >= high, stops at <= low, otherwise keeps the previous verdict."""
    if percent >= limits.high:
        return True
    if percent <= limits.low:
        return False
    return flapping
