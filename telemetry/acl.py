"""ACL users for the roles of telemetry/roles.py: passwords made here, stored on the server only
as SHA-256 hashes, handed to each process through a file only its owner can read.

A file from `acl_file_text` loads with `aclfile` (redis.conf) or `ACL LOAD`; `apply_users` sets
the same users on a running server, or on every node of a cluster (users are not replicated).
Redis 7.0 reads an ACL file strictly: nothing but `user` lines, so no comments go in it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from telemetry.connection import Client, is_cluster
from telemetry.errors import UsageError
from telemetry.roles import Role


def password_hash(password: str) -> str:
    """What Redis stores for `>password`, given as `#hash` so the password never reaches it."""
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AclUser:
    role: Role
    password: str = field(repr=False)
    name_prefix: str = ""  # several pipelines on one server: one set of users each

    @property
    def name(self) -> str:
        return self.name_prefix + self.role.name

    def rules(self) -> list[str]:
        return ["on", f"#{password_hash(self.password)}", *self.role.rules()]

    def line(self) -> str:
        return " ".join(["user", self.name, *self.rules()])


def acl_file_text(users: Iterable[AclUser]) -> str:
    return "".join(user.line() + "\n" for user in users)


def write_private(path: Path, text: str) -> None:
    """Created with mode 0600 from the start (never readable by others, not even for a moment)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def role_passwords(roles: Iterable[Role], secrets_dir: Path | None, *, rotate: bool = False,
                   name_prefix: str = "") -> list[AclUser]:
    """A user per role, named `<name_prefix><role>`. With a secrets folder, a password already in
    `DIR/<user>` is kept (running the command again changes nothing), unless `rotate`; new ones
    are written there, mode 0600."""
    if secrets_dir is not None:
        try:
            secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--secrets {secrets_dir}: cannot create the folder ({error.strerror})") from None
        if not secrets_dir.is_dir():
            raise UsageError(f"--secrets {secrets_dir}: not a folder")
    users = []
    for role in roles:
        path = secrets_dir / f"{name_prefix}{role.name}" if secrets_dir is not None else None
        password = None
        if path is not None and path.exists() and not rotate:
            if path.stat().st_mode & 0o077:
                raise UsageError(f"--secrets: {path} is readable by others (chmod 600 it, or --rotate)")
            password = next(iter(path.read_text().splitlines()), None)
        if not password:
            password = secrets.token_urlsafe(32)
            if path is not None:
                write_private(path, password + "\n")
        users.append(AclUser(role, password, name_prefix))
    return users


@dataclass(frozen=True, slots=True)
class Applied:
    node: str
    users: int
    saved: bool  # False: the server has no aclfile, the users live until it restarts


def apply_users(db: Client, users: list[AclUser]) -> list[Applied]:
    """ACL SETUSER each user (from scratch: `reset`) on the server, or on every node of a cluster,
    then ACL SAVE where the server has an ACL file."""
    if is_cluster(db):
        nodes = [(node.name, db.get_redis_connection(node)) for node in db.get_nodes()]
    else:
        kwargs = db.connection_pool.connection_kwargs
        nodes = [(f"{kwargs.get('host', kwargs.get('path'))}:{kwargs.get('port', '')}".rstrip(":"), db)]
    applied = []
    for name, client in nodes:
        try:
            for user in users:
                client.execute_command("ACL", "SETUSER", user.name, "reset", *user.rules())
        except redis.exceptions.NoPermissionError:
            raise UsageError(f"--apply: the Redis user of the URL may not change users on {name} (it needs "
                             "+acl, as the server's own admin has)") from None
        except redis.ResponseError as error:
            raise UsageError(f"--apply on {name}: {error}") from None
        try:
            client.execute_command("ACL", "SAVE")
            saved = True
        except redis.ResponseError:  # "This Redis instance is not configured to use an ACL file"
            saved = False
        applied.append(Applied(name, len(users), saved))
    return applied
