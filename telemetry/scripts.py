"""The project's Lua scripts: loaded once per connection (redis-py reloads them after a server
restart), and called many at a time in one round trip per server.

redis-py's cluster pipeline refuses EVALSHA, so on a cluster the calls are grouped by the node
that holds their keys and sent as one plain pipeline per node, which also loads any script the
node lacks (a promoted replica has none). A node that answers MOVED or drops the connection
makes the client read the cluster's layout again before the caller resends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import redis
from redis.cluster import ClusterNode
from redis.commands.core import Script

from telemetry.backoff import RETRYABLE
from telemetry.connection import Client, is_cluster, refresh_topology
from telemetry.refusals import Retries

LUA_DIR = Path(__file__).resolve().parent / "lua"

# A script call's errors after which the same call may be sent again: transport errors, a server
# that restarted without the script, a cluster slot that moved (the layout is read again first).
# A refusal by an ACL is resent too: an operator may fix the user while the process waits.
RESENDABLE = (*RETRYABLE, redis.exceptions.NoScriptError, redis.exceptions.AskError,
              redis.exceptions.NoPermissionError)

# A call: the script's keys (all under one hash tag) and its arguments.
Call = tuple[list[str], list]


@dataclass(slots=True)
class ReplicaWait:
    """--wait-replicas: each pipelined write is followed, on the same connection, by WAIT until
    `replicas` replicas have it or `timeout_ms` passes. Replication stays asynchronous: this
    narrows what a failover can lose, it does not close it, so writes left unconfirmed are
    counted and said (at the 1st, 10th, 100th, ...)."""

    who: str  # the process, as its log lines start
    replicas: int
    timeout_ms: int = 1000
    unconfirmed: int = 0

    def check(self, acknowledged: object) -> None:
        if isinstance(acknowledged, int) and acknowledged >= self.replicas:
            return
        self.unconfirmed += 1
        if str(self.unconfirmed).rstrip("0") == "1":
            print(f"{self.who}: {self.unconfirmed} writes not confirmed by {self.replicas} replicas within "
                  f"{self.timeout_ms} ms (last answer: {acknowledged}); a failover now could lose them", file=sys.stderr)


@cache
def lua_source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


def load_script(db: Client, name: str) -> Script:
    return db.register_script(lua_source(name))


def run_pipelined(db: Client, script: Script, calls: list[Call], wait: ReplicaWait | None = None) -> list:
    """Each call's reply, in order; where a call failed, its exception in place of the reply."""
    if not is_cluster(db):
        return _run_on(db, script, calls, wait)
    by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
    try:
        for index, (keys, _) in enumerate(calls):
            node = db.get_node_from_key(keys[0])
            by_node.setdefault(node.name, (node, []))[1].append(index)
    except redis.exceptions.RedisClusterException as error:  # a slot with no master, mid-failover
        return [error] * len(calls)
    replies: list = [None] * len(calls)
    for node, indexes in by_node.values():
        client = db.get_redis_connection(node)  # made on first use for a node learnt from MOVED
        for index, reply in zip(indexes, _run_on(client, script, [calls[index] for index in indexes], wait)):
            replies[index] = reply
    if any(isinstance(reply, (redis.ConnectionError, redis.exceptions.AskError)) for reply in replies):
        refresh_topology(db)
    return replies


def resend_reason(replies: list) -> Exception | None:
    """The first failed call's error when a resend may succeed; None when every call succeeded.
    Any other error (a bug, a refused argument) is raised: resending would not change it."""
    failed = next((reply for reply in replies if isinstance(reply, Exception)), None)
    if failed is not None and not isinstance(failed, RESENDABLE):
        raise failed
    return failed


def run_until_answered(db: Client, script: Script, calls: list[Call], wait: ReplicaWait | None, retries: Retries,
                       say: Callable[[str], None], retrying: str,
                       before_each: Callable[[], None] = lambda: None) -> list:
    """Every call's reply, resending them all until Redis answers, with the retry policy of a
    long-running process (telemetry/refusals.Retries): the calls are idempotent, so a resend after
    a lost reply is harmless. `before_each` may raise to give up; `say` is given each line worth
    logging, `retrying` names what is resent."""
    while True:
        before_each()
        replies = run_pipelined(db, script, calls, wait)
        failed = resend_reason(replies)
        if failed is None:
            if (ended := retries.went_through()) is not None:
                say(ended)
            return replies
        delay, line = retries.failed(failed, retrying)
        if line is not None:
            say(line)
        time.sleep(delay)


def _run_on(client: redis.Redis, script: Script, calls: list[Call], wait: ReplicaWait | None) -> list:
    """One round trip: EVALSHA straight away. redis-py's own script calls in a pipeline ask
    SCRIPT EXISTS first, a second round trip on every write; instead a server without the script
    (restarted, flushed, a promoted replica) answers NOSCRIPT, and the calls, idempotent, are sent
    again once it is loaded."""
    replies = _evalsha_all(client, script, calls, wait)
    if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
        try:
            script.sha = client.script_load(script.script)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
                redis.exceptions.NoPermissionError) as error:  # the last: SCRIPT LOAD refused
            return [error] * len(calls)
        replies = _evalsha_all(client, script, calls, wait)
    return replies


def _evalsha_all(client: redis.Redis, script: Script, calls: list[Call], wait: ReplicaWait | None) -> list:
    pipeline = client.pipeline(transaction=False)
    for keys, args in calls:
        pipeline.evalsha(script.sha, len(keys), *keys, *args)
    if wait is not None:
        pipeline.execute_command("WAIT", wait.replicas, wait.timeout_ms)
    try:
        replies = pipeline.execute(raise_on_error=False)
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError,
            redis.exceptions.NoPermissionError) as error:
        return [error] * len(calls)
    if wait is not None:
        wait.check(replies.pop())
    return replies
