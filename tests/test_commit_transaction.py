"""A worker's commits as a WATCH-checked MULTI/EXEC (consumers/commit_transaction.py), against a
real redis-server: the same writes as the commit script, and the same refusals."""

from __future__ import annotations

import redis

from consumers.batch import build_batch
from consumers.checkpoint import CommitRequest, commit_request
from consumers.commit_transaction import TransactionCommitter, transaction
from consumers.lease import LeaseClient
from consumers.worker import AggregatorWorker, OwnedPartition
from telemetry.schema import FieldMap, Reading
from tests.aggregation_helpers import START, add_readings, counters, drain, layout_of, make_worker, outputs, pending

LATER = START + 10**9


def readings(count: int = 60, sensors: int = 12) -> list[Reading]:
    return [Reading(f"s{i % sensors}", START + i // sensors * 1000, 20.0 + i % 7, 50.0, i // sensors)
            for i in range(count)]


def next_request(worker: AggregatorWorker, owned: OwnedPartition, reading: Reading) -> CommitRequest:
    """The commit of one more reading, prepared but not sent."""
    entry = [part for item in reading.encode().items() for part in item]
    owned.processor.apply(build_batch([("9999999999999-0", entry)], FieldMap(), LATER, 300_000))
    return commit_request(owned.keys, worker.token, owned.lease.epoch, owned.commit + 1, owned.processor,
                          owned.processor.take_outputs(), {"batch": str(owned.commit + 1)}, 1000)


def stepped_worker(db) -> tuple[AggregatorWorker, OwnedPartition]:
    layout = layout_of(db, 1)
    add_readings(db, layout, readings())
    worker = make_worker(db, layout, window_ms=2_000, grace_ms=0)
    worker.clock = lambda: LATER
    worker.step(LATER)
    worker.step(LATER)
    return worker, worker.owned[0]


def partition_snapshot(db, keys) -> tuple:
    return (db.hgetall(keys.checkpoint), db.hgetall(keys.counters), db.xlen(keys.aggregates),
            db.xpending(keys.readings, keys.group)["pending"])


def test_the_transaction_writes_what_the_script_writes(db):
    layout = layout_of(db, 2)
    add_readings(db, layout, readings(400, 20))
    sent = []
    by_transaction = make_worker(db, layout, group="transaction", window_ms=2_000, grace_ms=0, batch=17)
    commit = by_transaction.transaction.commit
    by_transaction.transaction.commit = lambda requests: sent.append(result := commit(requests)) or result
    drain(by_transaction, LATER)
    by_script = make_worker(db, layout, group="script", window_ms=2_000, grace_ms=0, batch=17)
    by_script.transaction = None
    drain(by_script, LATER)
    assert len(sent) > 10 and all(result is not None for result in sent)
    for partition in layout.partitions:
        one, other = partition.group("transaction"), partition.group("script")
        assert by_script.raw.hgetall(one.state) == by_script.raw.hgetall(other.state)
        assert db.hgetall(one.counters) == db.hgetall(other.counters)
        checkpoint = db.hgetall(one.checkpoint)
        assert checkpoint == db.hgetall(other.checkpoint) and int(checkpoint["commit"]) > 5
    columns = ["sensor", "window_start", "count", "temperature_c_mean", "temperature_c_std"]
    one, other = (outputs(db, layout, "aggregates", group)[columns].sort_values(columns[:2]).reset_index(drop=True)
                  for group in ("transaction", "script"))
    assert len(one) > 20 and one.equals(other)
    assert pending(db, layout, "transaction") == 0 == pending(db, layout, "script")


def test_a_takeover_between_the_check_and_exec_makes_exec_write_nothing(db):
    """The WATCH is what fences: a new owner bumps the epoch after the check passed."""
    worker, owned = stepped_worker(db)
    keys = owned.keys
    request = next_request(worker, owned, Reading("s0", START + 30_000, 21.0, 50.0, 30))
    before = partition_snapshot(db, keys)
    checked = worker.transaction._checked

    def usurped_after_check(requests) -> bool:
        passed = checked(requests)
        db.delete(keys.lease)
        LeaseClient(db, "usurper", 10_000).acquire(keys)
        return passed

    worker.transaction._checked = usurped_after_check
    assert worker.transaction.commit([request]) is None
    assert partition_snapshot(db, keys) == before
    script_keys, args = request.script_call()
    assert worker.commit_script(keys=script_keys, args=args)[0] == b"FENCED"


def test_an_owner_at_the_same_epoch_with_another_token_is_fenced(db):
    """After a failover lost an epoch increment, two owners can hold the same epoch number: the
    lease token tells them apart, as it does in the script."""
    worker, owned = stepped_worker(db)
    keys = owned.keys
    request = next_request(worker, owned, Reading("s0", START + 30_000, 21.0, 50.0, 30))
    db.set(keys.lease, "successor:0000", px=10_000)  # the epoch stays owned.lease.epoch
    before = partition_snapshot(db, keys)
    assert worker.transaction.commit([request]) is None
    assert partition_snapshot(db, keys) == before
    script_keys, args = request.script_call()
    assert worker.commit_script(keys=script_keys, args=args)[0] == b"FENCED"


def test_a_group_destroyed_under_the_owner_stops_the_transaction_before_any_write(db):
    worker, owned = stepped_worker(db)
    keys = owned.keys
    request = next_request(worker, owned, Reading("s0", START + 30_000, 21.0, 50.0, 30))
    db.xgroup_destroy(keys.readings, keys.group)
    before = (db.hgetall(keys.checkpoint), db.hgetall(keys.counters), worker.raw.hgetall(keys.state))
    assert worker.transaction.commit([request]) is None
    assert (db.hgetall(keys.checkpoint), db.hgetall(keys.counters), worker.raw.hgetall(keys.state)) == before
    assert worker.transaction.connection is None  # dropped, and its WATCH with it


def test_a_transaction_that_reaches_redis_after_its_resend_writes_nothing(db):
    """What a paused Redis or a slow network allows: the worker gave up on a transaction and
    resent the commit through the script, and then the transaction arrives. Its WATCH stops it."""
    worker, owned = stepped_worker(db)
    committer = TransactionCommitter(worker.raw)
    request = next_request(worker, owned, Reading("s0", START + 30_000, 21.0, 50.0, 30))
    committer.held()
    assert committer._checked([request])  # WATCH in place...
    held = committer.connection
    script_keys, args = request.script_call()
    assert worker.commit_script(keys=script_keys, args=args)[0] == b"OK"  # ... the resend lands first
    written = partition_snapshot(db, owned.keys)
    late = transaction([request])
    held.send_packed_command([late.payload])
    replies = [held.read_response() for _ in range(late.replies)]
    assert replies[-1] is None  # EXEC refused: the checkpoint moved
    assert partition_snapshot(db, owned.keys) == written
    committer.discard()


class ReplyLost:
    """In place of the committer's connection: the transaction runs, then the connection drops
    before its reply is read."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self._sock = connection._sock
        self.sent = 0
        self.dropped = 0

    def send_packed_command(self, payload, check_health=True) -> None:
        self.sent += 1
        self.connection.send_packed_command(payload, check_health=check_health)

    def read_response(self):
        if self.sent % 2:  # the WATCH and checks
            return self.connection.read_response()
        while not isinstance(self.connection.read_response(), list):  # MULTI's and QUEUED replies, then EXEC's
            pass
        self.dropped += 1
        raise redis.ConnectionError("connection dropped before the reply")

    def disconnect(self) -> None:
        self.connection.disconnect()


def test_a_lost_transaction_reply_is_resent_through_the_script_and_applied_once(db):
    layout = layout_of(db, 2)
    add_readings(db, layout, readings(200, 20))
    worker = make_worker(db, layout, window_ms=2_000, grace_ms=0, batch=50)
    worker.clock = lambda: LATER
    worker.step(LATER)
    committed = {index: partition.commit for index, partition in worker.owned.items()}
    lossy = worker.transaction.connection = ReplyLost(worker.transaction.held()[0])
    worker.step(LATER)  # the script, resent, answers DUPLICATE: one commit per partition, not two
    worker.transaction.pool.release(lossy.connection)  # the pool knows the real one, not the stand-in
    assert lossy.dropped == 1 and {index: partition.commit for index, partition in worker.owned.items()} == {
        index: commit + 1 for index, commit in committed.items()}
    drain(worker, LATER)
    assert counters(db, layout)["processed"] == 200 and pending(db, layout) == 0


def test_a_key_of_another_type_stops_the_transaction_before_any_write(db):
    worker, owned = stepped_worker(db)
    keys = owned.keys
    request = next_request(worker, owned, Reading("s0", START + 30_000, 21.0, 50.0, 30))
    db.set(keys.alerts, "not a stream")
    before = (worker.raw.hgetall(keys.state), partition_snapshot(db, keys))
    assert worker.transaction.commit([request]) is None
    assert (worker.raw.hgetall(keys.state), partition_snapshot(db, keys)) == before
    db.delete(keys.alerts)
    assert worker.transaction.commit([request]) == [0]  # its made-up entry id was never pending
    assert db.hget(keys.checkpoint, "commit") == str(request.commit)
