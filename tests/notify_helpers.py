"""A webhook receiver for the notifier's tests: a local HTTP server that answers as told (200,
500, 400, hang past the client's timeout, reset the connection), records every request, and
checks Standard Webhooks signatures with its own implementation of the spec (not the
notifier's): HMAC-SHA256 over "id.timestamp.body" with the key base64-decoded from whsec_."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import redis

from telemetry.keys import Keys
from telemetry.partitions import open_layout
from telemetry.records import AlertEvent

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiving side of Standard Webhooks, written from the spec."""
    key = base64.b64decode(secret.split("_", 1)[1])
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    expected = base64.b64encode(hmac.new(key, f"{message_id}.{timestamp}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
    given = [part.split(",", 1)[1] for part in headers["webhook-signature"].split(" ") if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, signature) for signature in given)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: str  # what the receiver did: ok, 500, 400, hang, reset
    at: float = field(default_factory=time.time)

    @property
    def json(self):
        return json.loads(self.body)


class Receiver:
    """`behaviour(request number, body) -> 'ok' | '500' | '400' | 'hang' | 'reset'`; default always ok."""

    def __init__(self, behaviour: Callable[[int, bytes], str] | None = None, hang_s: float = 3.0) -> None:
        self.behaviour = behaviour or (lambda number, body: "ok")
        self.hang_s = hang_s
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    number = len(receiver.requests)
                    action = receiver.behaviour(number, body)
                    receiver.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body, action))
                if action == "hang":
                    time.sleep(receiver.hang_s)
                    self.close_connection = True
                    return
                if action == "reset":  # RST instead of an answer
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                status = {"ok": 200, "500": 500, "400": 400}[action]
                answer = b'{"status":"ok"}' if status == 200 else b'{"error":"test says no"}'
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()

    def accepted(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.answered == "ok"]

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


PARTITIONS = 4


def alert_streams(db: redis.Redis) -> list[str]:
    return [group.alerts for group in open_layout(db, Keys(), PARTITIONS).groups("aggregators")]


def write_event(db: redis.Redis, event: AlertEvent) -> tuple[str, str]:
    """An alert event into its sensor's partition's alert stream, as a worker's commit writes it."""
    layout = open_layout(db, Keys(), PARTITIONS)
    stream = layout.partition_for(event.sensor).group("aggregators").alerts
    fields = event.fields()
    return stream, db.xadd(stream, dict(zip(fields[::2], fields[1::2])))


def event(sensor: str, number: int, state: str = "firing", rule: str = "hot", since: int = 1_700_000_000_000,
          kind: str = "threshold") -> AlertEvent:
    return AlertEvent(f"{rule}:{sensor}:{since + number}", rule, kind, sensor, "critical", state, 41.0 + number, 40.0,
                      since + number + 1000, "°C")


def pending_count(db: redis.Redis, group: str = "notifiers") -> int:
    return sum(db.xpending(stream, group)["pending"] for stream in alert_streams(db))
