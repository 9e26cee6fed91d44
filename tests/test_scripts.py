"""Script calls in one round trip (EVALSHA, no SCRIPT EXISTS first), and a server that lost its
scripts (restart, SCRIPT FLUSH) is given them again without a backoff."""

from __future__ import annotations

from telemetry.refusals import Retries
from telemetry.scripts import run_until_answered

COUNTER = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


def script_commands(db) -> dict[str, int]:
    stats = db.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval", "script|exists",
                                                                                   "script|load")}


def never_unanswered(line: str) -> None:
    raise AssertionError(f"resent: {line}")


def test_calls_are_evalsha_alone(db):
    script = db.register_script(COUNTER)
    db.script_load(COUNTER)
    db.config_resetstat()
    replies = run_until_answered(db, script, [(["a"], [1]), (["b"], [2]), (["a"], [3])], None, Retries(),
                                 never_unanswered, "calls")
    assert replies == [1, 2, 4]
    assert script_commands(db) == {"evalsha": 3, "eval": 0, "script|exists": 0, "script|load": 0}


def test_a_server_without_the_script_is_given_it_and_each_call_runs_once(db):
    script = db.register_script(COUNTER)
    db.script_load(COUNTER)
    db.script_flush()
    db.config_resetstat()
    replies = run_until_answered(db, script, [(["a"], [1]), (["b"], [2])], None, Retries(), never_unanswered, "calls")
    assert replies == [1, 2]
    assert (int(db.get("a")), int(db.get("b"))) == (1, 2)
    assert script_commands(db)["script|load"] == 1
