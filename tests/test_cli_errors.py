"""What a user meets first: one line for bad input or credentials, no password printed, and a
producer that waits for Redis instead of giving up."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from telemetry.embedded import free_port
from tests.conftest import run_cli
from tests.crash_harness import spawn, wait_for


def test_a_refused_password_says_so_once_and_never_prints_it(redis_url):
    admin = redis.Redis.from_url(redis_url)
    admin.config_set("requirepass", "right-secret")
    try:
        wrong = redis_url.replace("redis://", "redis://:wrong-secret@")
        result = run_cli("consumers", "status", "--redis-url", wrong)
        assert result.returncode == 2, result.stderr
        assert "authentication failed" in result.stderr and "wrong-secret" not in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    finally:
        redis.Redis.from_url(redis_url, password="right-secret").config_set("requirepass", "")


def test_an_unreachable_redis_is_named_without_its_password():
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = run_cli("consumers", "status", "--redis-url", url)
    assert result.returncode == 1 and "cannot reach Redis" in result.stderr
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("flag", ["5s", "250ms", "1m", "2"])
def test_the_producer_takes_every_duration_form(redis_url, flag):
    result = run_cli("producers", "d", "--rate", "10", "--duration", flag, "--start=-1h", "--json",
                     "--redis-url", redis_url)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("flag", ["nan", "-5s", "0", "soon"])
def test_a_bad_producer_duration_is_one_line_and_exit_2(redis_url, flag):
    result = run_cli("producers", "d", f"--duration={flag}", "--redis-url", redis_url)
    assert result.returncode == 2 and "--duration" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_producer_started_while_redis_is_down_waits_with_backoff():
    producer = spawn("producers", "w", "--rate", "5", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    try:
        time.sleep(3)
        assert producer.poll() is None, "the producer gave up instead of waiting"
        producer.send_signal(signal.SIGTERM)
        wait_for(lambda: producer.poll() is not None, 15, "the producer to stop")
        assert "retrying in" in producer.stderr.read()
    finally:
        if producer.poll() is None:
            producer.kill()
