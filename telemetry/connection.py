"""Which Redis to use, and a client connected to it: walrus on a single server, redis-py's
cluster client on a Redis Cluster (walrus does not speak cluster).

Order: --redis-url, then REDIS_URL, then a server already answering on localhost:6379, then the
embedded server. The choice is said in one line on stderr so nobody wonders where data went.
A URL naming any node of a cluster is enough: cluster mode is found with INFO cluster.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
import walrus
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster

from telemetry.embedded import EmbeddedRedis, answers, default_home
from telemetry.errors import RedisUnavailable, UsageError

LOCAL_DEFAULT_URL = "redis://127.0.0.1:6379/0"

# What every command holds: a single server's client (walrus.Database is one) or a cluster's.
Client = redis.Redis | RedisCluster


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


def _no_client_setinfo() -> dict:
    """CLIENT SETINFO (the library's name and version) costs two replies on every new connection:
    over a flaky network, two more chances for a reconnect to fail, for a label nothing reads."""
    parameters = inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    return {"driver_info": None} if "driver_info" in parameters else {"lib_name": None, "lib_version": None}


NO_CLIENT_SETINFO = _no_client_setinfo()


def connect(target: RedisTarget, *, announce: bool = True, timeout_s: float = 10.0) -> Client:
    """A client with decoded responses; fails fast with RedisUnavailable if nothing answers."""
    settings = {"decode_responses": True, "socket_connect_timeout": 2.0, "socket_timeout": timeout_s,
                "health_check_interval": 30, **NO_CLIENT_SETINFO}
    database = walrus.Database.from_url(target.url, **settings)
    with _refusals(target):
        database.ping()
        if not _cluster_enabled(database):
            if announce:
                print(target.describe(), file=sys.stderr)
            return database
        database.close()
        cluster = RedisCluster.from_url(target.url, **settings)
        cluster.source_url = target.url  # for client_like: a copy with other settings
        if announce:
            print(f"{target.describe()}, Redis Cluster of {len(cluster.get_primaries())} masters", file=sys.stderr)
        return cluster


def _cluster_enabled(database: redis.Redis) -> bool:
    """INFO is in the @dangerous ACL category: a user denied it is taken to be on a single server
    (on a cluster their first command then fails with MOVED, which names the cause)."""
    try:
        return bool(int(database.info("cluster").get("cluster_enabled", 0)))
    except redis.exceptions.NoPermissionError:
        return False


@contextmanager
def _refusals(target: RedisTarget) -> Iterator[None]:
    """Connection failures as one-line errors: unreachable is retried by long-running commands,
    refused credentials or a server that is not Redis are usage errors."""
    where = target.masked_url
    try:
        yield
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as error:
        raise UsageError(f"Redis at {where} refused the credentials: authentication failed ({error})") from None
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException,
            redis.exceptions.ClusterError) as error:
        raise RedisUnavailable(f"cannot reach Redis at {where}: {error}") from None
    except redis.ResponseError as error:  # e.g. a database number the server does not have
        raise UsageError(f"Redis at {where} refused the connection: {error}") from None
    except redis.RedisError as error:
        raise UsageError(f"{where} does not answer as a Redis server ({error.__class__.__name__})") from None


def is_cluster(db: Client) -> bool:
    return isinstance(db, RedisCluster)


def refresh_topology(db: Client) -> None:
    """Read a cluster's slot map again, after a node was lost or a slot moved; a client that does
    not retry by itself (or talks to nodes directly) would otherwise keep asking the dead node."""
    if not is_cluster(db):
        return
    try:
        db.nodes_manager.initialize()
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        pass  # mid-failover: the caller backs off and comes back here


def server_for(db: Client, key: str) -> redis.Redis:
    """The client of the server that holds `key`: the server itself, or the cluster node of its slot."""
    return db.get_redis_connection(db.get_node_from_key(key)) if is_cluster(db) else db


def client_like(db: Client, **overrides) -> Client:
    """A client to the same server or cluster on connections of its own, some settings changed."""
    if is_cluster(db):
        kept = {name: value for name, value in db.get_connection_kwargs().items()
                if name in ("decode_responses", "socket_connect_timeout", "socket_timeout", "health_check_interval")}
        copy = RedisCluster.from_url(db.source_url, **{**kept, **overrides})
        copy.source_url = db.source_url
        return copy
    pool = db.connection_pool
    return redis.Redis(connection_pool=type(pool)(connection_class=pool.connection_class,
                                                  **{**pool.connection_kwargs, **overrides}))


def undecoded_replies(db: Client, commands: list[tuple]) -> list:
    """Each command's reply with its values as Redis sent them, whatever the client decodes (a
    checkpoint's msgpack is not text). A command's second part is its key: it runs on the server
    that holds the key, in one pipeline per server."""
    by_server: dict[int, tuple[redis.Redis, list[int]]] = {}
    for index, command in enumerate(commands):
        server = server_for(db, command[1])
        by_server.setdefault(id(server), (server, []))[1].append(index)
    replies: list = [None] * len(commands)
    for server, indexes in by_server.values():
        pipeline = server.pipeline(transaction=False)
        for index in indexes:
            pipeline.execute_command(*commands[index], **{NEVER_DECODE: []})
        for index, reply in zip(indexes, pipeline.execute()):
            replies[index] = reply
    return replies
