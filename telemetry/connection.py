"""Which Redis to use, and a client connected to it: walrus on a single server, redis-py's
cluster client on a Redis Cluster (walrus does not speak cluster).

Order: --redis-url, then REDIS_URL, then a server already answering on localhost:6379, then the
embedded server. The choice is said in one line on stderr so nobody wonders where data went.
A URL naming any node of a cluster is enough: cluster mode is found with INFO cluster.
"""

from __future__ import annotations

import inspect
import os
import re
import ssl
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import redis
import walrus
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

from telemetry.embedded import EmbeddedRedis, answers, default_home
from telemetry.errors import RedisUnavailable, UsageError
from telemetry.refusals import NamesRefusals

LOCAL_DEFAULT_URL = "redis://127.0.0.1:6379/0"

# What every command holds: a single server's client (walrus.Database is one) or a cluster's.
Client = redis.Redis | RedisCluster


def as_text(value: str | bytes) -> str:
    """A reply value as text, whichever client (decoding or raw) fetched it."""
    return value.decode() if isinstance(value, bytes) else value


def masked(url: str) -> str:
    """The URL without its password (in the user part, or a unix:// URL's `password=`): what
    every message prints."""
    password = urlsplit(url).password
    if password:
        url = url.replace(f":{password}@", ":***@", 1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


# TLS: redis-py reads these from a rediss:// URL's query; each names a file that must be there.
TLS_FILE_PARAMETERS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
SKIP_VERIFY_FLAG = "--redis-tls-skip-verify"
PASSWORD_FILE_ENV = "TELEMETRY_REDIS_PASSWORD_FILE"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where to connect and as whom. The password from --redis-password-file is kept apart from
    the URL (and out of repr), so that nothing that prints the URL can print it."""

    url: str
    origin: str
    password: str | None = field(default=None, repr=False)
    tls_skip_verify: bool = False

    @property
    def masked_url(self) -> str:
        return masked(self.url)

    def __repr__(self) -> str:  # a traceback or a log of the target shows no password either
        return f"RedisTarget({self.masked_url!r}, {self.origin!r})"

    @property
    def username(self) -> str | None:
        return urlsplit(self.url).username

    def describe(self) -> str:
        return f"redis: {self.masked_url} ({self.origin})"

    def client_settings(self) -> dict:
        """What the URL does not say: the password from a file, and TLS verification on (host name
        included) unless --redis-tls-skip-verify was given."""
        settings: dict = {} if self.password is None else {"password": self.password}
        if urlsplit(self.url).scheme == "rediss":
            settings.update({"ssl_cert_reqs": "none", "ssl_check_hostname": False} if self.tls_skip_verify
                            else {"ssl_cert_reqs": "required", "ssl_check_hostname": True})
        return settings


def _checked_url(url: str, origin: str, tls_skip_verify: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise UsageError(f"{origin}: {masked(url)!r} is not a redis://, rediss:// or unix:// URL")
    try:
        parts.port  # noqa: B018 - raises on a port outside 0-65535
    except ValueError:
        raise UsageError(f"{origin}: {masked(url)!r} has a port outside 1-65535") from None
    query = dict(parse_qsl(parts.query))
    tls_options = sorted(name for name in query if name.startswith("ssl_"))
    if parts.scheme != "rediss":
        if tls_options:
            raise UsageError(f"{origin}: {', '.join(tls_options)} given for a {parts.scheme}:// URL, which does not "
                             "use TLS: use rediss://")
        if tls_skip_verify:
            raise UsageError(f"{SKIP_VERIFY_FLAG}: the Redis URL is not rediss://")
        return url
    unverified = [f"{name}={query[name]}" for name in ("ssl_cert_reqs", "ssl_check_hostname")
                  if name in query and query[name].lower() in ("none", "optional", "false", "no", "0", "off")]
    if unverified and not tls_skip_verify:
        raise UsageError(f"{origin}: {', '.join(unverified)} turns off checking the server's certificate; "
                         f"pass {SKIP_VERIFY_FLAG} if that is what you mean")
    for name in TLS_FILE_PARAMETERS:
        if name in query and not os.access(query[name], os.R_OK):
            raise UsageError(f"{origin}: {name}={query[name]}: no such file, or not readable")
    return url


def read_password_file(path: Path) -> str:
    """The first line of the file, without its line end (files written by `echo` end in one)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"--redis-password-file {path}: cannot read it ({error.strerror})") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise UsageError(f"--redis-password-file {path}: the file is empty")
    return password


def resolve_target(flag_url: str | None, env: Mapping[str, str] = os.environ, *, password_file: Path | None = None,
                   tls_skip_verify: bool = False) -> RedisTarget:
    """The URL, then its password: --redis-password-file, else $TELEMETRY_REDIS_PASSWORD_FILE (so
    that scripts and the processes they start find it as the commands do)."""
    if password_file is None and env.get(PASSWORD_FILE_ENV):
        password_file = Path(env[PASSWORD_FILE_ENV])
    password = read_password_file(password_file) if password_file else None
    for url, origin in ((flag_url, "--redis-url"), (env.get("REDIS_URL"), "REDIS_URL")):
        if url:
            _checked_url(url, origin, tls_skip_verify)
            if password is not None and urlsplit(url).password:
                raise UsageError(f"--redis-password-file: {origin} has a password too; give it once")
            return RedisTarget(url, origin, password, tls_skip_verify)
    if tls_skip_verify:
        raise UsageError(f"{SKIP_VERIFY_FLAG}: no rediss:// URL given")
    if answers(LOCAL_DEFAULT_URL):
        return RedisTarget(LOCAL_DEFAULT_URL, "server already on localhost:6379", password)
    home = default_home()
    return RedisTarget(EmbeddedRedis(home).ensure_running(), f"embedded redis-server, data in {home.name}/", password)


