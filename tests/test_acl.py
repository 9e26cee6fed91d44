"""Every process under its ACL role (`python -m telemetry acl`) on a private redis-server that
knows only those users: each role runs its commands end to end with nothing refused, and is
refused what it must not do."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import redis

from telemetry.roles import ROLE_NAMES
from tests.acl_helpers import AclServer, require_redis_7
from tests.crash_harness import spawn

PARTITIONS = "4"


@pytest.fixture()
def acl(acl_server: AclServer) -> AclServer:
    acl_server.clean()
    return acl_server


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    assert "NOPERM" not in result.stderr and "may not" not in result.stderr, result.stderr
    return result.stdout


def test_each_role_runs_its_commands_end_to_end_and_nothing_is_refused(acl, tmp_path):
    ok(acl.run("admin", "consumers", "group", "create", "--partitions", PARTITIONS, "--to", "start"))
    ok(acl.run("producer", "producers", "--fleet", "acl-", "6", "--count", "120", "--start=-10m",
               "--spike-rate", "432"))
    ok(acl.run("producer", "producers", "--fleet", "acl-", "6", "--count", "10", "--start=-5m"))
    ok(acl.run("worker", "consumers", "aggregate", "--drain", "--window", "10s", "--grace", "1s",
               "--start", "all", "--settle", "0s"))
    assert acl.denials() == []
    status = json.loads(ok(acl.run("reader", "consumers", "status", "--json")))
    assert status["counters"]["processed"] == 6 * 130, status["counters"]
    ok(acl.run("reader", "consumers", "status"))
    alerts = ok(acl.run("reader", "consumers", "alerts", "--no-follow", "--json"))
    assert alerts.strip(), "the run fired no alert"
    ok(acl.run("reader", "consumers", "group", "list", "--json"))
    ok(acl.run("reader", "analytics", "export", "--out", str(tmp_path / "readings.csv")))
    ok(acl.run("reader", "analytics", "export", "--kind", "aggregates", "--out", str(tmp_path / "windows.csv")))
    assert len((tmp_path / "readings.csv").read_text().splitlines()) == 6 * 130 + 1
    ok(acl.run("reader", "analytics", "report", "--json"))
    ok(acl.run("reader", "analytics", "plot", "--sensor", "acl-0001", "--out", str(tmp_path / "acl.png")))
    ok(acl.run("admin", "consumers", "group", "prune"))
    ok(acl.run("admin", "consumers", "group", "reset", "--to", "start"))
    ok(acl.run("admin", "consumers", "group", "delete"))
    assert acl.denials() == []


# (role, command..., allowed): what each role may and may not do, asked of the server with ACL
# DRYRUN, which checks a command against the user's permissions without running it.
R, G, OTHER = "{telemetry:p2.7}", "aggregators", "other"
DRYRUN_TABLE = [
    ("producer", ("XADD", f"{R}:readings", "*", "sensor", "a"), True),
    ("producer", ("SET", f"{R}:producer-batch:host-1", "5", "PX", "100"), True),
    ("producer", ("XRANGE", f"{R}:{G}:alerts", "-", "+"), False),
    ("producer", ("HGETALL", f"{R}:{G}:state"), False),
    ("producer", ("XTRIM", f"{R}:readings", "MAXLEN", "0"), False),
    ("producer", ("DEL", f"{R}:readings"), False),
    ("producer", ("XDEL", f"{R}:readings", "1-1"), False),
    ("producer", ("SET", f"{R}:readings", "x"), False),
    ("producer", ("XREADGROUP", "GROUP", G, "c", "STREAMS", f"{R}:readings", ">"), False),
    ("producer", ("HSET", "{telemetry}:pipeline", "partitions", "1"), False),
    ("producer", ("SCAN", "0"), False),
    ("producer", ("KEYS", "*"), False),
    ("bridge", ("XADD", "{telemetry}:mqtt:dead-letter", "*", "reason", "x"), True),
    ("bridge", ("HINCRBY", f"{R}:mqtt-counters", "written", "1"), True),
    ("bridge", ("XRANGE", f"{R}:readings", "-", "+"), False),
    ("bridge", ("DEL", f"{R}:readings"), False),
    ("bridge", ("HSET", f"{R}:{G}:state", "s", "x"), False),
    ("worker", ("XREADGROUP", "GROUP", G, "c", "STREAMS", f"{R}:readings", ">"), True),
    ("worker", ("XACK", f"{R}:readings", G, "1-1"), True),
    ("worker", ("XAUTOCLAIM", f"{R}:readings", G, "c", "0", "0"), True),
    ("worker", ("HSET", f"{R}:{G}:state", "s", "x"), True),
    ("worker", ("XADD", f"{R}:{G}:alerts", "*", "state", "firing"), True),
    ("worker", ("EVALSHA", "0" * 40, "2", f"{R}:{G}:checkpoint", f"{R}:readings"), True),
    ("worker", ("XADD", f"{R}:readings", "*", "sensor", "a"), False),
    ("worker", ("XTRIM", f"{R}:readings", "MAXLEN", "0"), False),
    ("worker", ("DEL", f"{R}:readings"), False),
    ("worker", ("HSET", f"{R}:{OTHER}:state", "s", "x"), False),
    ("worker", ("XADD", f"{R}:{OTHER}:alerts", "*", "state", "firing"), False),
    ("worker", ("SET", f"{R}:{OTHER}:lease", "me"), False),
    ("worker", ("EVALSHA", "0" * 40, "1", f"{R}:{OTHER}:checkpoint"), False),
    ("worker", ("SET", f"{R}:producer-batch:host-1", "5"), False),
    ("worker", ("FLUSHALL",), False),
    ("notifier", ("XREADGROUP", "GROUP", "notifiers", "n", "STREAMS", f"{R}:{G}:alerts", ">"), True),
    ("notifier", ("XACK", f"{R}:{G}:alerts", "notifiers", "1-1"), True),
    ("notifier", ("XRANGE", f"{R}:{G}:dead-letter", "-", "+"), True),
    ("notifier", ("XADD", "{telemetry}:notify:dead-letter", "*", "reason", "x"), True),
    ("notifier", ("XADD", f"{R}:{G}:alerts", "*", "state", "firing"), False),
    ("notifier", ("XRANGE", f"{R}:readings", "-", "+"), False),
    ("notifier", ("XADD", f"{R}:{G}:dead-letter", "*", "x", "y"), False),
    ("reader", ("XRANGE", f"{R}:readings", "-", "+"), True),
    ("reader", ("HGETALL", f"{R}:{OTHER}:state"), True),
    ("reader", ("XREAD", "STREAMS", f"{R}:{G}:alerts", "0"), True),
    ("reader", ("XADD", f"{R}:readings", "*", "sensor", "a"), False),
    ("reader", ("SET", f"{R}:{G}:lease", "me"), False),
    ("reader", ("HSET", f"{R}:{G}:state", "s", "x"), False),
    ("reader", ("EVAL", "return 1", "0"), False),
    ("reader", ("XREADGROUP", "GROUP", G, "c", "STREAMS", f"{R}:readings", ">"), False),
    ("reader", ("XGROUP", "CREATE", f"{R}:readings", "g2", "$"), False),
    ("reader", ("SCAN", "0"), False),
    ("reader", ("KEYS", "*"), False),
    ("reader", ("GET", "{elsewhere}:secret"), False),
    ("admin", ("DEL", f"{R}:{G}:state"), True),
    ("admin", ("XGROUP", "DESTROY", f"{R}:readings", G), True),
    ("admin", ("EVAL", "return 1", "1", "{telemetry}:pipeline"), True),
    ("admin", ("GET", "{elsewhere}:secret"), False),
    ("admin", ("FLUSHALL",), False),
    ("admin", ("CONFIG", "GET", "*"), False),
    ("admin", ("ACL", "LIST"), False),
]


def test_acl_dryrun_table(acl):
    root = acl.root()
    wrong = []
    for role, command, allowed in DRYRUN_TABLE:
        answer = root.execute_command("ACL", "DRYRUN", role, *command)
        if (answer == "OK") != allowed:
            wrong.append(f"{role} {' '.join(command)}: {answer}")
    assert not wrong, "\n".join(wrong)


def refused(client: redis.Redis, *command) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def test_real_connections_are_refused_what_their_role_must_not_do(acl):
    ok(acl.run("admin", "consumers", "group", "create", "--partitions", PARTITIONS))
    ok(acl.run("producer", "producers", "a", "b", "--count", "5", "--start=-1m"))
    readings = next(key for key in acl.root().scan_iter("*:readings") if acl.root().xlen(key))
    tag = readings[:readings.index("}") + 1]
    producer, reader, worker = acl.client("producer"), acl.client("reader"), acl.client("worker")
    assert refused(producer, "XRANGE", f"{tag}:aggregators:alerts", "-", "+")
    assert refused(producer, "XTRIM", readings, "MAXLEN", "0")
    assert refused(producer, "DEL", readings)
    assert refused(reader, "XADD", readings, "*", "sensor", "x")
    assert refused(reader, "EVAL", "return redis.call('DEL', KEYS[1])", "1", readings)
    assert refused(reader, "SCAN", "0")
    assert refused(worker, "XADD", readings, "*", "sensor", "x")
    assert refused(worker, "HSET", f"{tag}:other:state", "s", "x")
    # a script the worker may run is still held to the worker's permissions, call by call
    with pytest.raises(redis.ResponseError, match="can't access"):
        worker.eval("return redis.call('XADD', KEYS[2], '*', 'sensor', 'x')", 2, f"{tag}:aggregators:checkpoint",
                    readings)
    assert sum(acl.root().xlen(key) for key in acl.root().scan_iter("*:readings")) == 10


def test_a_one_shot_command_refused_says_which_permission_in_one_line_and_exits_2(acl):
    result = acl.run("producer", "consumers", "status")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Redis user 'producer' may not run" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    result = acl.run("reader", "consumers", "group", "delete")
    assert result.returncode == 2 and "Redis user 'reader' may not run" in result.stderr, result.stderr


def test_a_producer_waits_for_the_admin_to_create_the_pipeline(acl, tmp_path):
    log = tmp_path / "producer.log"
    with open(log, "w") as stderr:
        producer = spawn("producers", "a", "b", "--count", "20", "--rate", "50", env_extra=acl.env("producer"),
                         stderr=stderr)
    try:
        deadline = time.monotonic() + 30
        while "may not create it" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert producer.poll() is None and "retrying" in log.read_text(), log.read_text()
        ok(acl.run("admin", "consumers", "group", "create", "--partitions", PARTITIONS))
        assert producer.wait(timeout=60) == 0, log.read_text()
    finally:
        if producer.poll() is None:
            producer.kill()
    assert sum(acl.root().xlen(key) for key in acl.root().scan_iter("*:readings")) == 40


@pytest.mark.parametrize("args", [("producers", "a", "--rate", "20"), ("consumers", "aggregate")],
                         ids=["producer", "worker"])
def test_a_refused_long_running_process_keeps_retrying_with_backoff_and_says_the_refusal_once(acl, tmp_path, args):
    """A refusal does not heal by retrying at once: the worker refused as the reader said
    "retrying at once" about once a second, forever, and the producer said each retry. Both
    retry with a backoff of their own now (telemetry/refusals.Retries), and say the refusal once."""
    ok(acl.run("admin", "consumers", "group", "create", "--partitions", PARTITIONS))
    root, log = acl.root(), tmp_path / "process.log"
    root.acl_log_reset()
    with open(log, "w") as stderr:
        process = spawn(*args, env_extra=acl.env("reader"), stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while refusals(root, "reader") < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert refusals(root, "reader") >= 5, log.read_text()
        assert process.poll() is None, log.read_text()
        said = [line for line in log.read_text().splitlines() if "may not run" in line]
        assert len(said) == 1, log.read_text()
        assert "Redis user 'reader' may not run" in said[0] and "retrying with backoff up to 30s" in said[0]
    finally:
        stop_twice(process)


def stop_twice(process: subprocess.Popen) -> None:
    """SIGTERM; a producer still holding refused readings waits for Redis on the first (it would
    lose them), and a second ends it."""
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(timeout=10)


def refusals(root: redis.Redis, user: str) -> int:
    """How many commands of the user Redis refused (ACL LOG counts repeats of one entry)."""
    return sum(int(entry["count"]) for entry in root.acl_log() if entry["username"] == user)


def test_the_web_page_as_reader_and_the_notifier_as_notifier(acl, tmp_path):
    """The two processes of the edges, each under its role: every page and API of `analytics
    serve` as the reader, `consumers notify` delivering every alert to a webhook as the notifier."""
    from telemetry.embedded import free_port
    from tests.notify_helpers import SECRET, Receiver
    from tests.web_harness import fetch

    ok(acl.run("admin", "consumers", "group", "create", "--partitions", PARTITIONS, "--to", "start"))
    ok(acl.run("producer", "producers", "--fleet", "acl-", "4", "--count", "120", "--start=-5m",
               "--spike-rate", "432"))
    ok(acl.run("worker", "consumers", "aggregate", "--drain", "--window", "10s", "--grace", "1s", "--settle", "0s"))
    alerts = ok(acl.run("reader", "consumers", "alerts", "--no-follow", "--json")).splitlines()
    assert alerts
    with Receiver() as receiver:
        result = acl_run_env(acl, "notifier", {"TELEMETRY_WEBHOOK_SECRET": SECRET}, "consumers", "notify",
                             "--webhook", receiver.url, "--start", "all", "--drain")
        ok(result)
        assert len(receiver.accepted()) >= 1
    port = free_port()
    with open(tmp_path / "serve.log", "w") as log:
        server = spawn("analytics", "serve", "--port", str(port), env_extra=acl.env("reader"), stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if fetch(f"{base}/api/status")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        for path in ("/", "/alerts", "/sensors/acl-0001", "/api/fleet", "/api/status", "/api/alerts",
                     "/api/sensors/acl-0001", "/api/sensors/acl-0001/export.csv"):
            status, _, body = fetch(base + path)
            assert status == 200, (path, status, body[:300])
            if path.startswith(("/api/fleet", "/api/alerts", "/api/sensors/")):
                assert b"acl-000" in body, (path, body[:300])  # the sensors' data, read as the reader
        for path in ("/api/events/fleet", "/api/events/alerts", "/api/events/sensors/acl-0001"):
            try:
                fetch(base + path, timeout=1.5)
            except OSError:
                pass  # an event stream never ends: read until the timeout
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert "may not" not in (tmp_path / "serve.log").read_text()
    assert acl.denials() == []


def acl_run_env(acl: AclServer, role: str, extra: dict, module: str, *args: str):
    from tests.conftest import run_cli

    return run_cli(module, *args, env_extra={**acl.env(role), **extra})


def test_the_mqtt_bridge_as_bridge_over_mqtts(acl, tmp_path):
    """Devices publish to Mosquitto; the bridge takes them over mqtts:// (certificate checked
    against the test CA) and writes them to Redis as the bridge role."""
    from producers.mqtt.local_broker import PrivateMosquitto
    from telemetry.embedded import free_port
    from tests.mqtt_helpers import Publisher, kill_leftovers, start_bridge
    from tests.tls_helpers import make_tls_files

    certs = make_tls_files(tmp_path / "certs")
    tls_port = free_port()
    listener = (f"listener {tls_port} 127.0.0.1", f"cafile {certs.ca}", f"certfile {certs.server_cert}",
                f"keyfile {certs.server_key}")
    ok(acl.run("admin", "consumers", "group", "create", "--partitions", "4"))
    with PrivateMosquitto(tmp_path / "mosquitto", listeners=listener) as broker:
        try:
            bridge = start_bridge(f"mqtts://127.0.0.1:{tls_port}", acl.url("bridge"), tmp_path / "bridge.log",
                                  "--mqtt-ca", str(certs.ca), env_extra=acl.env("bridge"))
            publisher = Publisher(broker.port)
            sent = 0
            deadline = time.monotonic() + 30
            root = acl.root()
            while time.monotonic() < deadline:
                publisher.publish("zigbee2mqtt", f"dev-{sent % 3}", 1_700_000_000_000 + sent * 1000, 20.0, 50.0)
                sent += 1
                written = sum(root.xlen(key) for key in root.scan_iter("*:readings"))
                if written >= 10:
                    break
                time.sleep(0.2)
            assert written >= 10, (tmp_path / "bridge.log").read_text()
            assert bridge.poll() is None
            publisher.close()
        finally:
            kill_leftovers()
    log = (tmp_path / "bridge.log").read_text()
    assert "may not" not in log and "mqtts://127.0.0.1" in log, log
    assert acl.denials() == []


def test_apply_sets_the_users_on_every_cluster_node_and_the_roles_run_there(redis_cluster, cluster_url, tmp_path):
    """`--apply` on a cluster (users are not replicated) reaches every node from one URL; then
    the admin, producer, worker and reader run on the cluster as their roles."""
    from tests.conftest import run_cli

    require_redis_7()
    secrets = tmp_path / "secrets"
    applied = run_cli("telemetry", "acl", "--secrets", str(secrets), "--apply", "--redis-url", cluster_url)
    assert applied.returncode == 0, applied.stderr
    ports = [node.port for node in redis_cluster.nodes]
    assert all(f":{port}" in applied.stderr for port in ports), applied.stderr
    nodes = [redis.Redis(port=port, decode_responses=True) for port in ports]
    try:
        assert all("worker" in node.acl_users() for node in nodes)
        host = cluster_url.split("//")[1].split("/")[0]

        def run(role: str, module: str, *args: str) -> str:
            env = {"REDIS_URL": f"redis://{role}@{host}/0", "TELEMETRY_REDIS_PASSWORD_FILE": str(secrets / role)}
            return ok(run_cli(module, *args, env_extra=env))

        run("admin", "consumers", "group", "create", "--partitions", "6", "--to", "start")
        run("producer", "producers", "--fleet", "cl-", "6", "--count", "30", "--start=-2m")
        run("worker", "consumers", "aggregate", "--drain", "--window", "10s", "--grace", "1s", "--settle", "0s")
        status = json.loads(run("reader", "consumers", "status", "--json"))
        assert status["counters"]["processed"] == 180
        assert [entry for node in nodes for entry in node.acl_log()] == []
    finally:
        for node in nodes:
            node.execute_command("ACL", "DELUSER", *ROLE_NAMES)
            node.execute_command("ACL", "LOG", "RESET")
            node.close()


def test_the_web_page_and_the_notifier_refused_say_so_and_keep_trying(acl, tmp_path):
    """As the wrong role: the page answers 503 naming the refusal, the notifier logs it, and both
    keep running, so a fixed ACL takes effect without a restart."""
    from telemetry.embedded import free_port
    from tests.notify_helpers import SECRET
    from tests.web_harness import fetch

    ok(acl.run("admin", "consumers", "group", "create", "--partitions", PARTITIONS))
    port = free_port()
    log = tmp_path / "notify.log"
    with open(log, "w") as stderr:
        notifier = spawn("consumers", "notify", "--webhook", "http://127.0.0.1:9/", env_extra={
            **acl.env("reader"), "TELEMETRY_WEBHOOK_SECRET": SECRET}, stderr=stderr)
    server = spawn("analytics", "serve", "--port", str(port), env_extra=acl.env("producer"))
    try:
        page, deadline = (0, {}, b""), time.monotonic() + 30
        while b"may not" not in page[2] and time.monotonic() < deadline:
            try:
                page = fetch(f"http://127.0.0.1:{port}/api/fleet")
            except OSError:
                pass
            time.sleep(0.3)
        assert page[0] == 503 and b"Redis user 'producer' may not run" in page[2], page
        while "may not" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Redis user 'reader' may not run" in log.read_text() and "retrying" in log.read_text()
        assert server.poll() is None and notifier.poll() is None
    finally:
        for process in (server, notifier):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def test_apply_on_a_server_with_an_aclfile_saves_the_users_across_a_restart(tmp_path):
    """`--apply` as the server's own admin: ACL SETUSER for each role, then ACL SAVE into the
    server's aclfile, so the users outlive a restart; running it again keeps the passwords."""
    from telemetry.embedded import PrivateRedisServer
    from tests.acl_helpers import ROOT_PASSWORD
    from tests.conftest import run_cli

    require_redis_7()
    acl_file = tmp_path / "users.acl"
    acl_file.write_text("user default on nopass resetchannels -@all +ping +shutdown\n"
                        f"user root on >{ROOT_PASSWORD} ~* &* +@all\n")
    (tmp_path / "data").mkdir()
    server = PrivateRedisServer(tmp_path / "data", extra_args=("--aclfile", str(acl_file)))
    server.start()
    try:
        root_url = f"redis://root:{ROOT_PASSWORD}@127.0.0.1:{server.port}/0"
        secrets = tmp_path / "secrets"
        passwords = []
        for _ in range(2):
            applied = run_cli("telemetry", "acl", "--secrets", str(secrets), "--apply", "--redis-url", root_url)
            assert applied.returncode == 0 and "6 users set on 127.0.0.1" in applied.stderr, applied.stderr
            assert "last until it restarts" not in applied.stderr
            passwords.append((secrets / "worker").read_text())
        assert passwords[0] == passwords[1]
        assert "user worker on " in acl_file.read_text()  # ACL SAVE wrote it
        server.restart()
        env = {"REDIS_URL": f"redis://producer@127.0.0.1:{server.port}/0",
               "TELEMETRY_REDIS_PASSWORD_FILE": str(secrets / "producer")}
        admin = {**env, "REDIS_URL": env["REDIS_URL"].replace("producer@", "admin@"),
                 "TELEMETRY_REDIS_PASSWORD_FILE": str(secrets / "admin")}
        ok(run_cli("consumers", "group", "create", "--partitions", "2", env_extra=admin))
        ok(run_cli("producers", "a", "--count", "3", "--start=-1m", env_extra=env))
    finally:
        server.stop()
