from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from telemetry.embedded import PrivateRedisServer
from telemetry.errors import UsageError
from telemetry.keys import Keys
from telemetry.local_cluster import PrivateRedisCluster

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> PrivateRedisServer:
    server = PrivateRedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: PrivateRedisServer) -> str:
    """A clean database on the private server for each test."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def acl_server(tmp_path_factory):
    """A private redis-server that knows only the ACL roles of `python -m telemetry acl` (and a
    root user for the tests' own checks): tests/acl_helpers.py."""
    from tests.acl_helpers import AclServer

    server = AclServer(tmp_path_factory.mktemp("acl"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> PrivateRedisCluster:
    """Three masters on free ports, shared by the session's cluster tests."""
    cluster = PrivateRedisCluster(tmp_path_factory.mktemp("cluster"), masters=3)
    try:
        cluster.start()
    except UsageError as error:  # a redis-server built without cluster support
        cluster.stop()
        pytest.skip(f"no Redis Cluster here: {error}")
    yield cluster
    cluster.stop()


@pytest.fixture()
def cluster_url(redis_cluster: PrivateRedisCluster) -> str:
    """The cluster with every master emptied for each test."""
    for port in redis_cluster.master_ports():
        redis.Redis(port=port).flushall()
    return redis_cluster.url


@pytest.fixture()
def db(redis_url):
    import walrus

    client = walrus.Database.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture()
def fleet(redis_url, tmp_path):
    """Worker processes with the crash harness's rules, stopped whatever the test's outcome."""
    from tests.crash_harness import fleet_on  # the harness imports this module

    with fleet_on(redis_url, tmp_path) as workers:
        yield workers


@pytest.fixture()
def keys() -> Keys:
    return Keys()


def run_cli(module: str, *args: str, env_extra: dict | None = None, timeout: float = 120,
            input_text: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args` as a user would, with the test server's URL and no 6379 fallback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=ROOT, env=env, input=input_text)
