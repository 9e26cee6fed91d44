"""A private redis-server whose users are the roles of `python -m telemetry acl`, loaded from the
ACL file that command writes, plus a `root` user for the tests' own setup and checks. The
`default` user may only PING (to see the server is up) and SHUTDOWN (to stop it)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from telemetry.embedded import PrivateRedisServer
from tests.conftest import run_cli

ROOT_PASSWORD = "root-test-password"


@dataclass
class AclServer:
    folder: Path
    group: str = "aggregators"
    server: PrivateRedisServer = field(init=False)

    @property
    def secrets(self) -> Path:
        return self.folder / "secrets"

    def start(self) -> None:
        made = run_cli("telemetry", "acl", "--group", self.group, "--secrets", str(self.secrets),
                       "--out", str(self.folder / "roles.acl"))
        assert made.returncode == 0, made.stderr
        acl_file = self.folder / "users.acl"
        acl_file.write_text((self.folder / "roles.acl").read_text()
                            + "user default on nopass resetchannels -@all +ping +shutdown\n"
                            + f"user root on >{ROOT_PASSWORD} ~* &* +@all\n")
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        self.server = PrivateRedisServer(data, extra_args=("--aclfile", str(acl_file)))
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
        """The role's URL: the user only, the password comes from its file."""
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
