"""What every command shares: one-line errors with exit 2, the Redis flags, and graceful stop."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from redis.exceptions import NoPermissionError

from telemetry import __version__
from telemetry.backoff import RETRYABLE, Backoff
from telemetry.connection import SKIP_VERIFY_FLAG, RedisTarget, connect, resolve_target
from telemetry.errors import RedisUnavailable, UsageError
from telemetry.keys import Keys, validate_name
from telemetry.partitions import Layout, legacy_layout_note, open_layout
from telemetry.refusals import Retries, refusal_line
from telemetry.schema import FieldMap
from telemetry.scripts import ReplicaWait


class CommandParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage dump) and exits 2, with --version."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def number_type(kind: type, *, minimum: float | None = None, above: float | None = None,
                maximum: float | None = None) -> Callable[[str], float]:
    """An argparse type that rejects values outside the allowed range (NaN and infinity included)
    with a clear message."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text} is above the maximum {maximum:g}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum {minimum:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{text} must be greater than {above:g}")
        return value

    return convert


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every command shares; each means the same in every command."""
    group = parser.add_argument_group("redis")
    group.add_argument("--redis-url", help="redis://, rediss:// or unix:// URL (default: $REDIS_URL, "
                       "else localhost:6379 if it answers, else the embedded server); a password in it is "
                       "visible in `ps`: prefer $REDIS_URL or --redis-password-file")
    group.add_argument("--redis-password-file", type=Path, metavar="FILE",
                       help="the password of the URL's user, read from FILE (default: "
                            "$TELEMETRY_REDIS_PASSWORD_FILE); e.g. one written by `python -m telemetry acl --secrets`")
    group.add_argument(SKIP_VERIFY_FLAG, action="store_true",
                       help="rediss:// without checking the server's certificate and host name (insecure: "
                            "anyone on the path can pose as the server)")
    group.add_argument("--prefix", default=os.environ.get("TELEMETRY_PREFIX", "telemetry"),
                       help="key prefix and hash tag (default: $TELEMETRY_PREFIX or 'telemetry')")
    group.add_argument("--stream", dest="stream_key", help="readings stream key, verbatim (default: {PREFIX}:readings)")
    group.add_argument("--partitions", type=number_type(int, minimum=1),
                       help="partition streams of a new pipeline (default 16); an existing one keeps its own")
    group.add_argument("--group", default=os.environ.get("TELEMETRY_GROUP", "aggregators"),
                       help="consumer group, whose state and outputs these are (default: $TELEMETRY_GROUP or "
                            "'aggregators')")
    group.add_argument("--fields", default=os.environ.get("TELEMETRY_FIELDS", "default"),
                       help="entry field names: 'default', 'seed' (sensor_id/temp/humidity) or "
                            "PART=NAME,... e.g. sensor=sensor_id,temperature_c=temp")


def add_replica_wait_argument(parser: argparse.ArgumentParser) -> None:
    """For the commands that write: trade latency for what a failover can lose."""
    parser.add_argument("--wait-replicas", type=number_type(int, minimum=0), default=0, metavar="N",
                        help="after each write, WAIT until N replicas have it (up to 1s; default 0: "
                             "replication stays asynchronous and a failover can lose the last writes)")


def replica_wait(args: argparse.Namespace, who: str) -> ReplicaWait | None:
    return ReplicaWait(who, args.wait_replicas) if args.wait_replicas else None


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Where the pipeline's data lives and how readings are spelled, shared by every command."""

    redis_url: str | None
    keys: Keys
    field_map: FieldMap
    group: str = "aggregators"
    partitions: int | None = None
    password_file: Path | None = None
    tls_skip_verify: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PipelineConfig:
        return cls(redis_url=args.redis_url, keys=Keys(args.prefix, args.stream_key),
                   field_map=FieldMap.parse(args.fields), group=validate_name("--group", args.group),
                   partitions=args.partitions, password_file=args.redis_password_file,
                   tls_skip_verify=args.redis_tls_skip_verify)

    def layout(self, db, *, create: bool = True) -> Layout:
        """The pipeline's partitions (created on first use, unless a reader passes create=False);
        a note on stderr if old-layout data is found."""
        layout = open_layout(db, self.keys, self.partitions, create=create)
        note = legacy_layout_note(db, self.keys)
        if note:
            print(note, file=sys.stderr)
        return layout

    def target(self, env: Mapping[str, str] = os.environ) -> RedisTarget:
        return resolve_target(self.redis_url, env, password_file=self.password_file,
                              tls_skip_verify=self.tls_skip_verify)


def connect_with_retry(config: PipelineConfig, stop: StopSignal):
    """Long-running commands wait for Redis instead of failing: say so, back off, try again.
    A refused password or a server that is not Redis will not change by waiting: those fail at once."""
    target = config.target()
    backoff = Backoff(max_s=10.0)
    announce = True
    while True:
        try:
            return connect(target, announce=announce)
        except RedisUnavailable as error:
            if stop.requested:
                raise
            delay = backoff.next_delay()
            print(f"{error}; retrying in {delay:.1f}s", file=sys.stderr)
            announce = False
            time.sleep(delay)


Answer = TypeVar("Answer")


def until_answered(who: str, call: Callable[[], Answer], stop: StopSignal) -> Answer:
    """A long-running command's setup (the pipeline record, a producer's saved seqs), retried with
    backoff while Redis does not answer: a connection that drops right after it was made is a
    flaky network, not a reason to exit."""
    retries = Retries(transport=Backoff(max_s=10.0))
    while True:
        try:
            answer = call()
            if (ended := retries.went_through()) is not None:
                print(f"{who}: {ended}", file=sys.stderr)
            return answer
        except (*RETRYABLE, NoPermissionError) as error:
            if stop.requested:
                raise
            delay, line = retries.failed(error)
            if line is not None:
                print(f"{who}: {line}", file=sys.stderr)
            stop.wait(delay)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a command's main and turn expected failures into one line and an exit code."""
    try:
        code = main(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        code = 2
    except RedisUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        code = 1
    except NoPermissionError as error:
        print(f"error: {refusal_line(error)}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    raise SystemExit(code)


class StopSignal:
    """The first SIGINT/SIGTERM asks the loop to finish its batch; a second one exits at once."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> StopSignal:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def wait(self, seconds: float) -> None:
        """Sleeps up to `seconds`, less once a stop is asked for: a refused call's retry may wait
        30 s, which must not hold up a Ctrl-C (a signal does not cut a sleep short in Python)."""
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(0.2, left))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            os._exit(128 + signum)
        self.requested = True
