"""The notifier's settings, validated once with messages that name the flag."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from consumers.notify.http_post import check_url
from consumers.notify.signing import parse_secret
from consumers.notify.sinks import RetryPolicy
from telemetry.errors import UsageError

SECRET_ENV = "TELEMETRY_WEBHOOK_SECRET"
DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class NotifySettings:
    alertmanagers: tuple[str, ...] = ()
    webhooks: tuple[str, ...] = ()
    webhook_key: bytes | None = None
    notify_group: str = "notifiers"
    consumer: str = ""
    start: str = "new"  # where a new notifier group starts on the alert streams: new | all
    timeout_s: float = 5.0
    retry: RetryPolicy = DEFAULT_RETRY
    resend_ms: int = 60_000  # Alertmanager re-send interval of the alerts still firing
    claim_idle_ms: int = 30_000  # a dead notifier's unacknowledged notices move after this long
    max_in_flight: int = 20_000  # events read and not acknowledged, in all
    max_queued: int = 1000  # reading goes on while some sink has fewer waiting
    webhook_connections: int = 4  # lanes per webhook: a sensor's events keep to one, in order
    external_url: str = "http://localhost:8080"
    receiver: str = "telemetry"
    block_ms: int = 100
    drain: bool = False  # stop once nothing is left to read and everything read has ended
    duration_ms: int | None = None

    def __post_init__(self) -> None:
        if not self.alertmanagers and not self.webhooks:
            raise UsageError("notify: give at least one sink: --alertmanager URL or --webhook URL")
        for url in self.alertmanagers:
            check_url("--alertmanager", url)
        for url in self.webhooks:
            check_url("--webhook", url)
        check_url("--external-url", self.external_url)
        if self.webhooks and self.webhook_key is None:
            raise UsageError(f"--webhook: signing needs a secret: set {SECRET_ENV} or give --webhook-secret-file "
                             "(whsec_<base64>)")
        if self.resend_ms <= 0 or self.claim_idle_ms <= 0 or self.timeout_s <= 0:
            raise UsageError("notify: --resend, --claim-idle and --timeout must be positive")
        if not self.consumer:
            object.__setattr__(self, "consumer", f"{socket.gethostname()}-{os.getpid()}")

    @property
    def horizon_ms(self) -> int:
        """endsAt of a firing alert, ahead of now: four re-send intervals, as Prometheus sets it."""
        return 4 * self.resend_ms


def webhook_key(secret_file: Path | None, env: dict[str, str] | os._Environ = os.environ) -> bytes | None:
    """The signing key: --webhook-secret-file, else TELEMETRY_WEBHOOK_SECRET, else none."""
    if secret_file is not None:
        try:
            text = secret_file.read_text()
        except OSError as error:
            raise UsageError(f"--webhook-secret-file {secret_file}: {error.strerror}") from None
        return parse_secret(text, f"--webhook-secret-file {secret_file}")
    if env.get(SECRET_ENV):
        return parse_secret(env[SECRET_ENV], SECRET_ENV)
    return None
