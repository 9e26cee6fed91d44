"""The notifier's hand-written HTTP/1.1 exchange against answers real servers give: chunked bodies,
bodies to the connection's end, HTTP/1.0, 100 Continue, 204, a connection closed mid-answer."""

from __future__ import annotations

import socket
import threading

import pytest

from consumers.notify.http_post import HttpTarget

ANSWERS = {
    "length": b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n",
    "to-close": b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\nbusy",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "continue": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad",
    "empty": b"HTTP/1.1 204 No Content\r\n\r\n",
    "cut": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    "garbage": b"SSH-2.0-OpenSSH\r\n",
}
EXPECTED = {"length": (202, "hello"), "chunked": (200, "abcde"), "to-close": (503, "busy"), "http10": (200, "ok"),
            "continue": (400, "bad"), "empty": (204, "")}


@pytest.fixture()
def server():
    """Answers each request on a connection with the canned answer named by its path, then closes
    the connection if that answer ends at close."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                data = b""
                while True:
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    if len(rest) < length:
                        continue
                    seen.append(data)
                    name = head.split(b" ")[1].decode().strip("/")
                    connection.sendall(ANSWERS[name])
                    data = b""
                    if name in ("to-close", "http10", "cut", "garbage"):
                        break

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1], seen
    listener.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_answers_are_read_whole_and_the_connection_kept_where_it_may_be(server, name):
    port, seen = server
    target = HttpTarget(f"http://127.0.0.1:{port}/{name}", 2.0)
    for _ in range(2):  # the second request reuses the connection or opens a new one
        result = target.post(b'{"a": 1}', {"webhook-id": "msg_1"})
        assert (result.status, result.detail) == EXPECTED[name]
    assert len(seen) == 2 and b"webhook-id: msg_1\r\n" in seen[0] and seen[0].endswith(b'{"a": 1}')
    target.close()


@pytest.mark.parametrize("name", ["cut", "garbage"])
def test_a_cut_or_foreign_answer_is_a_retryable_failure(server, name):
    port, _ = server
    result = HttpTarget(f"http://127.0.0.1:{port}/{name}", 2.0).post(b"{}", {})
    assert result.status is None and result.retryable and result.detail


def test_basic_auth_from_the_url_and_refused_connections(server):
    port, seen = server
    assert HttpTarget(f"http://user:p%40ss@127.0.0.1:{port}/length", 2.0).post(b"{}", {}).accepted
    assert b"Authorization: Basic dXNlcjpwQHNz\r\n" in seen[0] and b"p%40ss" not in seen[0]
    closed = socket.create_server(("127.0.0.1", 0))
    free = closed.getsockname()[1]
    closed.close()
    refused = HttpTarget(f"http://127.0.0.1:{free}/x", 1.0).post(b"{}", {})
    assert refused.status is None and refused.detail == "connection refused"
