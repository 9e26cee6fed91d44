"""The embedded redis-server: started once, shared by commands, persistent, stopped cleanly."""

from __future__ import annotations

import pytest
import redis

from telemetry import connection
from telemetry.embedded import EmbeddedRedis
from telemetry.errors import UsageError
from tests.conftest import run_cli


def test_started_once_shared_persistent_and_stopped(tmp_path):
    home = tmp_path / ".telemetry"
    embedded = EmbeddedRedis(home)
    try:
        url = embedded.ensure_running()
        assert ":6379/" not in url
        assert EmbeddedRedis(home).ensure_running() == url  # a second command finds the same server
        redis.Redis.from_url(url).set("kept", "yes")
        assert embedded.stop() is True
        assert embedded.running_url() is None and not (home / "server.json").exists()
        url = embedded.ensure_running()
        assert redis.Redis.from_url(url).get("kept") == b"yes"  # AOF brought it back
        assert (home / "appendonlydir").exists() or list(home.glob("*.aof"))
    finally:
        embedded.stop()
    assert embedded.stop() is False


def test_no_url_and_nothing_on_6379_means_embedded(tmp_path, monkeypatch):
    monkeypatch.setenv("TELEMETRY_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(connection, "answers", lambda url, timeout_s=0.3: False)
    target = connection.resolve_target(None, env={})
    try:
        assert target.origin.startswith("embedded") and redis.Redis.from_url(target.url).ping()
        assert "embedded redis-server" in target.describe()
    finally:
        EmbeddedRedis(tmp_path / "home").stop()


def test_order_is_flag_then_env():
    assert connection.resolve_target("redis://flag:1/0", env={"REDIS_URL": "redis://env:2/0"}).origin == "--redis-url"
    assert connection.resolve_target(None, env={"REDIS_URL": "unix:///tmp/r.sock"}).url == "unix:///tmp/r.sock"


def test_stop_script_says_what_it_did(tmp_path):
    result = run_cli("scripts.redis_stop", env_extra={"TELEMETRY_HOME": str(tmp_path / "none")})
    assert result.returncode == 0 and "was not running" in result.stdout


def test_unreachable_redis_is_one_line_for_one_shot_commands_and_retried_by_workers(tmp_path):
    import signal
    import time

    from telemetry.embedded import free_port
    from tests.crash_harness import spawn

    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    result = run_cli("consumers", "status", "--redis-url", nowhere)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach Redis" in result.stderr.strip().splitlines()[-1]

    worker = spawn("consumers", "aggregate", "--redis-url", nowhere)
    time.sleep(2.5)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 1
    stderr = worker.stderr.read()
    assert stderr.count("retrying in") >= 2 and "Traceback" not in stderr


def test_the_binary_that_created_the_data_is_used_again_whatever_path_says(tmp_path, monkeypatch):
    from telemetry import embedded as module

    home = tmp_path / ".telemetry"
    home.mkdir()
    monkeypatch.delenv("TELEMETRY_REDIS_SERVER", raising=False)
    first = module.redis_server_binary()
    monkeypatch.setattr(module, "redis_server_binary", lambda: "/elsewhere/redis-server")
    (home / "binary.json").write_text(f'{{"binary": "{first}"}}')
    assert EmbeddedRedis(home).binary() == first
    (home / "binary.json").write_text('{"binary": "/gone/redis-server"}')
    with pytest.raises(UsageError, match="which is gone"):
        EmbeddedRedis(home).binary()
