"""TLS end to end: a private redis-server with a TLS port, certificates from a throwaway CA
(tests/tls_helpers.py), client certificates required, and the ACL roles on top (on Redis 7.0 a
client certificate never replaces the password). Every process connects with rediss://."""

from __future__ import annotations

import json
import subprocess

import pytest
import redis

from tests.acl_helpers import AclServer
from tests.conftest import run_cli
from tests.tls_helpers import SERVER_NAME, make_tls_files

PARTITIONS = "3"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    server = AclServer(folder, tls=make_tls_files(folder / "certs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def tls(tls_server: AclServer) -> AclServer:
    tls_server.clean()
    return tls_server


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_the_pipeline_runs_end_to_end_over_tls_with_client_certificates(tls, tmp_path):
    for role, module, *args in (
            ("admin", "consumers", "group", "create", "--partitions", PARTITIONS),
            ("producer", "producers", "--fleet", "tls-", "5", "--count", "60", "--start=-5m", "--spike-rate", "432"),
            ("worker", "consumers", "aggregate", "--drain", "--window", "10s", "--grace", "1s", "--settle", "0s"),
            ("reader", "analytics", "export", "--kind", "aggregates", "--out", str(tmp_path / "windows.csv"))):
        result = tls.run(role, module, *args)
        assert result.returncode == 0, result.stderr
        assert "rediss://" in result.stderr  # it says where it connected
    status = tls.run("reader", "consumers", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counters"]["processed"] == 300
    assert len((tmp_path / "windows.csv").read_text().splitlines()) > 1
    clients = tls.root().client_list()
    assert tls.denials() == [] and clients  # and nobody was refused along the way


def status_with(tls: AclServer, url: str, *flags: str):
    return run_cli("consumers", "status", "--redis-url", url, *flags,
                   env_extra={"TELEMETRY_REDIS_PASSWORD_FILE": str(tls.secrets / "reader")})


def test_a_wrong_ca_fails_with_one_clear_line(tls):
    url = f"rediss://reader@127.0.0.1:{tls.tls_port}/0?{tls.tls.query(ca=tls.tls.wrong_ca)}"
    result = status_with(tls, url)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "TLS with Redis at" in line and "certificate verify failed" in line and "ssl_ca_certs" in line


def test_the_host_name_is_checked(tls):
    url = f"rediss://reader@localhost:{tls.tls_port}/0?{tls.tls.query()}"  # the certificate names 127.0.0.1
    result = status_with(tls, url)
    assert result.returncode == 2
    assert "localhost" in one_error_line(result) and SERVER_NAME not in result.stdout


def test_turning_verification_off_needs_the_flag_named_for_it(tls):
    query = f"ssl_cert_reqs=none&ssl_certfile={tls.tls.client_cert}&ssl_keyfile={tls.tls.client_key}"
    url = f"rediss://reader@127.0.0.1:{tls.tls_port}/0?{query}"
    refused = status_with(tls, url)
    assert refused.returncode == 2
    assert "--redis-tls-skip-verify" in one_error_line(refused) and "ssl_cert_reqs=none" in refused.stderr
    wrong_ca = f"rediss://reader@127.0.0.1:{tls.tls_port}/0?{tls.tls.query(ca=tls.tls.wrong_ca)}"
    accepted = status_with(tls, wrong_ca, "--redis-tls-skip-verify")
    assert accepted.returncode == 0, accepted.stderr
    plain = status_with(tls, f"redis://reader@127.0.0.1:{tls.port}/0", "--redis-tls-skip-verify")
    assert plain.returncode == 2 and "not rediss://" in one_error_line(plain)


def test_plaintext_to_the_tls_port_and_tls_to_the_plain_port_fail_clearly(tls):
    plaintext = status_with(tls, f"redis://reader@127.0.0.1:{tls.tls_port}/0")
    assert plaintext.returncode == 1
    assert "use rediss://" in one_error_line(plaintext)
    to_plain = status_with(tls, f"rediss://reader@127.0.0.1:{tls.port}/0?{tls.tls.query()}")
    assert to_plain.returncode == 1  # a plain port waits for more of the TLS hello: a timeout, like a slow network
    assert "if that port does not speak TLS, use redis://" in one_error_line(to_plain)


def test_tls_settings_are_checked_before_connecting(tls):
    missing = status_with(tls, f"rediss://reader@127.0.0.1:{tls.tls_port}/0?ssl_ca_certs=/nonexistent/ca.pem")
    assert missing.returncode == 2 and "ssl_ca_certs=/nonexistent/ca.pem: no such file" in one_error_line(missing)
    not_tls = status_with(tls, f"redis://reader@127.0.0.1:{tls.port}/0?ssl_ca_certs={tls.tls.ca}")
    assert not_tls.returncode == 2 and "use rediss://" in one_error_line(not_tls)


def test_a_tls_cluster_runs_the_pipeline_under_the_acl_roles(tmp_path):
    """Three masters speaking TLS to clients (client certificates required), on the bus and to
    each other (tls-cluster), with the ACL roles applied on every node: admin, producer, worker
    and reader each find the cluster from one rediss:// URL with their own user and reach every
    master on its TLS port, and no node refused anything."""
    from telemetry.local_cluster import PrivateRedisCluster
    from tests.acl_helpers import require_redis_7

    require_redis_7()
    files = make_tls_files(tmp_path / "certs")
    secrets = tmp_path / "secrets"
    with PrivateRedisCluster(tmp_path / "cluster", masters=3, tls_args=files.server_args) as cluster:
        applied = run_cli("telemetry", "acl", "--secrets", str(secrets), "--apply", "--redis-url",
                          f"rediss://127.0.0.1:{cluster.tls_ports[0]}/0?{files.query()}")
        assert applied.returncode == 0, applied.stderr

        def run(role: str, module: str, *args: str) -> subprocess.CompletedProcess:
            env = {"REDIS_URL": f"rediss://{role}@127.0.0.1:{cluster.tls_ports[0]}/0?{files.query()}",
                   "TELEMETRY_REDIS_PASSWORD_FILE": str(secrets / role)}
            result = run_cli(module, *args, env_extra=env)
            assert result.returncode == 0 and "NOPERM" not in result.stderr, result.stderr
            return result

        run("admin", "consumers", "group", "create", "--partitions", "6", "--to", "start")
        for role, module, *args in (("producer", "producers", "--fleet", "tc-", "6", "--count", "20", "--start=-2m"),
                                    ("worker", "consumers", "aggregate", "--drain", "--start", "all", "--window", "10s",
                                     "--settle", "0s")):
            assert "Redis Cluster of 3 masters" in run(role, module, *args).stderr
        status = run("reader", "consumers", "status", "--json")
        assert json.loads(status.stdout)["counters"]["processed"] == 120
        for node in cluster.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as client:
                assert "worker" in client.acl_users() and client.acl_log() == []
        plain = run_cli("consumers", "status", "--redis-url", f"redis://127.0.0.1:{cluster.tls_ports[1]}/0")
        assert plain.returncode == 1 and "use rediss://" in plain.stderr
