"""The web server (`python -m analytics serve`): three pages, their JSON API and one event stream
per page, read-only over the pipeline's streams and state.

Redis work runs in worker threads on the shared synchronous client (the same reads as every
other command, single server or cluster); the event loop only moves bytes. Errors are pages (or
JSON for /api/): an unknown sensor is a 404, a bad range a 400, and Redis away a 503 that says so
and reloads itself until Redis is back.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
from redis.exceptions import NoPermissionError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from analytics.export import ExportRequest, export
from analytics.streams import STREAM_KINDS, RowFilter
from analytics.web import feeds, live, pages
from analytics.web.fleet import StatusCache, fleet_snapshot, status_json
from analytics.web.sensor import BadRequest, TimeRange, rolling_of, sensor_detail
from analytics.web.tracker import FleetTracker
from consumers.rules import AlertRule
from consumers.status import collect_status
from telemetry.backoff import RETRYABLE
from telemetry.cli import PipelineConfig
from telemetry.connection import Client, RedisTarget, connect
from telemetry.errors import RedisUnavailable
from telemetry.partitions import Layout, open_layout
from telemetry.refusals import refusal_line
from telemetry.schema import SENSOR_NAME

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer"}
REDIS_ERRORS = (RedisUnavailable, *RETRYABLE)
RETRY_PAGE_S = 3
ALERT_STATES = ("firing", "resolved", "flapping", "flapping_stopped")


@dataclass(frozen=True, slots=True)
class ServeSettings:
    config: PipelineConfig
    target: RedisTarget
    rules: tuple[AlertRule, ...]
    stale_ms: int = 30_000  # a sensor with no reading for this long is drawn silent
    allowed_hosts: tuple[str, ...] = ("*",)  # Host headers answered; the loopback names when bound to loopback


class Unavailable(Exception):
    """Redis is away (or the tracker has not read the pipeline yet): a 503."""


class PipelineSource:
    """The client (made once, on first success: redis-py reconnects it after an outage) and the
    pipeline's current layout."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._lock = threading.Lock()

    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = connect(self.settings.target, announce=False, timeout_s=5.0)
            return self._client

    def open(self) -> tuple[Client, Layout]:
        db = self.client()
        return db, open_layout(db, self.settings.config.keys, None, create=False)


