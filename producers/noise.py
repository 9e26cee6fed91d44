"""Counter-based random numbers: the value for (sensor key, seq, purpose) is a pure function.

A per-sensor numpy Generator would make each series depend on how many draws came before it and
on which sensors share the process; hashing the counters instead gives every named sensor the
same series whatever fleet it runs in, and stays vectorised over 10,000 sensors.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def sensor_key(name: str, seed: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest(), "little")


def _splitmix(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        mixed = values + _GOLDEN
        mixed = (mixed ^ (mixed >> np.uint64(30))) * _MIX_1
        mixed = (mixed ^ (mixed >> np.uint64(27))) * _MIX_2
    return mixed ^ (mixed >> np.uint64(31))


def uniform(keys: np.ndarray, counters: np.ndarray | int, purpose: int) -> np.ndarray:
    """Uniform in [0, 1) for each (key, counter) pair; `purpose` separates independent streams."""
    with np.errstate(over="ignore"):
        mixed = _splitmix(keys ^ _splitmix(np.asarray(counters, dtype=np.uint64) * np.uint64(0x100) + np.uint64(purpose)))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normal(keys: np.ndarray, counters: np.ndarray | int, purpose: int) -> np.ndarray:
    """Standard normal by Box-Muller over two independent uniforms."""
    u1 = uniform(keys, counters, purpose)
    u2 = uniform(keys, counters, purpose + 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