def _quiet_handshake(scheme: str) -> dict:
    """A new connection sends nothing before its first command, so a reconnect over a flaky
    network has no reply of its own to lose (at 30% lost replies a reconnect that waits for three
    replies first fails two times in three). So: RESP2 on a single server, which needs no HELLO
    (redis-py 8 speaks RESP3 by default, and with it asks for maintenance notifications: two
    replies), and no CLIENT SETINFO (the library's name and version: two replies, for a label
    nothing reads). Over TLS the HELLO stays: a TLS 1.3 server's session ticket, sent after the
    handshake, is read with the HELLO's reply; with nothing read, redis-py finds data waiting on
    the new connection and refuses it ("Connection not ready")."""
    parameters = inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    no_setinfo = {"driver_info": None} if "driver_info" in parameters else {"lib_name": None, "lib_version": None}
    return no_setinfo if scheme == "rediss" else {"protocol": 2, **no_setinfo}


class _StartsQuietly:
    """A connection just made is alive: its first command goes without the health check's PING
    (due at once on a new connection), one more reply to lose before it. Connections idle for
    `health_check_interval` are still checked before use."""

    def _connect(self):
        sock = super()._connect()
        self.next_health_check = time.monotonic() + self.health_check_interval
        return sock


class NamingConnection(NamesRefusals, _StartsQuietly, Connection):
    pass


class NamingSSLConnection(NamesRefusals, _StartsQuietly, SSLConnection):
    pass


class NamingUnixConnection(NamesRefusals, _StartsQuietly, UnixDomainSocketConnection):
    pass


def connection_class(scheme: str) -> type[redis.connection.AbstractConnection]:
    return {"rediss": NamingSSLConnection, "unix": NamingUnixConnection}.get(scheme, NamingConnection)


def connect(target: RedisTarget, *, announce: bool = True, timeout_s: float = 10.0) -> Client:
    """A client with decoded responses; fails fast with RedisUnavailable if nothing answers."""
    settings = {"decode_responses": True, "socket_connect_timeout": 2.0, "socket_timeout": timeout_s,
                "health_check_interval": 30, **_quiet_handshake(urlsplit(target.url).scheme), **target.client_settings()}
    database = walrus.Database.from_url(target.url, connection_class=connection_class(urlsplit(target.url).scheme),
                                        **settings)
    with _refusals(target):
        database.ping()
        if not _cluster_enabled(database):
            if announce:
                print(target.describe(), file=sys.stderr)
            return database
        database.close()
        # redis-py's own protocol there: its node clients leave RESP2 replies (HGETALL) unparsed
        cluster = RedisCluster.from_url(target.url, **{name: value for name, value in settings.items()
                                                       if name != "protocol"})
        cluster.source_url = target.url  # for client_like: a copy with other settings
        cluster.source_settings = target.client_settings()
        if announce:
            print(f"{target.describe()}, Redis Cluster of {len(cluster.get_primaries())} masters", file=sys.stderr)
        return cluster


def _cluster_enabled(database: redis.Redis) -> bool:
    """CLUSTER INFO answers on a cluster and is refused elsewhere; the usual way, INFO, is in the
    @dangerous ACL category, which the roles of `python -m telemetry acl` leave out. A user denied
    both is taken to be on a single server (on a cluster its first command then fails with MOVED,
    which names the cause)."""
    try:
        database.execute_command("CLUSTER INFO")
        return True
    except redis.exceptions.NoPermissionError:
        pass
    except redis.ResponseError:  # "This instance has cluster support disabled"
        return False
    try:
        return bool(int(database.info("cluster").get("cluster_enabled", 0)))
    except redis.exceptions.NoPermissionError:
        return False


def _tls_failure(error: BaseException) -> ssl.SSLError | None:
    """The TLS error under a redis-py ConnectionError, if that is what it was."""
    seen = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _scheme_hint(scheme: str, error: str) -> str:
    """A TLS port drops plain text; a plain port never answers a TLS hello: say which it may be."""
    if scheme == "redis" and ("closed" in error or "reset" in error):
        return " (if that port speaks TLS, use rediss://)"
    if scheme == "rediss" and "timeout" in error:
        return " (if that port does not speak TLS, use redis://)"
    return ""


@contextmanager
def _refusals(target: RedisTarget) -> Iterator[None]:
    """Connection failures as one-line errors: unreachable is retried by long-running commands;
    refused credentials, a failed TLS handshake or a server that is not Redis are usage errors,
    since waiting will not change them."""
    where = target.masked_url
    try:
        yield
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as error:
        raise UsageError(f"Redis at {where} refused the credentials: authentication failed ({error})") from None
    except redis.exceptions.NoPermissionError as error:
        raise UsageError(f"Redis at {where}: {error}") from None
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException,
            redis.exceptions.ClusterError) as error:
        tls = _tls_failure(error) or ("SSL" in str(error) and error)
        if tls:
            hint = ("does that port speak TLS?" if "WRONG_VERSION" in str(tls).upper() or "record" in str(tls)
                    else "check ssl_ca_certs (the CA that signed the server's certificate) and the host name")
            raise UsageError(f"TLS with Redis at {where} failed: {' '.join(str(tls).split())} ({hint})") from None
        hint = _scheme_hint(urlsplit(target.url).scheme, str(error).lower())
        raise RedisUnavailable(f"cannot reach Redis at {where}: {error}{hint}") from None
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
        copy = RedisCluster.from_url(db.source_url, **{**kept, **db.source_settings, **overrides})
        copy.source_url, copy.source_settings = db.source_url, db.source_settings
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
