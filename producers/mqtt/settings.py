"""The bridge's settings: which broker and how to reach it, what to subscribe to, how to read it.
Built once from the flags and the environment, validated with messages naming the flag."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from producers.mqtt.formats import DEFAULT_TOPICS, FormatOptions
from telemetry.errors import UsageError

PASSWORD_ENV = "MQTT_PASSWORD"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
DEFAULT_MAX_IN_FLIGHT = 1000  # as Telegraf's max_undelivered_messages


@dataclass(frozen=True, slots=True)
class BrokerTarget:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __repr__(self) -> str:  # never the password
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str, *, password_file: Path | None = None, ca_file: Path | None = None,
                 cert_file: Path | None = None, key_file: Path | None = None,
                 environ: dict | None = None, flag: str = "--from-mqtt") -> BrokerTarget:
        """The password comes from $MQTT_PASSWORD or --mqtt-password-file, never from the URL,
        where every user of the machine would read it in `ps`."""
        environ = os.environ if environ is None else environ
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise UsageError(f"{flag} {url!r}: expected mqtt://[user@]host[:port] or mqtts://...")
        if parts.password is not None:
            raise UsageError(f"{flag}: put the password in ${PASSWORD_ENV} or a file (--mqtt-password-file), "
                             "not in the URL")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise UsageError(f"{flag} {url!r}: the port is not a number from 1 to 65535") from None
        tls = parts.scheme == "mqtts"
        for file_flag, path in (("--mqtt-ca", ca_file), ("--mqtt-cert", cert_file), ("--mqtt-key", key_file)):
            if path is not None and not tls:
                raise UsageError(f"{file_flag}: only with mqtts://")
            if path is not None and not path.is_file():
                raise UsageError(f"{file_flag} {path}: no such file")
        if (cert_file is None) != (key_file is None):
            raise UsageError("--mqtt-cert and --mqtt-key go together")
        password = None
        if password_file is not None:
            try:
                password = password_file.read_text().rstrip("\n")
            except OSError as error:
                raise UsageError(f"--mqtt-password-file {password_file}: {error.strerror}") from None
        elif environ.get(PASSWORD_ENV):
            password = environ[PASSWORD_ENV]
        username = unquote(parts.username) if parts.username else None
        if password is not None and username is None:
            raise UsageError(f"{flag}: a password is given but the URL names no user (mqtt://user@host)")
        return cls(parts.hostname, port, tls, username, password, ca_file, cert_file, key_file)


def default_client_id(prefix: str) -> str:
    """Fixed for a pipeline and a host, so a restarted bridge resumes its session at the broker;
    a second bridge on the same host needs its own --client-id."""
    return f"telemetry-{prefix}-{socket.gethostname()}"[:64]


@dataclass(frozen=True, slots=True)
class BridgeSettings:
    broker: BrokerTarget
    format_name: str
    options: FormatOptions
    client_id: str
    topics: tuple[str, ...] = ()
    share_group: str | None = None  # MQTT 5 shared subscription: bridges of one group split the messages
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT  # messages received and not yet acknowledged (MQTT 5 Receive Maximum)
    batch_size: int = 1000  # messages per write
    linger_s: float = 0.02  # how long a step waits for more messages once one has come
    session_expiry_s: int = 7 * 86_400  # how long the broker keeps the session of a bridge that is away
    duration_s: float | None = None
    keepalive_s: int = 30

    @property
    def step_fill(self) -> int:
        """Messages a lingering step waits for: half the in-flight bound, so the broker can send
        the next step's messages while this one is written."""
        return max(1, self.max_in_flight // 2)

    def __post_init__(self) -> None:
        if not self.client_id or len(self.client_id) > 64:
            raise UsageError("--client-id: 1-64 characters")
        if self.share_group is not None and any(char in self.share_group for char in "/+#"):
            raise UsageError(f"--share {self.share_group!r}: a share name has no '/', '+' or '#'")
        for topic in self.subscriptions():
            levels = topic.split("/")
            if not topic or any(("+" in level and level != "+") or ("#" in level and (level != "#" or at < len(levels) - 1))
                                for at, level in enumerate(levels)):
                raise UsageError(f"--topic {topic!r}: not an MQTT topic filter")

    def subscriptions(self) -> tuple[str, ...]:
        """The topic filters as subscribed: the format's own when --topic is not given."""
        topics = self.topics or ((DEFAULT_TOPICS[self.format_name],) if self.format_name in DEFAULT_TOPICS else ())
        if not topics:
            raise UsageError(f"--format {self.format_name}: say what to subscribe to (--topic FILTER)")
        return topics

    def subscribed(self) -> list[str]:
        if self.share_group is None:
            return list(self.subscriptions())
        return [f"$share/{self.share_group}/{topic}" for topic in self.subscriptions()]
