"""Run the web server: bind first (so a port in use is one line and exit 2, and --port 0 can say
which port it got), then hand the socket to uvicorn, which stops on SIGINT/SIGTERM."""

from __future__ import annotations

import errno
import socket
import sys

import uvicorn

from analytics.web.app import ServeSettings, create_app
from consumers.rules import AlertRule
from telemetry.cli import PipelineConfig
from telemetry.errors import UsageError

GRACEFUL_S = 3  # open event streams are closed after this long on a stop


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        reason = "in use" if error.errno == errno.EADDRINUSE else error.strerror
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({reason})") from None
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def allowed_hosts(host: str) -> tuple[str, ...]:
    """Bound to loopback, only requests addressed to a loopback name are answered; bound to an
    address others reach, any name (a proxy in front decides)."""
    return LOOPBACK_NAMES if host in LOOPBACK_NAMES or host.startswith("127.") else ("*",)


def serve(config: PipelineConfig, *, host: str, port: int, rules: tuple[AlertRule, ...], stale_ms: int) -> int:
    target = config.target()
    listener = bind(host, port)
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(target.describe(), file=sys.stderr)
    print(f"serve: http://{shown}:{bound}/ (pipeline {config.keys.namespace_tag!r}, group {config.group!r}; "
          "Ctrl-C stops)", file=sys.stderr, flush=True)
    app = create_app(ServeSettings(config, target, rules, stale_ms, allowed_hosts(host)))
    # Threads waiting on Redis replies get the interpreter back within 1 ms of a reply, not 5, while
    # the follower thread decodes readings: a snapshot makes no round trip, but a sensor page many.
    sys.setswitchinterval(0.001)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACEFUL_S,
                                           lifespan="on"))
    server.run(sockets=[listener])
    return 0
