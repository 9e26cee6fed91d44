"""What a user meets first: one line for bad input or credentials, no password printed, and a
producer that waits for Redis instead of giving up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from telemetry.embedded import free_port
from tests.conftest import ROOT, run_cli
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


def test_an_acl_user_denied_info_works_on_a_single_server(redis_url):
    """INFO (asked to tell a cluster from one server) is @dangerous: such users must still work."""
    admin = redis.Redis.from_url(redis_url)
    admin.acl_setuser("operator", enabled=True, passwords=["+op-secret"], categories=["+@all", "-@dangerous"],
                      keys=["*"])
    try:
        limited = redis_url.replace("redis://", "redis://operator:op-secret@")
        produced = run_cli("producers", "s1", "--count", "3", "--start=-1m", "--redis-url", limited)
        assert produced.returncode == 0, produced.stderr
        status = run_cli("consumers", "status", "--json", "--redis-url", limited)
        assert status.returncode == 0, status.stderr
        assert sum(row["length"] for row in json.loads(status.stdout)["partitions"]) == 3
    finally:
        admin.acl_deluser("operator")


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


BAD_INPUTS = [
    (("producers", "x", "--rate", "nan"), "--rate"),
    (("producers", "x", "--rate", "inf"), "--rate"),
    (("producers", "x", "--spike-rate", "nan"), "--spike-rate"),
    (("producers", "x", "--metrics-port", "99999"), "--metrics-port"),
    (("analytics", "export", "--out", "."), "is a folder"),
    (("analytics", "export", "--out="), "--out"),
    (("analytics", "export", "--out", "rows.json"), "extension"),
    (("analytics", "plot", "--sensor", "x", "--out", "x.xyz"), "extension"),
    (("consumers", "aggregate", "--rules", "{rules}"), "no [[rule]]"),
    (("consumers", "aggregate", "--rules", "{nan_rules}"), "not a finite number"),
]


@pytest.mark.parametrize(("args", "says"), BAD_INPUTS, ids=[" ".join(args) for args, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(redis_url, tmp_path, args, says):
    empty, nan_rules = tmp_path / "empty.toml", tmp_path / "nan.toml"
    empty.write_text("# nothing here\n")
    nan_rules.write_text('[[rule]]\nname = "x"\nkind = "threshold"\nabove = nan\n')
    args = tuple(arg.format(rules=empty, nan_rules=nan_rules) for arg in args)
    result = run_cli(*args, "--redis-url", redis_url, timeout=60)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if not line.startswith("redis:")]) == 1, result.stderr


@pytest.mark.parametrize("url", ["redis://127.0.0.1:99999/0", "redis://127.0.0.1:{port}/99", "redis://127.0.0.1:{fake}/0"])
def test_a_redis_url_that_cannot_work_is_one_line_and_exit_2(redis_server, url):
    with socket.create_server(("127.0.0.1", 0)) as fake:
        threading.Thread(target=_greet_like_ssh, args=(fake,), daemon=True).start()
        url = url.format(port=redis_server.port, fake=fake.getsockname()[1])
        result = run_cli("consumers", "status", "--redis-url", url, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().splitlines()[-1].startswith("error:")


def _greet_like_ssh(server: socket.socket) -> None:
    """A server that is not Redis: it answers anything with an SSH banner."""
    try:
        client, _ = server.accept()
        with client:
            client.recv(1024)
            client.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    except OSError:
        pass


def test_a_metrics_port_in_use_is_one_line_and_exit_2(redis_url):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = run_cli("producers", "x", "--count", "1", "--metrics-port", port, "--redis-url", redis_url)
    assert result.returncode == 2 and "--metrics-port" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("seconds", ["1", "-5", "nan", "soon"])
def test_the_demo_refuses_a_duration_it_cannot_show(seconds):
    result = run_cli_script("demo.py", env_extra={"DEMO_SECONDS": seconds})
    assert result.returncode == 2 and "DEMO_SECONDS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def run_cli_script(name: str, env_extra: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name)], capture_output=True, text=True, check=False,
                          timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env_extra})


@pytest.mark.parametrize(("text", "message"), [
    ('[[rule]]\nname="x"\nkind="threshold"\nabove="hot"', "rule #1 (x): above = 'hot' is not a finite number"),
    ('[[rule]]\nname="x"\nkind="threshold"\nabove=inf', "is not a finite number"),
    ('[[rule]]\nname="x"\nkind="zscore"\nz=nan', "z = nan is not a finite number"),
    ('[[rule]]\nname="x"\nkind="bogus"', "kind = 'bogus'"),
    ('[[rule]]\nname="x"\nkind="silent"', "after is required"),
    ('[[rule]]\nname="x"\nkind="stuck"\ncolour=1', "unknown field(s) for kind stuck: colour"),
    ('[[rule]]\nname="x"\nkind="stuck"\nover="0s"', "rule #1 (x): over must be positive"),
    ('[[rule]\nname="x"', "line 1"),
])
def test_bad_rules_file_exits_2_naming_the_problem(tmp_path, redis_url, text, message):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    result = run_cli("consumers", "aggregate", "--rules", str(path), "--redis-url", redis_url, "--drain")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_rule_list_written_empty_runs_without_alert_rules(tmp_path, redis_url):
    path = tmp_path / "rules.toml"
    path.write_text("rule = []\n")
    result = run_cli("consumers", "aggregate", "--rules", str(path), "--redis-url", redis_url, "--drain")
    assert result.returncode == 0, result.stderr
    assert "0 alert rules" in result.stderr


def test_the_sample_rules_file_is_the_built_in_rules():
    from consumers.rules import load_rules

    assert load_rules(ROOT / "rules.toml") == load_rules(None)


def test_every_command_says_its_version():
    from telemetry import __version__

    for module in ("producers", "consumers", "analytics"):
        result = run_cli(module, "--version")
        assert result.returncode == 0 and __version__ in result.stdout


def test_the_package_builds_with_its_lua_scripts_and_console_scripts(tmp_path):
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    for name in ("producers", "consumers", "analytics", "telemetry"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300,
                           check=False)
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "telemetry/lua/commit.lua" in names and "consumers/worker.py" in names
    packages = {str(path.parent.relative_to(source)) for top in ("producers", "consumers", "analytics", "telemetry")
                for path in (source / top).rglob("__init__.py")}
    assert {name for name in packages if f"{name}/__init__.py" not in names} == set()  # the edges' too
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "telemetry-consume = consumers.__main__:entry" in scripts and "telemetry-acl = telemetry.__main__:entry" in scripts


def test_long_running_commands_stamp_their_log_lines_or_write_json(redis_url):
    import json

    text = run_cli("producers", "t", "--count", "3", "--start=-1m", "--redis-url", redis_url)
    assert text.returncode == 0 and all(line[:4].isdigit() and "Z " in line for line in text.stderr.splitlines())
    as_json = run_cli("producers", "t", "--count", "3", "--start=-1m", "--log-json", "--redis-url", redis_url)
    records = [json.loads(line) for line in as_json.stderr.splitlines()]
    assert records and all(record["ts"].endswith("Z") for record in records)
    assert {"redis", "producer"} <= {record["component"] for record in records}
