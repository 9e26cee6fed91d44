"""A sink delivers notices to one receiver, each sensor's in the order they were read, from threads
of its own: a slow or failing receiver holds up its own queues, never another sink's. Each notice is retried
with jittered exponential backoff while the receiver fails in a way that may pass (5xx, 429,
timeouts, refused or reset connections), and given up (dead-lettered, with the reason and the
response) on any other 4xx or when the attempts run out. Every notice ends either way, and only
then may the notifier acknowledge it; a notifier stopped mid-retry leaves it unacknowledged, so it
is sent again after a restart, with the same webhook-id."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
import traceback
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from consumers.notify import signing
from consumers.notify.http_post import HttpTarget, PostResult
from consumers.notify.messages import Notice, alertmanager_alert, webhook_body
from telemetry.connection import masked
from telemetry.timeutil import now_ms, stream_id_ms


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    initial_s: float = 0.5
    max_s: float = 30.0

    def delay_s(self, retry: int) -> float:
        """Before retry number `retry` (1, 2, ...): initial_s doubling up to max_s, drawn from its
        upper half, so receivers coming back are not hit by every sender at once."""
        return min(self.max_s, self.initial_s * 2 ** (retry - 1)) * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Rendering:
    """What every sink's messages say about the pipeline."""

    pipeline: str  # the `pipeline` label: the prefix's namespace
    external_url: str  # generatorURL base (the web page), the webhook's externalURL
    receiver: str = "telemetry"
    horizon_ms: int = 240_000  # a firing alert's endsAt ahead of now: 4 resend intervals, as Prometheus


@dataclass(slots=True)
class SinkCounts:
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    resent: int = 0
    resend_failed: int = 0


@dataclass(frozen=True, slots=True)
class GiveUp:
    """A notice (or several, sent together) a sink gave up on, for the dead-letter stream."""

    sink: Sink
    notices: list[Notice]
    reason: str
    result: PostResult
    attempts: int


@dataclass(slots=True)
class _Resend:
    alerts: list[dict] = field(default_factory=list)


class _Lane:
    """One thread, one connection, one queue: the notices of the sensors hashed to it, in order."""

    def __init__(self, sink: Sink, index: int, timeout_s: float) -> None:
        self.sink = sink
        self.target = HttpTarget(sink.endpoint(sink.url), timeout_s)
        self.counts = SinkCounts()
        self.queue: deque[Notice | _Resend] = deque()
        self.wake = threading.Condition()
        self.current: list[Notice] = []
        self.thread = threading.Thread(target=self._run, name=f"{sink.name} #{index}", daemon=True)

    def put(self, items: list) -> None:
        with self.wake:
            self.queue.extend(items)
            self.wake.notify()

    def oldest_ms(self) -> int | None:
        current = self.current
        if current:
            return stream_id_ms(current[0].entry_id)
        for item in list(self.queue):
            if isinstance(item, Notice):
                return stream_id_ms(item.entry_id)
        return None

    def _take(self) -> list[Notice] | _Resend | None:
        stopping = self.sink.stopping
        with self.wake:
            while not self.queue and not stopping.is_set():
                self.wake.wait(1.0)
            if stopping.is_set():
                return None
            if isinstance(self.queue[0], _Resend):
                return self.queue.popleft()  # type: ignore[return-value]
            batch: list[Notice] = []
            while self.queue and len(batch) < self.sink.batch_limit and isinstance(self.queue[0], Notice):
                batch.append(self.queue.popleft())  # type: ignore[arg-type]
            self.current = batch
            return batch

    def _run(self) -> None:
        while (item := self._take()) is not None:
            if isinstance(item, _Resend):
                self._resend(item)
                continue
            self._deliver(item)
            self.current = []
        self.target.close()

    def _deliver(self, notices: list[Notice]) -> None:
        sink, attempt = self.sink, 0
        while True:
            attempt += 1
            try:
                body, headers = sink.request(notices)
            except Exception as error:  # noqa: BLE001 - a notice no sink can render must not stop the lane
                traceback.print_exc(file=sys.stderr)
                result = PostResult(None, f"{error.__class__.__name__}: {error}")
                if sink.on_give_up(GiveUp(sink, notices, f"cannot render: {result.detail}", result, attempt)):
                    self.counts.dead_lettered += len(notices)
                    for notice in notices:
                        sink.on_done(notice)
                return
            result = self.target.post(body, headers)
            if result.accepted:
                self.counts.delivered += len(notices)
                break
            if not result.retryable or attempt >= sink.policy.max_attempts:
                reason = (f"refused: HTTP {result.status}" if not result.retryable
                          else f"gave up after {attempt} attempts: "
                               + (f"HTTP {result.status}" if result.status else result.detail))
                if not sink.on_give_up(GiveUp(sink, notices, reason, result, attempt)):
                    return  # stopped before the dead letter was written: left unacknowledged
                self.counts.dead_lettered += len(notices)
                break
            self.counts.retried += 1
            if sink.stopping.wait(sink.policy.delay_s(attempt)):
                return  # stopped: unacknowledged, so sent again by the next notifier to read it
        for notice in notices:
            sink.on_done(notice)

    def _resend(self, resend: _Resend) -> None:
        """Re-sends are repeated every interval anyway: one attempt each."""
        result = self.target.post(json.dumps(resend.alerts).encode(), {})
        if result.accepted:
            self.counts.resent += len(resend.alerts)
        else:
            self.counts.resend_failed += len(resend.alerts)


