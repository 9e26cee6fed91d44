"""The aggregator worker: owns some of the pipeline's partitions, and for each reads its readings
in order, processes them in memory and commits state, outputs and acknowledgements atomically,
fenced by the partition's epoch (a checked transaction, or the commit script).

Taking a partition over follows a fixed order: take the lease (which bumps the epoch and so
fences the previous owner), load the checkpoint, take over the entries still pending in the
group, process and commit them in id order, and only then read new entries. Reads are fenced
too: they run in a MULTI that WATCHes the epochs, after a read of the epochs and lease tokens,
so a worker that lost a partition cannot hide new entries in its own pending list. A partition
lost for any reason (fenced, lease lapsed, moved) takes its in-memory state with it; the next
owner starts from the checkpoint.

A transport error (a lost reply, a dropped connection) is not a loss: the worker retries at once,
then with backoff while Redis keeps refusing, and learns in one round trip whether each partition
is still its own and its last commit stands (consumers/standing.py). Where both hold it keeps its
in-memory state, processes any entries a lost read delivered to it, and goes on; a lease that
lapsed while nobody took the partition is taken again with the state kept. Only a partition that
was really taken over, or whose checkpoint moved, is reloaded.
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError
from redis.retry import Retry

from consumers.assignment import Membership, assign
from consumers.batch import Entry, build_batch, flat_fields, texts
from consumers.checkpoint import CommitRequest, commit_request, load_checkpoint
from consumers.commit_transaction import TransactionCommitter
from consumers.fenced_read import WatchedRead
from consumers.lease import Lease, LeaseClient, LeaseRenewer, still_held
from consumers.processor import Outputs, PartitionProcessor, WindowKey
from consumers.sensor_state import bucket_field, unpack_window
from consumers.settings import AggregatorSettings
from consumers.standing import Held, Standing, standings
from consumers.windows import Window
from telemetry.backoff import RETRYABLE, Backoff
from telemetry.connection import Client, as_text, client_like, is_cluster, refresh_topology
from telemetry.keys import GroupKeys
from telemetry.partitions import Layout
from telemetry.progress import ProgressLine
from telemetry.refusals import Retries
from telemetry.schema import FieldMap
from telemetry.scripts import ReplicaWait, load_script, run_pipelined, run_until_answered
from telemetry.stream_reads import read_streams
from telemetry.timeutil import now_ms, stream_id_key

PENDING_PAGE = 1000
STOP_POLL_S = 0.2  # a long retry delay still notices a stop request this often
WATCHED_KEY_CHANGED = "Watched variable changed."  # redis-py's WatchError when EXEC found a WATCHed key changed


@dataclass(slots=True)
class WorkerStats:
    entries: int = 0
    readings: int = 0
    dead_lettered: int = 0
    lost_to_trim: int = 0
    windows_emitted: int = 0
    alerts_emitted: int = 0
    commits: int = 0
    takeovers: int = 0
    fenced: int = 0
    unseen: int = 0  # entries a read whose reply was lost had delivered, found pending and processed


@dataclass(slots=True)
class OwnedPartition:
    index: int
    keys: GroupKeys
    lease: Lease
    processor: PartitionProcessor
    commit: int  # last commit applied
    position: str | None  # last entry id read
    fired: list[tuple[str, str]] = field(default_factory=list)  # (rule, severity) fired by the last commit
    committed_ids: list[str] = field(default_factory=list)  # entries the last commit acknowledged


@dataclass(frozen=True, slots=True)
class PreparedCommit:
    owned: OwnedPartition
    request: CommitRequest
    outputs: Outputs
    commit: int
    started: float  # perf_counter when the batch's commit was built, for the metric


class PartitionLost(Exception):
    """The partition is no longer ours (fenced, lease lapsed): drop it and its state."""


class AggregatorWorker:
    def __init__(self, db: Client, layout: Layout, field_map: FieldMap, settings: AggregatorSettings,
                 *, log=None, clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.layout = layout
        self.field_map = field_map
        self.settings = settings
        self.log = log or sys.stderr  # looked up now: a command may have replaced stderr (telemetry/logstream.py)
        self.clock = clock
        # Entries and state are bytes: decoding every field to str costs more than the rest of a batch.
        self.cluster = is_cluster(db)
        # On a cluster, redis-py would retry a lost connection inside a transaction on a new one,
        # without its WATCH: the fenced read must fail instead, and the loop reloads.
        self.raw = client_like(db, decode_responses=False, **({"retry": Retry(NoBackoff(), 0)} if self.cluster else {}))
        self.raw.set_response_callback("XREADGROUP", lambda response, **_: response)
        self.raw.set_response_callback("XCLAIM", lambda response, **_: response)
        self.raw.set_response_callback("XRANGE", lambda response, **_: response)
        renew_db = client_like(db, socket_timeout=max(1.0, settings.lease_ms / 4000))
        self.token = f"{settings.consumer}:{secrets.token_hex(4)}"
        self.leases = LeaseClient(db, self.token, settings.lease_ms)
        self.last_progress = time.monotonic()
        self.renewer = LeaseRenewer(LeaseClient(renew_db, self.token, settings.lease_ms), self._progressing)
        self.membership = Membership(db, layout.keys.members(settings.group), settings.consumer, settings.lease_ms,
                                     settings.settle_ms)
        self.commit_script = load_script(self.raw, "commit")
        self.wait = ReplicaWait("aggregator", settings.wait_replicas) if settings.wait_replicas else None
        # A step's commits go as one plain transaction where they can (one server, no WAIT), else
        # and after any doubt through the commit script (consumers/commit_transaction.py).
        self.transaction = None if self.cluster or self.wait else TransactionCommitter(self.raw)
        self.watched_read = None if self.cluster else WatchedRead(self.raw)  # consumers/fenced_read.py
        self.owned: dict[int, OwnedPartition] = {}
        self.next_beat_ms = 0
        self.caught_up = True  # the last read found fewer than --batch entries in every partition
        self.stats = WorkerStats()
        self.on_commit: Callable[[OwnedPartition, int, float], None] | None = None
        self._groups_ready: set[int] = set()
        self._said_start_ignored = False
        self.in_doubt = False  # a transport error left what Redis holds unknown: check before going on
        # retries: at once after a lost reply, then longer while Redis keeps refusing, but never
        # so long that the heartbeat and the leases lapse over a flaky connection alone
        self.retries = Retries(transport=Backoff(max_s=min(5.0, settings.lease_ms / 3000)))
        # a commit waits within its lease, refused or not: a longer wait would let it lapse
        self.commit_retries = Retries.within(1.0)

    def _progressing(self) -> bool:
        """Leases are renewed only while the loop finishes steps well within a lease."""
        return time.monotonic() - self.last_progress < self.settings.lease_ms / 3000

    # -- ownership ---------------------------------------------------------------------------

    def ensure_group(self, keys: GroupKeys) -> None:
        """Create the group on a partition stream; BUSYGROUP means it exists."""
        try:
            self.db.xgroup_create(keys.readings, self.settings.group,
                                  id="$" if self.settings.start == "new" else "0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
            if self.settings.start == "all" and not self._said_start_ignored:
                self._said_start_ignored = True
                print(f"aggregator: group {self.settings.group} exists: --start all is ignored, it goes on from its "
                      "own position (`consumers group reset --to start` starts it over)", file=self.log)

    def rebalance(self, now: int) -> None:
        members = self.membership.beat(now)
        wanted = set(assign(list(members), self.layout.count).get(self.settings.consumer, []))
        for index in sorted(set(self.owned) - wanted):
            self.hand_over(index)
        for index in sorted(wanted - set(self.owned)):
            self.take_over(index)

    def take_over(self, index: int) -> None:
        keys = self.layout.partitions[index].group(self.settings.group)
        if index not in self._groups_ready:
            self.ensure_group(keys)
            self._groups_ready.add(index)
        lease = self.leases.acquire(keys)
        if lease is None:
            return  # still held by its previous owner: its lease lapses or it hands over
        self.renewer.hold(index, lease)
        try:
            processing = self.settings.processing()
            checkpoint = load_checkpoint(self.raw, keys, processing.rolling)
            processor = PartitionProcessor(processing, checkpoint.sensors, checkpoint.clock_ms)
            owned = OwnedPartition(index, keys, lease, processor, checkpoint.commit, checkpoint.position)
            self.owned[index] = owned
            self.stats.takeovers += 1
            self._recover_pending(owned)
            self._commit(owned)
        except PartitionLost:
            self._drop(index)
        except RETRYABLE:
            # a takeover cut short starts over, at once: the lease is still ours, taking it again is immediate
            self._drop(index)
            self.next_beat_ms = 0
            raise

    def _recover_pending(self, owned: OwnedPartition) -> None:
        """Entries pending in the group are the previous owner's uncommitted reads (or ours, before a
        lost reply): process them first, in id order. Another consumer's are claimed, which counts
        a delivery; our own are re-read without counting, as a transport error is no delivery."""
        keys, group, me = owned.keys, self.settings.group, self.settings.consumer
        pending = []
        start = "-"
        while True:
            page = self.db.xpending_range(keys.readings, group, min=start, max="+", count=PENDING_PAGE)
            pending += page
            if len(page) < PENDING_PAGE:
                break
            start = f"({page[-1]['message_id']}"
        if not pending:
            return
        deliveries: dict[str, int] = {}
        others = [item["message_id"] for item in pending if item["consumer"] != me]
        mine = {item["message_id"] for item in pending if item["consumer"] == me}
        for item in pending:
            deliveries[item["message_id"]] = item["times_delivered"] + (item["consumer"] != me)
        found: dict[str, list[bytes] | None] = {}
        for offset in range(0, len(others), PENDING_PAGE):
            chunk = others[offset:offset + PENDING_PAGE]
            for entry_id, fields in self.raw.xclaim(keys.readings, group, me, 0, chunk) or []:
                if fields is not None:
                    found[entry_id.decode()] = flat_fields(fields)
        found.update(self._own_pending(keys, mine))
        entries: list[Entry] = [(entry_id, found.get(entry_id)) for entry_id in sorted(deliveries, key=stream_id_key)]
        self._apply(owned, entries, deliveries)

    def _own_pending(self, keys: GroupKeys, ids: set[str]) -> dict[str, list[bytes]]:
        """The fields of entries pending to this worker, read with XRANGE: a transport error is no
        delivery, so they are not claimed again. An entry trimmed away is absent."""
        if not ids:
            return {}
        ordered = sorted(ids, key=stream_id_key)
        return {text_id: flat_fields(fields)
                for entry_id, fields in self.raw.xrange(keys.readings, min=ordered[0], max=ordered[-1])
                if (text_id := entry_id.decode()) in ids}

    def hand_over(self, index: int) -> None:
        """A planned move: commit what is in hand, then release the lease at once."""
        owned = self.owned.get(index)
        if owned is None:
            return
        try:
            self._commit(owned)
            self.leases.release(owned.lease)
        except (PartitionLost, *RETRYABLE):
            pass  # the lease lapses by itself; the next owner takes over from the checkpoint
        self._drop(index)

    def _drop(self, index: int) -> None:
        self.owned.pop(index, None)
        self.renewer.drop(index)

    def release_all(self) -> None:
        for index in list(self.owned):
            self.hand_over(index)
        if self.transaction is not None:
            self.transaction.discard()
        if self.watched_read is not None:
            self.watched_read.discard()
        try:
            self.membership.leave()
        except RETRYABLE:
            pass

    # -- reading and processing --------------------------------------------------------------

    def _fenced_read(self) -> dict[int, list[Entry]]:
        """XREADGROUP of every owned partition, in a MULTI that fails if an epoch moved. One
        transaction may not span hash slots on a cluster: there each partition reads alone."""
        owned = [self.owned[index] for index in sorted(self.owned)]
        if not owned:
            return {}
        read: dict[int, list[Entry]] = {}
        for group in [[partition] for partition in owned] if self.cluster else [owned]:
            read.update(self._fenced_read_of(group))
        return read

    def _fenced_read_of(self, owned: list[OwnedPartition]) -> dict[int, list[Entry]]:
        epochs = [partition.keys.epoch for partition in owned]
        # the leases too, read not watched (renewals would abort the read): a token tells
        # apart two owners with one epoch number, as after a failover lost an increment
        keys = [key for partition in owned for key in (partition.keys.epoch, partition.keys.lease)]
        streams = [partition.keys.readings for partition in owned]
        group, consumer, count = self.settings.group, self.settings.consumer, self.settings.batch
        if self.watched_read is not None:  # one server: the WATCH and the reads in one round trip
            if self._stale(owned, self.watched_read.watch(epochs, keys)):
                self.watched_read.discard()  # and with it the WATCH
                return {}
            executed = self.watched_read.read(group, consumer, streams, count)
            if executed is None:
                return {}  # an epoch moved since the WATCH: the next read finds which
            return self._delivered(owned, executed[0])
        with self.raw.pipeline(transaction=True) as pipeline:
            try:
                pipeline.watch(*epochs)
                values = [pipeline.get(key) for key in keys]
            except redis.WatchError as error:  # redis-py's word for a connection lost while watching
                raise redis.ConnectionError(str(error)) from error
            if self._stale(owned, values):  # leaving the block UNWATCHes, riding out a dropped connection
                return {}
            pipeline.multi()
            pipeline.xreadgroup(group, consumer, dict.fromkeys(streams, ">"), count=count)
            try:
                reply = pipeline.execute()[0]
            except redis.WatchError as error:
                if str(error) == WATCHED_KEY_CHANGED:
                    return {}  # the next read finds which epoch moved
                # redis-py's word for a connection lost at EXEC: the read may have run and delivered
                # entries to this consumer that it never saw; a reload reads them from the pending list
                raise redis.ConnectionError(str(error)) from error
        return self._delivered(owned, reply)

    def _stale(self, owned: list[OwnedPartition], values: list) -> bool:
        """Whether any partition's epoch or lease (read in pairs) is no longer as this owner holds
        it: one taken over is dropped; one whose lease lapsed while nobody took it is taken again
        by the next step, state kept."""
        stale = [(p.index, epoch == str(p.lease.epoch).encode() and lease is None)
                 for p, epoch, lease in zip(owned, values[::2], values[1::2])
                 if not still_held(self.token, p.lease.epoch, epoch, lease)]
        for index, lapsed in stale:
            if lapsed:
                self.in_doubt = True
            else:
                self._fenced(index)
        return bool(stale)

    @staticmethod
    def _delivered(owned: list[OwnedPartition], reply) -> dict[int, list[Entry]]:
        """Each partition's entries in an XREADGROUP reply (none for a partition it leaves out)."""
        by_stream = {partition.keys.readings.encode(): partition.index for partition in owned}
        read: dict[int, list[Entry]] = {partition.index: [] for partition in owned}
        streams = reply.items() if isinstance(reply, dict) else (reply or [])  # RESP3 sends a map
        for stream, entries in streams:
            ids = texts([entry_id for entry_id, _ in entries])
            read[by_stream[stream]] = [(entry_id, flat_fields(fields)) for entry_id, (_, fields) in zip(ids, entries)]
        return read

    def _fenced(self, index: int) -> None:
        self.stats.fenced += 1
        print(f"aggregator: partition {index} was taken over by another worker; dropping it", file=self.log)
        self._drop(index)

    def _apply(self, owned: OwnedPartition, entries: list[Entry], deliveries: dict[str, int] | None = None) -> None:
        if not entries:
            return
        if owned.position is not None and stream_id_key(entries[0][0]) <= stream_id_key(owned.position):
            done = stream_id_key(owned.position)  # entries come in id order: only a takeover finds old ones
            applied = [entry for entry in entries if stream_id_key(entry[0]) > done]
            stale = [entry_id for entry_id, _ in entries if stream_id_key(entry_id) <= done]
            owned.processor.outputs.entry_ids += stale  # committed before: acknowledge only
            entries = applied
        if not entries:
            return
        batch = build_batch(entries, self.field_map, self.clock(), self.settings.max_skew_ms, deliveries,
                            self.settings.max_deliveries)
        wanted = owned.processor.windows_to_fetch(batch)
        if wanted:  # read before anything is applied: a lost reply leaves the processor as it was
            owned.processor.provide(self._kept_windows(owned, wanted))
        owned.processor.apply(batch)
        owned.position = entries[-1][0]
        self.stats.entries += len(entries)
        self.stats.readings += len(batch.readings)
        self.stats.dead_lettered += len(batch.dead_letters)
        self.stats.lost_to_trim += len(batch.lost_ids)

    def _kept_windows(self, owned: OwnedPartition, wanted: list[WindowKey]) -> dict[WindowKey, Window | None]:
        """The emitted windows late readings revise. A slot holding another window (one past the
        allowed lateness) means this one was never emitted."""
        settings = owned.processor.settings
        fields = [bucket_field(sensor, settings.window_slot(start)) for sensor, start in wanted]
        found: dict[WindowKey, Window | None] = {}
        for key, packed in zip(wanted, self.raw.hmget(owned.keys.windows, fields)):
            window = None if packed is None else unpack_window(packed)
            found[key] = window if window is not None and window.start_ms == key[1] else None
        return found

    # -- committing --------------------------------------------------------------------------

    def _prepare(self, owned: OwnedPartition) -> PreparedCommit | None:
        outputs = owned.processor.take_outputs()
        if not outputs:
            return None
        now = self.clock()
        commit = owned.commit + 1
        meta = {"partition": str(owned.index), "epoch": str(owned.lease.epoch), "batch": str(commit),
                "emitted_ms": str(now)}
        request = commit_request(owned.keys, self.token, owned.lease.epoch, commit, owned.processor, outputs, meta,
                                 self.settings.output_maxlen)
        return PreparedCommit(owned, request, outputs, commit, time.perf_counter())

    def _commit(self, owned: OwnedPartition) -> None:
        prepared = self._prepare(owned)
        if prepared is not None:
            self._finish(prepared, self._send(owned, prepared.request))

    def _commit_all(self, partitions: list[OwnedPartition]) -> None:
        """Every partition's commit in one round trip; any commit without an answer is resent
        alone, unchanged (a resend after a lost reply is answered DUPLICATE)."""
        prepared = [commit for owned in partitions if (commit := self._prepare(owned)) is not None]
        if not prepared:
            return
        replies: list = [None] * len(prepared)
        if all(self.renewer.valid(commit.owned.index) for commit in prepared):
            acked = None if self.transaction is None else self.transaction.commit(
                [commit.request for commit in prepared])
            replies = ([[b"OK", count] for count in acked] if acked is not None else
                       run_pipelined(self.raw, self.commit_script,
                                     [commit.request.script_call() for commit in prepared], self.wait))
        for commit, reply in zip(prepared, replies):
            try:
                if reply is None or isinstance(reply, Exception):
                    reply = self._send(commit.owned, commit.request)
                self._finish(commit, reply)
            except PartitionLost:
                continue

    def _finish(self, prepared: PreparedCommit, reply: list) -> None:
        owned = prepared.owned
        outcome = as_text(reply[0])
        if outcome == "FENCED":
            self._fenced(owned.index)
            raise PartitionLost(owned.index)
        if outcome not in ("OK", "DUPLICATE"):
            detail = as_text(reply[1])
            print(f"aggregator: commit of partition {owned.index} refused ({outcome} {detail}); "
                  "dropping the partition to reload it from its checkpoint", file=self.log)
            self._drop(owned.index)
            raise PartitionLost(owned.index)
        outputs = prepared.outputs
        owned.commit = prepared.commit
        self.stats.commits += 1
        self.stats.windows_emitted += len(outputs.aggregates)
        self.stats.alerts_emitted += len(outputs.alerts)
        owned.fired = [(event.rule, event.severity) for event in outputs.alerts if event.state == "firing"]
        owned.committed_ids = outputs.entry_ids
        if self.on_commit is not None:
            self.on_commit(owned, outputs.counters.get("processed", 0), time.perf_counter() - prepared.started)

    def _send(self, owned: OwnedPartition, request: CommitRequest) -> list:
        """Send until Redis answers; the same request each time, so a resend after a lost reply is
        answered DUPLICATE. Gives the partition up once its lease can no longer be trusted."""
        def lease_still_held() -> None:
            if not self.renewer.valid(owned.index):
                print(f"aggregator: lease of partition {owned.index} lapsed before its commit was confirmed; "
                      "dropping it", file=self.log)
                self._drop(owned.index)
                raise PartitionLost(owned.index)

        return run_until_answered(self.raw, self.commit_script, [request.script_call()], self.wait,
                                  self.commit_retries, self._say, f"the commit of partition {owned.index}",
                                  lease_still_held)[0]

    # -- the loop ----------------------------------------------------------------------------

    def step(self, now: int) -> int:
        """One unit of work at wall-clock `now`: rebalance when due, read, process, commit.
        Returns the number of entries read."""
        lapsed = [index for index in self.owned if not self.renewer.valid(index)]
        if self.in_doubt or lapsed:
            self._settle_doubt(sorted(self.owned) if self.in_doubt else lapsed)
        if now >= self.next_beat_ms:
            self.next_beat_ms = now + min(1000, self.settings.lease_ms // 5)
            self.rebalance(now)
        read = self._fenced_read()
        handled = 0
        self.caught_up = True
        for index, entries in read.items():
            owned = self.owned[index]
            self._apply(owned, entries)
            handled += len(entries)
            caught_up = len(entries) < self.settings.batch
            owned.processor.observe(now, caught_up=caught_up)
            self.caught_up &= caught_up
        self._commit_all([self.owned[index] for index in read if index in self.owned])
        self.last_progress = time.monotonic()
        return handled

    def wait_for_entries(self) -> None:
        """Block until an owned partition has entries past what was read, or `block_ms` passes."""
        streams = {owned.keys.readings: owned.position or "$" for owned in self.owned.values()}
        if not streams:
            time.sleep(self.settings.block_ms / 1000)
            return
        timeout_ms = max(1, min(self.settings.block_ms, self.next_beat_ms - self.clock()))
        if read_streams(self.db, streams, count=1, block_ms=timeout_ms) and self.settings.linger_ms:
            time.sleep(self.settings.linger_ms / 1000)  # a producer's write lands in every partition

    def drained(self) -> bool:
        """Every partition's group has nothing pending and nothing unread (whoever owns it)."""
        for partition in self.layout.partitions:
            try:
                groups = self.db.xinfo_groups(partition.readings)
            except redis.ResponseError:
                continue  # no stream yet
            group = next((g for g in groups if g["name"] == self.settings.group), None)
            if group is None:
                return False
            if group["pending"] or self.db.xrange(partition.readings, min=f"({group['last-delivered-id']}", count=1):
                return False
        return True

    def run(self, stop_requested: Callable[[], bool]) -> WorkerStats:
        """Loop until stopped or a bound is reached, riding out Redis outages with backoff. On stop,
        the batch in hand is committed and every lease released."""
        self.renewer.start()
        progress = ProgressLine("aggregator", "entries processed", self.settings.count, self.log, every_s=30.0,
                                details=lambda: f"{len(self.owned)} of {self.layout.count} partitions owned, "
                                                f"{self.stats.windows_emitted:,} windows, "
                                                f"{self.stats.alerts_emitted:,} alerts")
        try:
            return self._run(stop_requested, progress)
        finally:
            progress.close()
            self.renewer.stop()
            try:
                self.release_all()
            except RETRYABLE:
                pass  # leases lapse by themselves

    def _run(self, stop_requested: Callable[[], bool], progress: ProgressLine) -> WorkerStats:
        settings = self.settings
        started = self.clock()
        while not stop_requested():
            if settings.count is not None and self.stats.entries >= settings.count:
                break
            if settings.duration_ms is not None and self.clock() - started >= settings.duration_ms:
                break
            try:
                beat_due_ms = self.next_beat_ms
                handled = self.step(self.clock())
                progress.add(handled)
                self.retries.transport.reset()
                # a step that beat ran every kind of command: anything refused before went through
                if self.next_beat_ms > beat_due_ms and (ended := self.retries.went_through()) is not None:
                    print(f"aggregator: {ended}", file=self.log)
                if handled == 0 and settings.drain and self.owned and self.drained():
                    break
                if self.caught_up:  # another read now would find little or nothing: wait for more
                    self.wait_for_entries()
            except (*RETRYABLE, NoPermissionError) as error:  # an ACL refusal: until an operator fixes it
                self.in_doubt = True  # the next step first checks what Redis holds
                pause = time.monotonic() + self._retry_delay(error)
                while not stop_requested() and time.monotonic() < pause:
                    time.sleep(min(STOP_POLL_S, max(0.0, pause - time.monotonic())))
                self.last_progress = time.monotonic()
        return self.stats

    def _retry_delay(self, error: Exception) -> float:
        """How long to wait before the next step, said in the log (telemetry/refusals.Retries): a
        transport error also refreshes a cluster's map of its masters."""
        delay, line = self.retries.failed(error)
        if not isinstance(error, NoPermissionError):
            refresh_topology(self.raw)
        if line is not None:
            self._say(line)
        return delay

    def _say(self, line: str) -> None:
        print(f"aggregator: {line}", file=self.log)

    # -- after a doubt -----------------------------------------------------------------------

    def _settle_doubt(self, indexes: list[int]) -> None:
        """One round trip says, for each partition, whether it is still ours and its last commit
        stands; the in-memory state is kept where both hold (consumers/standing.py)."""
        held = [Held(index, owned.keys, owned.lease.epoch, owned.commit, owned.position)
                for index in indexes if (owned := self.owned.get(index)) is not None]
        found = standings(self.raw, self.token, self.settings.consumer, held, self.settings.batch)
        self.in_doubt = False
        self.retries.transport.reset()  # Redis answers: the next lost reply is a single one again, retried at once
        for standing in found:
            if self._still_ours(standing):
                owned = self.owned[standing.index]
                unseen = set(standing.unseen)
                found_fields = self._own_pending(owned.keys, unseen)
                self._apply(owned, [(entry_id, found_fields.get(entry_id)) for entry_id in standing.unseen])
                self.stats.unseen += len(standing.unseen)
                self.in_doubt |= standing.more_unseen

    def _still_ours(self, standing: Standing) -> bool:
        """Keeps the partition, renewing or retaking its lease where it lapsed, or drops it."""
        index = standing.index
        owned = self.owned[index]
        if not standing.held and not standing.lapsed:
            self._fenced(index)
            return False
        if not standing.commit_stands:
            print(f"aggregator: the checkpoint of partition {index} is not at our last commit (Redis lost writes?); "
                  "reloading it", file=self.log)
            return self._reload(index)
        if standing.lapsed:
            # taking it again bumps the epoch by one exactly when nobody took it in between
            lease = self.leases.acquire(owned.keys)
            if lease is None or lease.epoch != owned.lease.epoch + 1:
                print(f"aggregator: the lease of partition {index} lapsed and another worker took it; reloading",
                      file=self.log)
                return self._reload(index)
            print(f"aggregator: the lease of partition {index} lapsed while nobody took it; taken again, state kept",
                  file=self.log)
            owned.lease = lease
        elif not self.renewer.valid(index) and not self.leases.renew(owned.lease):
            return self._reload(index)  # refused between the check and the renewal: taken over
        self.renewer.hold(index, owned.lease)
        return True

    def _reload(self, index: int) -> bool:
        """Drop the partition; the next rebalance, at once, takes it over from its checkpoint."""
        self._drop(index)
        self.next_beat_ms = 0
        return False
