"""One POST over a kept-alive HTTP(S) connection, and what its outcome means for a retry:
2xx accepted; 4xx refused for good (429 Too Many Requests aside); 5xx, timeouts, refused or
reset connections worth another try. Standard library only: one connection per sink thread."""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from telemetry.errors import UsageError

RESPONSE_KEPT = 512  # characters of a refusing response kept in the dead letter


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
    """A URL and the connection kept open to it (reopened after any failure)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)

    def post(self, body: bytes, headers: dict[str, str], path: str | None = None) -> PostResult:
        if self._connection is None:
            self._connection = self._connect()
        try:
            self._connection.request("POST", path or self._path, body=body,
                                     headers={"Content-Type": "application/json", **headers})
            response = self._connection.getresponse()
            text = response.read().decode("utf-8", "replace")[:RESPONSE_KEPT]
        except (OSError, http.client.HTTPException) as error:
            self.close()
            return PostResult(None, _describe(error, self.timeout_s))
        if response.will_close:
            self.close()
        return PostResult(response.status, text)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _describe(error: Exception, timeout_s: float) -> str:
    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout_s:g}s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    return f"{error.__class__.__name__}: {error}"
