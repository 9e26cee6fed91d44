"""Which Redis to use, and a walrus Database connected to it.

Order: --redis-url, then REDIS_URL, then a server already answering on localhost:6379, then the
embedded server. The choice is said in one line on stderr so nobody wonders where data went.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
import walrus

from telemetry.embedded import EmbeddedRedis, answers, default_home
from telemetry.errors import RedisUnavailable, UsageError

LOCAL_DEFAULT_URL = "redis://127.0.0.1:6379/0"


def as_text(value: str | bytes) -> str:
    """A reply value as text, whichever client (decoding or raw) fetched it."""
    return value.decode() if isinstance(value, bytes) else value


def masked(url: str) -> str:
    """The URL without its password: what every message prints."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


@dataclass(frozen=True, slots=True)
class RedisTarget:
    url: str
    origin: str

    @property
    def masked_url(self) -> str:
        return masked(self.url)

    def describe(self) -> str:
        return f"redis: {self.masked_url} ({self.origin})"


def resolve_target(flag_url: str | None, env: Mapping[str, str] = os.environ) -> RedisTarget:
    for url, origin in ((flag_url, "--redis-url"), (env.get("REDIS_URL"), "REDIS_URL")):
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("redis", "rediss", "unix"):
                raise UsageError(f"{origin}: {masked(url)!r} is not a redis://, rediss:// or unix:// URL")
            try:
                parts.port  # noqa: B018 - raises on a port outside 0-65535
            except ValueError:
                raise UsageError(f"{origin}: {masked(url)!r} has a port outside 1-65535") from None
            return RedisTarget(url, origin)
    if answers(LOCAL_DEFAULT_URL):
        return RedisTarget(LOCAL_DEFAULT_URL, "server already on localhost:6379")
    home = default_home()
    return RedisTarget(EmbeddedRedis(home).ensure_running(), f"embedded redis-server, data in {home.name}/")


def connect(target: RedisTarget, *, announce: bool = True, timeout_s: float = 10.0) -> walrus.Database:
    """A walrus Database with decoded responses; fails fast with RedisUnavailable if nothing answers."""
    if announce:
        print(target.describe(), file=sys.stderr)
    database = walrus.Database.from_url(
        target.url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=timeout_s,
        health_check_interval=30,
    )
    try:
        database.ping()
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as error:
        raise UsageError(f"Redis at {target.masked_url} refused the credentials: authentication failed ({error})") from None
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise RedisUnavailable(f"cannot reach Redis at {target.masked_url}: {error}") from None
    except redis.ResponseError as error:  # e.g. a database number the server does not have
        raise UsageError(f"Redis at {target.masked_url} refused the connection: {error}") from None
    except redis.RedisError as error:
        raise UsageError(f"{target.masked_url} does not answer as a Redis server ({error.__class__.__name__})") from None
    return database
