"""Passwords stay out of sight: every command run with its password in REDIS_URL (as `ps` does not
show it), and the password searched for in everything the command printed, its JSON logs, its
Prometheus metrics, `status --json`, the web page, the errors of refused or failed connections, and every key
the pipeline wrote to Redis."""

from __future__ import annotations

import time
import urllib.request

from telemetry.embedded import free_port
from tests.acl_helpers import AclServer
from tests.crash_harness import spawn


def url_with_password(acl: AclServer, role: str, password: str | None = None) -> dict[str, str]:
    return {"REDIS_URL": f"redis://{role}:{password or acl.password(role)}@127.0.0.1:{acl.port}/0"}


def metrics_while_running(acl: AclServer, role: str, module: str, *args: str) -> tuple[str, str]:
    """The process's metrics page, read while it runs, and its output once it ended."""
    port = free_port()
    process = spawn(module, *args, "--metrics-port", str(port), env_extra=url_with_password(acl, role))
    page, deadline = "", time.monotonic() + 30
    while not page and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                page = response.read().decode()
        except OSError:
            time.sleep(0.2)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "telemetry_" in page, "no metrics page read"
    return page, stderr


def web_pages(acl: AclServer) -> str:
    """What `analytics serve` shows as the reader: its pages, its JSON and its log."""
    from tests.web_harness import fetch

    port = free_port()
    server = spawn("analytics", "serve", "--port", str(port), env_extra=url_with_password(acl, "reader"))
    shown = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not shown:
            try:
                shown.append(fetch(f"http://127.0.0.1:{port}/api/status")[2].decode())
            except OSError:
                time.sleep(0.2)
        for path in ("/", "/alerts", "/sensors/pw-0001", "/api/fleet", "/api/alerts", "/api/sensors/pw-0001"):
            status, _, body = fetch(f"http://127.0.0.1:{port}{path}")
            assert status == 200, (path, body[:200])
            shown.append(body.decode())
    finally:
        server.terminate()
        shown.append(server.communicate(timeout=15)[1])
    return "\n".join(shown)


def test_no_command_shows_a_password(acl_server: AclServer, tmp_path):
    acl = acl_server
    acl.clean()
    passwords = {role: acl.password(role) for role in ("producer", "worker", "reader", "admin")}
    seen: dict[str, str] = {}

    def run(role: str, module: str, *args: str, env: dict | None = None, code: int = 0) -> str:
        from tests.conftest import run_cli

        result = run_cli(module, *args, env_extra=env or url_with_password(acl, role))
        assert result.returncode == code, result.stderr
        seen[f"{role}: {module} {' '.join(args)}"] = result.stdout + result.stderr
        return result.stdout

    run("admin", "consumers", "group", "create", "--partitions", "3")
    run("producer", "producers", "--fleet", "pw-", "4", "--count", "40", "--start=-2m", "--spike-rate", "432",
        "--log-json", "--json")
    seen["producer metrics"], seen["producer log"] = metrics_while_running(
        acl, "producer", "producers", "pw-0001", "--count", "30", "--rate", "10", "--log-json")
    seen["worker metrics"], seen["worker log"] = metrics_while_running(
        acl, "worker", "consumers", "aggregate", "--duration", "4s", "--window", "10s", "--log-json")
    run("worker", "consumers", "aggregate", "--drain", "--window", "10s", "--grace", "1s")
    for args in (("consumers", "status", "--json"), ("consumers", "status"), ("consumers", "group", "list"),
                 ("consumers", "alerts", "--no-follow", "--json"), ("analytics", "export", "--out", "-"),
                 ("analytics", "report", "--json"),
                 ("analytics", "plot", "--sensor", "pw-0001", "--out", str(tmp_path / "pw.png"))):
        run("reader", *args)
    seen["web page"] = web_pages(acl)
    # failures: a refused command, a wrong password, a server away, a bad URL
    run("reader", "consumers", "group", "delete", code=2)
    run("reader", "consumers", "status", env=url_with_password(acl, "reader", "not-" + passwords["reader"]), code=2)
    run("reader", "consumers", "status", code=1,
        env={"REDIS_URL": f"redis://reader:{passwords['reader']}@127.0.0.1:{free_port()}/0"})
    run("reader", "consumers", "status", code=2,
        env={"REDIS_URL": f"redis://reader:{passwords['reader']}@127.0.0.1:99999/0"})
    run("reader", "consumers", "status", code=2,
        env={"REDIS_URL": f"rediss://reader:{passwords['reader']}@127.0.0.1:{acl.port}/0?ssl_cert_reqs=none"})
    root = acl.root()
    for key in root.scan_iter():
        seen[f"redis key {key}"] = repr(root.dump(key))
    assert any("pw-0001" in text for text in seen.values())
    leaks = [f"{where}: {role}'s password" for where, text in seen.items()
             for role, password in passwords.items() if password in text]
    assert not leaks, leaks
    assert any("***@" in text for text in seen.values()), "the URLs shown should be masked, not left out"