class Sink:
    """A receiver, served by `lanes` threads with a connection each; a sensor's notices always go
    to the same lane, so they arrive in order, while other sensors' overlap the wait for answers."""

    kind = ""
    batch_limit = 1  # notices per request

    def __init__(self, url: str, rendering: Rendering, policy: RetryPolicy, timeout_s: float, lanes: int = 1) -> None:
        self.url, self.rendering, self.policy = url, rendering, policy
        self.name = f"{self.kind} {masked(url)}"
        self.on_done: Callable[[Notice], None] = lambda notice: None
        self.on_give_up: Callable[[GiveUp], bool] = lambda give_up: True
        self.stopping = threading.Event()
        self.lanes = [_Lane(self, index, timeout_s) for index in range(lanes)]

    def endpoint(self, url: str) -> str:
        return url

    def bind(self, on_done: Callable[[Notice], None], on_give_up: Callable[[GiveUp], bool]) -> None:
        """Whom the sink tells, from its threads, that a notice ended: delivered, or given up
        (`on_give_up` writes the dead letter; False: it could not, the notice stays unfinished)."""
        self.on_done, self.on_give_up = on_done, on_give_up

    def start(self) -> Sink:
        for lane in self.lanes:
            lane.thread.start()
        return self

    @property
    def counts(self) -> SinkCounts:
        """Summed over the lanes (each lane counts alone: no lock on the hot path)."""
        total = SinkCounts()
        for lane in self.lanes:
            for name in SinkCounts.__slots__:
                setattr(total, name, getattr(total, name) + getattr(lane.counts, name))
        return total

    def submit(self, notices: list[Notice]) -> None:
        if len(self.lanes) == 1:
            self.lanes[0].put(notices)
            return
        by_lane: list[list[Notice]] = [[] for _ in self.lanes]
        for notice in notices:
            by_lane[zlib.crc32(notice.event.sensor.encode()) % len(self.lanes)].append(notice)
        for lane, items in zip(self.lanes, by_lane):
            if items:
                lane.put(items)

    def queued(self) -> int:
        return sum(len(lane.queue) + len(lane.current) for lane in self.lanes)

    def oldest_undelivered_ms(self) -> int | None:
        """Write time (the alert entry's id) of the oldest notice this sink has not finished."""
        found = [moment for lane in self.lanes if (moment := lane.oldest_ms()) is not None]
        return min(found) if found else None

    def stop(self, timeout_s: float) -> None:
        self.stopping.set()
        for lane in self.lanes:
            with lane.wake:
                lane.wake.notify()
        for lane in self.lanes:
            lane.thread.join(timeout_s)
            if lane.thread.is_alive():
                lane.target.abort()  # a request still waiting for its answer fails now; the lane closes it
                lane.thread.join(timeout_s)

    def request(self, notices: list[Notice]) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError


class AlertmanagerSink(Sink):
    """POST /api/v2/alerts, several notices per request; also takes the periodic re-sends of the
    alerts still firing (Alertmanager resolves an alert it stops hearing about)."""

    kind = "alertmanager"
    batch_limit = 64

    def endpoint(self, url: str) -> str:
        return url.rstrip("/") + "/api/v2/alerts"

    def request(self, notices: list[Notice]) -> tuple[bytes, dict[str, str]]:
        now, r = now_ms(), self.rendering
        alerts = [alertmanager_alert(n.event, r.pipeline, r.external_url, now, r.horizon_ms) for n in notices]
        return json.dumps(alerts, ensure_ascii=False).encode(), {}

    def resend(self, alerts: list[dict]) -> None:
        self.lanes[0].put([_Resend(alerts)])


class WebhookSink(Sink):
    """One notice per request: Alertmanager's webhook body, signed per Standard Webhooks with a
    timestamp per attempt and the notice's own webhook-id."""

    kind = "webhook"

    def __init__(self, url: str, rendering: Rendering, policy: RetryPolicy, timeout_s: float, key: bytes,
                 lanes: int = 4) -> None:
        super().__init__(url, rendering, policy, timeout_s, lanes)
        self._key = key

    def request(self, notices: list[Notice]) -> tuple[bytes, dict[str, str]]:
        (notice,) = notices
        r = self.rendering
        body = webhook_body(notice, r.pipeline, r.external_url, r.receiver)
        return body, signing.headers(self._key, notice.message_id, int(time.time()), body)
