"""ACL refusals as one line that names what is missing.

Redis answers a command its user may not run with `NOPERM`, naming the command at best and never
the key ("no permissions to access one of the keys used as arguments"). The connections made by
`telemetry.connection` remember the command they sent last and its first key, so the error can
say "user 'reader' may not run XADD on key '{telemetry:p3.41}:readings'": enough to fix the ACL
without reading the server's ACL LOG. In a pipeline redis-py names the command itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import redis
from redis.exceptions import NoPermissionError

from telemetry.backoff import Backoff

# redis-py's note on a pipeline's failed command: "Command # 2 (XADD {t}:readings * ...) of pipeline caused error: "
_PIPELINE_NOTE = re.compile(r"Command # \d+ \((\S+)(?: (\S+))?[^)]*\) of pipeline caused error: ")
_DENIED_COMMAND = re.compile(r"run the '([^']+)' command")
# A script's own call refused by the caller's ACL comes back as a plain error (ERR), not NOPERM.
SCRIPT_CALL_DENIED = "The user executing the script"


class AclRefusal(NoPermissionError):
    """A NOPERM reply, with the user it was given to; `named` once its message names the command."""

    def __init__(self, message: str, user: str | None = None, named: bool = True) -> None:
        super().__init__(message)
        self.user = user
        self.named = named


def refusal_line(error: NoPermissionError, user: str | None = None, command: tuple = ()) -> str:
    """One line: who may not do what, then Redis's own words."""
    if getattr(error, "named", False):
        return str(error)
    user = user or getattr(error, "user", None)
    text = " ".join(str(error).split())
    note = _PIPELINE_NOTE.search(text)
    if note:
        command = tuple(part for part in note.groups() if part)
        text = text[note.end():]
    who = f"Redis user {user!r}" if user else "the Redis user"
    name = command[0].upper() if command else None
    denied = _DENIED_COMMAND.search(text)
    if denied:
        what = f"may not run {denied.group(1).upper()} (ACL +{denied.group(1).lower()})"
    elif SCRIPT_CALL_DENIED in text:
        what = f"may not make a call its script makes{f' ({name})' if name else ''}"
    elif "keys" in text and name:
        key = f" on key {command[1]!r}" if len(command) > 1 else ""
        what = f"may not run {name}{key} (no key pattern of the user allows it)"
    elif "channel" in text:
        what = "may not use that Pub/Sub channel"
    else:
        what = f"was refused {name}" if name else "was refused a command"
    return f"{who} {what}: {text}"


def retry_reason(error: Exception) -> str:
    """Why a long-running command retries: Redis away, or an ACL that an operator may yet fix."""
    if isinstance(error, NoPermissionError):
        return refusal_line(error)
    return f"Redis did not answer ({error.__class__.__name__})"


def _as_text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NamesRefusals:
    """Keeps the last command sent alone (not a pipeline's packed ones) to name it in a refusal."""

    _last_command: tuple = ()

    def send_packed_command(self, *args, **kwargs):
        self._last_command = ()
        return super().send_packed_command(*args, **kwargs)

    def send_command(self, *args, **kwargs):
        super().send_command(*args, **kwargs)
        self._last_command = tuple(_as_text(part)[:200] for part in args[:2])

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)
        except AclRefusal:
            raise
        except redis.ResponseError as error:
            if not isinstance(error, NoPermissionError) and SCRIPT_CALL_DENIED not in str(error):
                raise
            if not self._last_command:  # in a pipeline: redis-py adds the command to the message
                raise AclRefusal(str(error), self.username, named=False) from None
            raise AclRefusal(refusal_line(error, self.username, self._last_command), self.username) from None


REFUSED_RETRY_MAX_S = 30.0


@dataclass(slots=True)
class RefusalRetries:
    """How a long-running process retries a command its ACL refuses. A refusal does not heal by
    retrying quickly (an operator has to change the user), so the retries back off with jitter up
    to REFUSED_RETRY_MAX_S, apart from the transport errors' backoff, which any answer from Redis
    resets; and each refusal is said once, not at every retry, until a step goes through."""

    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1.0, max_s=REFUSED_RETRY_MAX_S))
    said: set[str] = field(default_factory=set)

    def refused(self, error: NoPermissionError) -> tuple[float, str | None]:
        """The delay before the next try, and the line to say (None when it was said already)."""
        delay = self.backoff.next_delay()
        reason = retry_reason(error)
        if reason in self.said:
            return delay, None
        self.said.add(reason)
        return delay, (f"{reason}; retrying with backoff up to {self.backoff.max_s:.0f}s "
                       "(said again if the refusal changes)")

    def went_through(self) -> str | None:
        """After a step Redis accepted: the line saying the refusals ended (None if there were none)."""
        self.backoff.reset()
        if not self.said:
            return None
        self.said.clear()
        return "no longer refused; going on"


@dataclass(slots=True)
class Retries:
    """How a long-running process retries a call Redis did not carry out, whatever the call: a
    transport error at once, then with the transport's backoff, said at each retry (an outage is
    news); an ACL refusal with RefusalRetries' longer backoff, said once. One policy for the
    producer, the bridge, the notifier, the worker and their setup, so none of them floods its
    log or hammers Redis while an operator fixes a user."""

    transport: Backoff = field(default_factory=Backoff)
    refusals: RefusalRetries = field(default_factory=RefusalRetries)

    @classmethod
    def within(cls, max_s: float) -> Retries:
        """Every wait, refused or not, at most `max_s`: for a call that holds something which
        lapses (a commit within its lease)."""
        return cls(transport=Backoff(max_s=max_s), refusals=RefusalRetries(Backoff(initial_s=max_s, max_s=max_s)))

    def failed(self, error: Exception, retrying: str = "") -> tuple[float, str | None]:
        """The delay before the next try, and the line to say (None when it was said already);
        `retrying` names what is retried ("100 unconfirmed readings")."""
        if isinstance(error, NoPermissionError):
            return self.refusals.refused(error)
        delay = self.transport.next_delay()
        what = f"{retrying} " if retrying else ""
        return delay, f"{retry_reason(error)}; retrying {what}" + (f"in {delay:.1f}s" if delay else "at once")

    def went_through(self) -> str | None:
        """After a call Redis carried out: both backoffs start over; the line saying the refusals
        ended (None if there were none)."""
        self.transport.reset()
        return self.refusals.went_through()
