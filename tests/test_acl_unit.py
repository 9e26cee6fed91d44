"""The ACL file, the secrets folder, password files, masking and refusal lines, without a server."""

from __future__ import annotations

import hashlib
import re
import stat

import pytest
import redis

from telemetry.acl import acl_file_text, role_passwords
from telemetry.connection import RedisTarget, masked, resolve_target
from telemetry.errors import UsageError
from telemetry.keys import Keys
from telemetry.refusals import REFUSED_RETRY_MAX_S, AclRefusal, RefusalRetries, Retries, refusal_line
from telemetry.roles import ROLE_NAMES, roles
from tests.conftest import run_cli


def test_the_acl_file_has_one_user_per_role_with_hashed_passwords_only(tmp_path):
    users = role_passwords(roles(Keys(), "aggregators"), tmp_path / "secrets")
    text = acl_file_text(users)
    lines = text.splitlines()
    assert [line.split()[1] for line in lines] == list(ROLE_NAMES)
    for user, line in zip(users, lines):
        assert re.match(rf"user {user.name} on #[0-9a-f]{{64}} resetchannels -@all ", line)
        assert f"#{hashlib.sha256(user.password.encode()).hexdigest()}" in line
        assert user.password not in text and ">" not in line  # never the password itself
        assert user.password not in repr(user)


def test_secrets_are_private_kept_on_a_second_run_and_rotated_on_request(tmp_path):
    folder = tmp_path / "secrets"
    first = {user.name: user.password for user in role_passwords(roles(Keys(), "g"), folder)}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name, password in first.items():
        path = folder / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == password + "\n"
    again = {user.name: user.password for user in role_passwords(roles(Keys(), "g"), folder)}
    assert again == first
    rotated = {user.name: user.password for user in role_passwords(roles(Keys(), "g"), folder, rotate=True)}
    assert all(rotated[name] != first[name] for name in first)
    (folder / "reader").chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        role_passwords(roles(Keys(), "g"), folder)


def test_patterns_follow_the_prefix_group_and_a_verbatim_stream():
    worker = next(role for role in roles(Keys("plant-7"), "night") if role.name == "worker")
    rules = " ".join(worker.rules())
    assert "~{plant-7:p*}:readings" in rules and "~{plant-7:p*}:night:state" in rules
    assert "aggregators" not in rules and "{telemetry" not in rules
    reader = next(role for role in roles(Keys(readings_override="app:ev*nt"), "g") if role.name == "reader")
    assert "~app:ev\\*nt" in " ".join(reader.rules())  # a glob character of the key is escaped


def test_acl_command_flags(tmp_path):
    assert run_cli("telemetry", "acl", "--apply").returncode == 2
    no_server = run_cli("telemetry", "acl", "--apply", "--secrets", str(tmp_path / "s"), env_extra={"REDIS_URL": ""})
    assert no_server.returncode == 2 and "name the server" in no_server.stderr
    assert run_cli("telemetry", "acl", "--rotate").returncode == 2
    only = run_cli("telemetry", "acl", "--role", "reader", "--group", "night")
    assert only.returncode == 0 and only.stdout.startswith("user reader on #") and len(only.stdout.splitlines()) == 1
    named = run_cli("telemetry", "acl", "--user-prefix", "plant7-", "--secrets", str(tmp_path / "s"))
    assert named.returncode == 0 and [line.split()[1] for line in named.stdout.splitlines()] == [
        f"plant7-{role}" for role in ROLE_NAMES]
    assert sorted(path.name for path in (tmp_path / "s").iterdir()) == sorted(f"plant7-{role}" for role in ROLE_NAMES)
    bad = run_cli("telemetry", "acl", "--group", "a:b")
    assert bad.returncode == 2 and "--group" in bad.stderr


