"""A TCP proxy in front of Redis that lets a command run and then loses its reply.

Clients see a dropped connection after Redis has applied the call: exactly the case where a
resend must be harmless (a commit or a producer batch applied twice would count readings twice).
`kinds="scripts"` loses only replies to script calls and transactions (EVALSHA, EXEC);
`kinds="all"` loses the reply to any command, handshakes and blocking reads included, as a flaky
network does. The proxy also counts, in what clients send, the lease requests (calls of the
lease-acquire script) and the checkpoint reads (HGETALL of a state hash) a fault costs.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
from dataclasses import dataclass, field

from telemetry.scripts import lua_source

LEASE_REQUEST = hashlib.sha1(lua_source("lease_acquire").encode()).hexdigest().encode()
CHECKPOINT_READ = re.compile(rb"HGETALL\r\n\$\d+\r\n[^\r]*:state\r\n", re.IGNORECASE)
TAIL = 256  # bytes of a connection's previous chunk searched again, for a command split across chunks


@dataclass
class LossyProxy:
    target_port: int
    drop_rate: float
    seed: int = 0
    kinds: str = "scripts"  # or "all"
    port: int = 0
    dropped: int = 0
    lease_requests: int = 0
    checkpoint_reads: int = 0
    _server: socket.socket | None = None
    lose_next: bytes | None = None  # lose the reply to the next command whose bytes hold this
    lose_times: int = 1  # that many times running
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LossyProxy:
        if self.kinds not in ("scripts", "all"):
            raise ValueError(f"kinds: 'scripts' or 'all', not {self.kinds!r}")
        self._rng = random.Random(self.seed)
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                upstream.settimeout(None)
            except OSError:  # Redis is down: the client sees its connection closed
                client.close()
                continue
            state = {"script_sent": False}
            threading.Thread(target=self._pipe, args=(client, upstream, state, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, state, False), daemon=True).start()

    def _lose_this_reply(self) -> bool:
        with self._lock:
            lose = self._rng.random() < self.drop_rate
            self.dropped += lose
            return lose

    def _chosen(self, data: bytes) -> bool:
        with self._lock:
            if self.lose_next is None or self.lose_next not in data:
                return False
            self.lose_times -= 1
            if self.lose_times <= 0:
                self.lose_next = None
            self.dropped += 1
            return True

    def _count(self, tail: bytes, data: bytes) -> bytes:
        seen = tail + data
        leases = seen.count(LEASE_REQUEST) - tail.count(LEASE_REQUEST)
        reads = len(CHECKPOINT_READ.findall(seen)) - len(CHECKPOINT_READ.findall(tail))
        if leases or reads:
            with self._lock:
                self.lease_requests += leases
                self.checkpoint_reads += reads
        return seen[-TAIL:]

    def _pipe(self, source: socket.socket, sink: socket.socket, state: dict, to_server: bool) -> None:
        tail = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if to_server:
                    tail = self._count(tail, data)
                    upper = data.upper()
                    state["script_sent"] = self.kinds == "all" or b"EVALSHA" in upper or b"EXEC\r\n" in upper
                    state["chosen"] = state.get("chosen", False) or self._chosen(data)
                elif state.pop("chosen", False) or (state["script_sent"] and self._lose_this_reply()):
                    break  # Redis ran it; the client never hears so
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                end.close()
