"""A TCP proxy in front of Redis that lets a script call or a transaction run and then loses its reply.

Clients see a dropped connection after Redis has applied the call: exactly the case where a
resend must be harmless (a commit or a producer batch applied twice would count readings twice).
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class LossyProxy:
    target_port: int
    drop_rate: float
    seed: int = 0
    port: int = 0
    dropped: int = 0
    _server: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LossyProxy:
        self._rng = random.Random(self.seed)
        self._server = socket.create_server(("127.0.0.1", 0))
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
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"script_sent": False}
            threading.Thread(target=self._pipe, args=(client, upstream, state, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, state, False), daemon=True).start()

    def _lose_this_reply(self) -> bool:
        with self._lock:
            lose = self._rng.random() < self.drop_rate
            self.dropped += lose
            return lose

    def _pipe(self, source: socket.socket, sink: socket.socket, state: dict, to_server: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if to_server:
                    upper = data.upper()
                    state["script_sent"] = b"EVALSHA" in upper or b"EXEC\r\n" in upper
                elif state["script_sent"] and self._lose_this_reply():
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