def test_password_files_and_urls(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    target = resolve_target("redis://worker@db.local:6379/0", {}, password_file=secret)
    assert target.password == "s3cret" and "s3cret" not in repr(target) and target.username == "worker"
    from_env = resolve_target("redis://worker@db.local:6379/0", {"TELEMETRY_REDIS_PASSWORD_FILE": str(secret)})
    assert from_env.password == "s3cret"
    with pytest.raises(UsageError, match="has a password too"):
        resolve_target("redis://worker:other@db.local:6379/0", {}, password_file=secret)
    with pytest.raises(UsageError, match="cannot read it"):
        resolve_target("redis://worker@db.local/0", {}, password_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("")
    with pytest.raises(UsageError, match="empty"):
        resolve_target("redis://worker@db.local/0", {}, password_file=tmp_path / "empty")


def test_masked_urls():
    assert masked("redis://worker:s3cret@db:6379/0") == "redis://worker:***@db:6379/0"
    assert masked("unix:///run/redis.sock?db=0&password=s3cret") == "unix:///run/redis.sock?db=0&password=***"
    assert masked("rediss://db:6380/0?ssl_ca_certs=/ca.pem") == "rediss://db:6380/0?ssl_ca_certs=/ca.pem"
    target = RedisTarget("redis://w:s3cret@db/0", "REDIS_URL")
    assert "s3cret" not in target.describe() and "s3cret" not in repr(target) and "***" in repr(target)


def test_refusal_lines_name_user_command_and_key():
    denied = redis.exceptions.NoPermissionError("this user has no permissions to run the 'xadd' command")
    assert refusal_line(denied, "reader") == ("Redis user 'reader' may not run XADD (ACL +xadd): this user has no "
                                              "permissions to run the 'xadd' command")
    key = redis.exceptions.NoPermissionError("this user has no permissions to access one of the keys used as arguments")
    assert "may not run XADD on key '{t:p1}:readings'" in refusal_line(key, "worker", ("xadd", "{t:p1}:readings"))
    piped = AclRefusal("Command # 2 (HSET {t:p1}:g:state s x) of pipeline caused error: this user has no "
                       "permissions to access one of the keys used as arguments", "producer", named=False)
    assert refusal_line(piped).startswith("Redis user 'producer' may not run HSET on key '{t:p1}:g:state'")
    script = redis.ResponseError("The user executing the script can't access at least one of the keys")
    assert "may not make a call its script makes (EVALSHA)" in refusal_line(script, "worker", ("evalsha", "abc"))


def test_refusals_are_retried_with_backoff_up_to_30_s_and_each_said_once_until_one_goes_through():
    retries = RefusalRetries()
    refused = AclRefusal("Redis user 'reader' may not run ZADD (ACL +zadd)", "reader")
    answers = [retries.refused(refused) for _ in range(12)]
    delays = [delay for delay, _ in answers]
    assert 0.5 <= delays[1] <= 1.0 and 1.0 <= delays[2] <= 2.0 and 8.0 <= delays[5] <= 16.0, "growing, with jitter"
    assert all(15.0 <= delay <= REFUSED_RETRY_MAX_S for delay in delays[7:]), "capped"
    assert [line is not None for _, line in answers] == [True] + [False] * 11, "said once"
    other = AclRefusal("Redis user 'reader' may not run XADD (ACL +xadd)", "reader")
    assert retries.refused(other)[1] is not None, "a different refusal is said"
    assert retries.went_through() is not None and retries.went_through() is None
    assert retries.refused(refused) == (0.0, answers[0][1]), "after a step went through, a refusal is new again"


def test_a_policy_within_a_bound_waits_no_longer_refused_or_not():
    """A commit holds a lease: its retries, refused or not, stay within a second (the worker's
    commit policy), where a long-running loop's refusals wait up to 30 s."""
    retries = Retries.within(1.0)
    refused = AclRefusal("Redis user 'reader' may not run XADD (ACL +xadd)", "reader")
    waits = [retries.failed(refused)[0] for _ in range(10)] + [retries.failed(redis.ConnectionError())[0]
                                                               for _ in range(10)]
    assert max(waits) <= 1.0 and sum(waits) > 5.0, waits
    assert "up to 1s" in Retries.within(1.0).failed(refused)[1]
    assert "up to 30s" in Retries().failed(refused)[1]
