"""One POST over a kept-alive HTTP(S) connection, and what its outcome means for a retry:
2xx accepted; 4xx refused for good (429 Too Many Requests aside); 5xx, timeouts, refused or
reset connections worth another try. Standard library only: one connection per sink lane."""

from __future__ import annotations

import base64
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from telemetry.errors import UsageError

RESPONSE_KEPT = 512  # characters of a refusing response kept in the dead letter
MAX_LINE = 65_536  # longest status or header line read
MAX_BODY = 1 << 20  # a longer answer is not read to its end: the connection is closed instead


@dataclass(frozen=True, slots=True)
class PostResult:
    status: int | None  # None: no HTTP answer (timeout, refused, reset)
    detail: str  # the response's first characters, or the transport error

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status == 429


def check_url(flag: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag} {url!r}: expected an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise UsageError(f"{flag} {url!r}: bad port") from None
    return url


class HttpTarget:
    """A URL and the connection kept open to it (reopened after any failure). HTTP/1.1 written and
    read by hand: http.client spends about 100 µs of CPU per request on header objects, five
    times what the exchange itself costs, and a notifier's throughput is its CPU per event."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = self._host if parts.port is None else f"{self._host}:{parts.port}"
        auth = ""
        if parts.username is not None:  # http://user:password@host/ as basic auth, never sent in the path
            token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
            auth = f"Authorization: Basic {token}\r\n"
        self._head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: telemetry-notify\r\n"
                      f"Content-Type: application/json\r\n{auth}").encode()
        self._socket: socket.socket | None = None
        self._reader = None

    def _connect(self) -> None:
        sock = socket.create_connection((self._host, self._port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self._host)
        self._socket, self._reader = sock, sock.makefile("rb")

    def post(self, body: bytes, headers: dict[str, str]) -> PostResult:
        try:
            if self._socket is None:
                self._connect()
            extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            self._socket.sendall(self._head + f"{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status, text, keep = self._response()
        except (OSError, ValueError) as error:
            self.close()
            return PostResult(None, _describe(error, self.timeout_s))
        if not keep:
            self.close()
        return PostResult(status, text)

    def _response(self) -> tuple[int, str, bool]:
        """Status, the body's first characters, and whether the connection may be kept."""
        reader = self._reader
        while True:
            line = reader.readline(MAX_LINE)
            if not line:
                raise ConnectionResetError("connection closed before an answer")
            version, _, rest = line.partition(b" ")
            if not version.startswith(b"HTTP/1."):
                raise ValueError(f"not an HTTP answer: {line[:80]!r}")
            status = int(rest[:3])
            headers = {}
            while (header := reader.readline(MAX_LINE)) not in (b"\r\n", b"\n", b""):
                name, _, value = header.partition(b":")
                headers[name.strip().lower()] = value.strip().lower()
            if status >= 200 or status == 101:
                break  # 1xx (100 Continue): the real answer follows
        keep = version != b"HTTP/1.0" and headers.get(b"connection") != b"close"
        if status in (204, 304):
            return status, "", keep
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            data = self._chunked()
        elif b"content-length" in headers:
            length = int(headers[b"content-length"])
            if length > MAX_BODY:
                return status, reader.read(RESPONSE_KEPT).decode("utf-8", "replace"), False
            data = reader.read(length)
            if len(data) < length:
                raise ConnectionResetError("connection closed in the answer's body")
        else:
            data, keep = reader.read(MAX_BODY), False  # the body runs to the connection's end
        return status, data[:RESPONSE_KEPT * 4].decode("utf-8", "replace")[:RESPONSE_KEPT], keep

    def _chunked(self) -> bytes:
        reader, data = self._reader, b""
        while True:
            size = int(reader.readline(MAX_LINE).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while reader.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return data
            chunk = reader.read(size + 2)
            if len(data) < MAX_BODY:
                data += chunk[:size]

    def close(self) -> None:
        sock, reader = self._socket, self._reader
        self._socket = self._reader = None
        for part in (reader, sock):
            if part is not None:
                try:
                    part.close()
                except OSError:
                    pass

    def abort(self) -> None:
        """From another thread: make a request under way fail at once (the sink is stopping)."""
        sock = self._socket
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _describe(error: Exception, timeout_s: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout_s:g}s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error}"
    return f"{error.__class__.__name__}: {error}"