def create_app(settings: ServeSettings) -> Starlette:
    source = PipelineSource(settings)
    config = settings.config
    tracker = FleetTracker(source.open, config.group, config.field_map)
    status_cache = StatusCache(lambda: collect_status(source.client(), tracker.state.layout, config.group, maxlen=0))

    def ready() -> tuple[Client, Layout]:
        if tracker.error:
            raise Unavailable(tracker.error)
        if tracker.state is None:
            raise Unavailable("reading the pipeline from Redis, a moment")
        return source.client(), tracker.state.layout

    async def in_thread(call: Callable, *args):
        try:
            return await anyio.to_thread.run_sync(call, *args)
        except REDIS_ERRORS as error:
            raise Unavailable(f"Redis unreachable: {error}") from None
        except NoPermissionError as error:
            raise Unavailable(refusal_line(error)) from None

    def known_sensor(name: str) -> str:
        with tracker.lock:
            known = tracker.state is not None and name in tracker.state.known
        if not SENSOR_NAME.fullmatch(name) or not known:
            raise HTTPException(404, f"no sensor named {name!r} in pipeline {config.keys.namespace_tag!r} "
                                     f"(group {config.group!r})")
        return name

    async def fleet(request: Request) -> Response:
        ready()
        return HTMLResponse(pages.fleet_page())

    async def sensor(request: Request) -> Response:
        ready()
        return HTMLResponse(pages.sensor_page(known_sensor(request.path_params["name"])))

    async def alerts(request: Request) -> Response:
        ready()
        return HTMLResponse(pages.alerts_page())

    async def api_fleet(request: Request) -> Response:
        ready()  # the JSON is encoded in the worker thread too: 10,000 sensors are 400 kB of it
        return await in_thread(lambda: JSONResponse(fleet_snapshot(tracker, status_cache, stale_ms=settings.stale_ms)))

    async def api_status(request: Request) -> Response:
        db, _ = ready()
        return JSONResponse(await in_thread(status_json, db, tracker))

    async def api_sensor(request: Request) -> Response:
        db, layout = ready()
        name = known_sensor(request.path_params["name"])
        span = TimeRange.parse(request.query_params)
        keys = layout.partition_for(name).group(config.group)
        return await in_thread(lambda: JSONResponse(sensor_detail(db, keys, name, span, config.field_map,
                                                                  settings.rules)))

    async def api_export(request: Request) -> Response:
        db, layout = ready()
        name = known_sensor(request.path_params["name"])
        span = TimeRange.parse(request.query_params)
        kind = request.query_params.get("kind", "readings")
        if kind not in ("readings", "aggregates", "alerts"):
            raise BadRequest(f"kind {kind!r}: expected readings, aggregates or alerts")
        descriptor, path = tempfile.mkstemp(prefix="telemetry-web-", suffix=".csv")
        os.close(descriptor)
        request_ = ExportRequest(STREAM_KINDS[kind], path, RowFilter((name,), span.since_ms, span.until_ms))
        try:
            await in_thread(export, db, layout.groups(config.group), config.field_map, request_)
        except BaseException:
            Path(path).unlink(missing_ok=True)
            raise
        return FileResponse(path, media_type="text/csv", filename=f"{name}-{kind}.csv",
                            background=BackgroundTask(Path(path).unlink, missing_ok=True))

    async def api_alerts(request: Request) -> Response:
        ready()
        params = request.query_params
        filters = {name: params.get(name, "") for name in ("state", "severity", "rule", "sensor")}
        if filters["state"] not in ("", *ALERT_STATES):
            raise BadRequest(f"state {filters['state']!r}: expected one of {', '.join(ALERT_STATES)}")
        if filters["severity"] not in ("", "warning", "critical"):
            raise BadRequest(f"severity {filters['severity']!r}: expected warning or critical")
        limit_text = params.get("limit", str(feeds.DEFAULT_ALERTS))
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= feeds.MAX_ALERTS:
            raise BadRequest(f"limit {limit_text!r}: expected 1 to {feeds.MAX_ALERTS}")
        return JSONResponse(feeds.alert_lists(tracker, filters, int(limit_text)))

    def event_response(request: Request, db: Client, feed: live.LiveSource) -> Response:
        resume = request.headers.get("last-event-id") or request.query_params.get("last_id") or None
        if resume is not None and not live.valid_id(resume):
            raise BadRequest(f"last event id {resume!r} is not a stream id (ms-seq)")
        stream = live.events(db, feed, resume, request.is_disconnected)
        return EventSourceResponse(stream, ping=live.KEEPALIVE_S, headers={"X-Accel-Buffering": "no",
                                                                            "Cache-Control": "no-cache"})

    async def events_fleet(request: Request) -> Response:
        db, layout = ready()
        def status() -> dict:  # the page's counters, tables and partitions; the cells come as events
            snapshot = fleet_snapshot(tracker, status_cache, stale_ms=settings.stale_ms)
            return {name: value for name, value in snapshot.items() if name != "sensors"}

        return event_response(request, db, feeds.fleet_source(layout, config.group, config.field_map, status))

    async def events_sensor(request: Request) -> Response:
        db, layout = ready()
        name = known_sensor(request.path_params["name"])
        keys = layout.partition_for(name).group(config.group)
        status = lambda: {"rolling": rolling_of(db, keys, name)}
        return event_response(request, db, feeds.sensor_source(keys, name, config.field_map, status))

    async def events_alerts(request: Request) -> Response:
        db, layout = ready()
        return event_response(request, db, feeds.alerts_source(layout, config.group))

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def error(request: Request, status: int, title: str, message: str, retry_s: int | None = None) -> Response:
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return HTMLResponse(pages.error_page(status, title, message, retry_s=retry_s), status_code=status)

    async def on_http(request: Request, exc: HTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        detail = exc.detail if exc.status_code != 404 or "sensor" in str(exc.detail) else \
            f"nothing at {request.url.path}"
        return error(request, exc.status_code, title, str(detail))

    async def on_bad_request(request: Request, exc: BadRequest) -> Response:
        return error(request, 400, "Bad request", str(exc))

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        message = str(exc)
        if tracker.state is None and not tracker.error:
            return error(request, 503, "Starting", message, RETRY_PAGE_S)
        title = "Redis refused" if " may not " in message else "Redis unreachable"
        return error(request, 503, title,
                     f"{message} ({settings.target.masked_url}); the page shows the fleet again once Redis answers",
                     RETRY_PAGE_S)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        tracker.start()
        try:
            yield
        finally:
            tracker.stop()

    routes = [
        Route("/", fleet), Route("/sensors/{name}", sensor), Route("/alerts", alerts),
        Route("/api/fleet", api_fleet), Route("/api/status", api_status), Route("/api/alerts", api_alerts),
        Route("/api/sensors/{name}", api_sensor), Route("/api/sensors/{name}/export.csv", api_export),
        Route("/api/events/fleet", events_fleet), Route("/api/events/alerts", events_alerts),
        Route("/api/events/sensors/{name}", events_sensor),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    # A page on another site can make a browser send requests to 127.0.0.1 under its own host name
    # (DNS rebinding): a server bound to loopback answers only the loopback names.
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts))]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware, exception_handlers={
        HTTPException: on_http, BadRequest: on_bad_request, Unavailable: on_unavailable,
        **{kind: on_unavailable for kind in REDIS_ERRORS}})

    return with_security_headers(app)


def with_security_headers(app):
    """Every response, pages and API alike, carries the CSP: a pure ASGI wrapper, which leaves the
    event streams unbuffered."""
    extra = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return await app(scope, receive, send_with_headers)

    return wrapped
