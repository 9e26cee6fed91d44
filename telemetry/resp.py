"""What the hand-built transactions (the producer's appends, the worker's commits) are made of:
commands packed into Redis's wire format by hand, because redis-py's pipeline runs a WATCHed
transaction's reads one round trip each and packs arguments slower; and the connection they go
on, kept between calls because its WATCH is its own."""

from __future__ import annotations

import redis
from redis.connection import AbstractConnection


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def command(*args: str | bytes | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:  # a loop, not bulk() per argument: commits pack a few hundred arguments each
        value = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(value), value))
    return b"".join(parts)


class HeldConnection:
    """A connection taken from a client's pool and kept; dropped, with whatever it carries, on
    any doubt."""

    def __init__(self, db: redis.Redis) -> None:
        self.pool = db.connection_pool
        self.connection: AbstractConnection | None = None

    def held(self) -> tuple[AbstractConnection, bool]:
        """The connection, and whether it is new (carries nothing yet)."""
        if self.connection is not None and self.connection._sock is None:
            self.discard()  # closed under us (pool.disconnect()): sending would reconnect it, carrying nothing
        if self.connection is not None:
            return self.connection, False
        self.connection = self.pool.get_connection()
        return self.connection, True

    def discard(self) -> None:
        if self.connection is not None:
            connection, self.connection = self.connection, None
            connection.disconnect()
            self.pool.release(connection)

    def exchange(self, payload: bytes, replies: int) -> list:
        """Send the payload on the held connection, read its replies. Any failure drops the
        connection and is raised; so is a connection closed since it was taken, which would
        reconnect without what it carried."""
        connection = self.connection
        if connection is None or connection._sock is None:
            self.discard()
            raise redis.ConnectionError("the held connection was closed")
        try:
            connection.send_packed_command([payload], check_health=False)
            return [connection.read_response() for _ in range(replies)]
        except BaseException:
            self.discard()
            raise

    def executed(self, exec_reply: list | None) -> list | None:
        """EXEC's replies; None when it ran nothing (a watched key changed). An error inside the
        transaction is raised: sending it again would not change it."""
        if exec_reply is None:
            self.discard()
            return None
        failed = next((reply for reply in exec_reply if isinstance(reply, Exception)), None)
        if failed is not None:
            self.discard()
            raise failed
        return exec_reply
