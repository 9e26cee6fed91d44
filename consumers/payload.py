"""The commit script's input: a batch summarised per sensor and per window, as one msgpack document.

Redis runs one script at a time, so every microsecond it spends per reading caps the whole
fleet. The worker therefore does the per-reading arithmetic here, with numpy, and the script
merges per-sensor summaries: window partials (count, mean, M2, min, max: mergeable exactly, by
Chan's formula), rolling-window bucket partials (extremes with how many readings hold them,
sums shifted by the sensor's first reading), seq range, extremes and the largest rate of change
for screening alert rules. The raw readings travel too, because the script needs them to
index the rolling window and, for a sensor it cannot take the short way (readings out of order,
duplicates, late ones, entries claimed away, an alert rule that may change state), to apply
reading by reading.
"""

from __future__ import annotations

import json

import msgpack
import numpy as np

from consumers.batch import NO_SEQ, CommitBatch


def _reduce(op: np.ufunc, values: np.ndarray, starts: np.ndarray) -> list:
    return op.reduceat(values, starts).tolist()


def _runs(ts: np.ndarray, codes: np.ndarray, width_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of one sensor's readings in one time slot `width_ms` wide: slot start of each reading,
    where each run begins, and its length."""
    starts_ms = ts - ts % width_ms
    edges = np.flatnonzero(np.r_[True, (codes[1:] != codes[:-1]) | (starts_ms[1:] != starts_ms[:-1])])
    return starts_ms, edges, np.diff(np.r_[edges, len(ts)])


def _window_partials(ts: np.ndarray, t: np.ndarray, h: np.ndarray, codes: np.ndarray,
                     window_ms: int) -> tuple[np.ndarray, list[list]]:
    """Per run of one sensor's readings in one window: [start, n, t mean, t M2, t min, t max, h ..., first, last]."""
    starts_ms, edges, counts = _runs(ts, codes, window_ms)
    columns = [starts_ms[edges].tolist(), counts.tolist()]
    for values in (t, h):
        mean = np.add.reduceat(values, edges) / counts
        deviation = values - np.repeat(mean, counts)
        columns += [mean.tolist(), _reduce(np.add, deviation * deviation, edges),
                    _reduce(np.minimum, values, edges), _reduce(np.maximum, values, edges)]
    columns += [_reduce(np.minimum, ts, edges), _reduce(np.maximum, ts, edges)]
    return edges, [list(window) for window in zip(*columns)]


def _bucket_partials(ts: np.ndarray, t: np.ndarray, h: np.ndarray, codes: np.ndarray, bucket_ms: int,
                     shifted: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, list[list]]:
    """Per run of one sensor's readings in one rolling bucket: [start, then per metric min, how many
    hold it, max, how many hold it, then n, and per metric the sum and sum of squares of `shifted`]."""
    starts_ms, edges, counts = _runs(ts, codes, bucket_ms)
    columns = [starts_ms[edges].tolist()]
    for values in (t, h):
        for op in (np.minimum, np.maximum):
            extreme = op.reduceat(values, edges)
            columns += [extreme.tolist(),
                        _reduce(np.add, (values == np.repeat(extreme, counts)).astype(np.int64), edges)]
    columns.append(counts.tolist())
    for deviation in shifted:
        columns += [_reduce(np.add, deviation, edges), _reduce(np.add, deviation * deviation, edges)]
    return edges, [list(bucket) for bucket in zip(*columns)]


def _per_sensor(starts: np.ndarray, edges: np.ndarray, runs: list[list]) -> list[list[list]]:
    owner = (np.searchsorted(starts, edges, side="right") - 1).tolist()
    grouped: list[list[list]] = [[] for _ in range(len(starts))]
    for sensor, run in zip(owner, runs):
        grouped[sensor].append(run)
    return grouped


def commit_payload(batch: CommitBatch, window_ms: int, bucket_ms: int) -> bytes:
    readings = batch.readings
    document = {"lost": batch.lost_ids,
                "dead": [[dead.entry_id, dead.reason, json.dumps(dead.fields, sort_keys=True)]
                         for dead in batch.dead_letters],
                "sensors": []}
    if batch.handover_epoch is not None:
        document["epoch"] = batch.handover_epoch
    if not len(readings):
        return msgpack.packb(document)
    code_of: dict[str, int] = {}  # first-appearance order, as CommitBatch.sensors (the script's KEYS)
    codes = np.fromiter((code_of.setdefault(name, len(code_of)) for name in readings.sensors), np.int64,
                        len(readings))
    order = np.argsort(codes, kind="stable")  # by sensor, stream order within each
    codes, ts = codes[order], readings.ts_ms[order]
    t, h, seq = readings.temperature_c[order], readings.humidity_pct[order], readings.seq[order]
    index = order.tolist()
    ids = [readings.ids[i] for i in index]
    ts_list, t_list, h_list = ts.tolist(), t.tolist(), h.tolist()
    members = [readings.members[i] for i in index]
    by_time: list = [None] * (2 * len(members))
    by_time[0::2] = map(str, ts_list)  # scores as text: formatting numbers costs the script more than parsing
    by_time[1::2] = members

    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(ts)]
    counts = ends - starts
    same_sensor = codes[1:] == codes[:-1]
    step_ms = np.diff(ts)
    # In order: each reading later than the one before it, so none can be late or a duplicate
    # within the batch, and rate of change compares neighbours.
    out_of_order = np.r_[False, same_sensor & (step_ms <= 0)]
    ordered = np.maximum.reduceat(out_of_order, starts) == 0
    rates = []
    for values in (t, h):
        with np.errstate(divide="ignore", invalid="ignore"):
            per_min = np.where(same_sensor & (step_ms > 0), np.abs(np.diff(values)) / step_ms * 60_000, 0.0)
        rates.append(_reduce(np.maximum, np.r_[0.0, per_min], starts))
    bases = [values[starts] for values in (t, h)]  # each sensor's first reading: sums are shifted by it
    shifted = tuple(values - np.repeat(base, counts) for values, base in zip((t, h), bases))
    has_seq = seq != NO_SEQ
    seq_n = _reduce(np.add, has_seq.astype(np.int64), starts)
    seq_min = _reduce(np.minimum, np.where(has_seq, seq, np.iinfo(np.int64).max), starts)
    seq_max = _reduce(np.maximum, seq, starts)
    extremes = [_reduce(op, values, starts) for values in (t, h) for op in (np.minimum, np.maximum)]
    ts_min, ts_max = _reduce(np.minimum, ts, starts), _reduce(np.maximum, ts, starts)
    windows_of = _per_sensor(starts, *_window_partials(ts, t, h, codes, window_ms))
    buckets_of = _per_sensor(starts, *_bucket_partials(ts, t, h, codes, bucket_ms, shifted))

    names = list(code_of)
    t_base, h_base = (base.tolist() for base in bases)
    for k, (first, last) in enumerate(zip(starts.tolist(), ends.tolist())):
        document["sensors"].append({
            "name": names[codes[first]], "ids": ids[first:last],
            "by_time": by_time[2 * first:2 * last], "ordered": bool(ordered[k]), "windows": windows_of[k],
            "ts_min": ts_min[k], "ts_max": ts_max[k], "first_t": t_list[first], "first_h": h_list[first],
            "last_t": t_list[last - 1], "last_h": h_list[last - 1],
            "t_min": extremes[0][k], "t_max": extremes[1][k], "h_min": extremes[2][k], "h_max": extremes[3][k],
            "buckets": buckets_of[k],
            "t_rate": rates[0][k], "h_rate": rates[1][k],
            "t_base": t_base[k], "h_base": h_base[k],
            "seq_n": seq_n[k], "seq_min": seq_min[k] if seq_n[k] else NO_SEQ, "seq_max": seq_max[k],
            "arrival": int(ids[last - 1][:ids[last - 1].index("-")]),
        })
    return msgpack.packb(document)
