"""The notifier's throughput and delay: alert events per second from the partitions' alert streams to
a local webhook receiver that answers 200 at once (the receiver in a process of its own), against
a plain keep-alive POST loop to the same receiver in the same run; and the delay from an alert
event's write to its delivery at 100 events/s (p50, p99)."""

from __future__ import annotations

import http.client
import json
import multiprocessing
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

from consumers.notify.messages import Notice, webhook_body
from consumers.notify.notifier import Notifier
from consumers.notify.signing import parse_secret
from consumers.notify.sinks import Rendering, RetryPolicy, WebhookSink
from scripts.bench_common import Figure, Stopwatch, bench_redis, parser, print_figures
from telemetry.keys import Keys
from telemetry.partitions import open_layout
from telemetry.records import AlertEvent
from telemetry.timeutil import now_ms

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EVENTS = 20_000
SENSORS = 1_000
LIVE_RATE = 100
LIVE_SECONDS = 15


def _serve(port_pipe) -> None:
    arrivals: list[tuple[int, int]] = []  # (arrival ms, event ts ms)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            if self.path == "/timed":
                alert = json.loads(body)["alerts"][0]
                arrivals.append((now_ms(), int(alert["annotations"]["written_ms"])))

        def do_GET(self) -> None:
            answer = json.dumps(arrivals).encode()
            arrivals.clear()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_pipe.send(server.server_address[1])
    server.serve_forever()


def alert(number: int, ts_ms: int) -> AlertEvent:
    sensor = f"bench-{number % SENSORS:04d}"
    state = "firing" if (number // SENSORS) % 2 == 0 else "resolved"
    return AlertEvent(f"hot:{sensor}:{1_700_000_000_000 + number // (2 * SENSORS)}", "hot", "threshold", sensor,
                      "critical", state, 41.5, 40.0, ts_ms, "°C")


def write(db, layout, events: list[AlertEvent]) -> None:
    pipeline = db.pipeline(transaction=False)
    for event in events:
        fields = event.fields()
        pipeline.xadd(layout.partition_for(event.sensor).group("aggregators").alerts, dict(zip(fields[::2], fields[1::2])))
    pipeline.execute()


def notifier(db, layout, sink: WebhookSink, group: str, **options) -> Notifier:
    streams = [keys.alerts for keys in layout.groups("aggregators")]
    return Notifier(db, streams, Keys("bench").notify(group), "bench", [sink], **options)


def webhook(url: str, kind: type[WebhookSink] = WebhookSink) -> WebhookSink:
    return kind(url, Rendering("bench", "http://localhost:8080"), RetryPolicy(), 5.0, parse_secret(SECRET, "bench"))


def plain_posts(port: int, count: int) -> float:
    """The floor: the same bodies POSTed one after another on one kept-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port)
    bodies = [webhook_body(Notice("s", "1-0", alert(i, 0), {}), "bench", "http://x", "r") for i in range(count)]
    with Stopwatch() as watch:
        for body in bodies:
            connection.request("POST", "/plain", body=body, headers={"Content-Type": "application/json"})
            connection.getresponse().read()
    return count / watch.seconds


class TimedSink(WebhookSink):
    """Delivers to /timed with the write time in an annotation, for the receiver to measure."""

    def request(self, notices):
        body, headers = super().request(notices)
        document = json.loads(body)
        document["alerts"][0]["annotations"]["written_ms"] = notices[0].fields["written_ms"]
        return json.dumps(document).encode(), headers


def main() -> None:
    args = parser(__doc__).parse_args()
    receive, send = multiprocessing.Pipe()
    receiver = multiprocessing.Process(target=_serve, args=(send,), daemon=True)
    receiver.start()
    port = receive.recv()
    url = f"http://127.0.0.1:{port}/hook"
    try:
        with bench_redis(args.redis_url) as redis_url:
            db = redis.Redis.from_url(redis_url, decode_responses=True)
            db.flushdb()
            layout = open_layout(db, Keys("bench"), 16)
            write(db, layout, [alert(i, 1_700_000_000_000 + i) for i in range(EVENTS)])
            floor = plain_posts(port, 5_000)
            sink = webhook(url)
            drain = notifier(db, layout, sink, "drain", start="all", drain=True)
            cpu_before = time.process_time()
            with Stopwatch() as watch:
                drain.run(lambda: False)
            cpu_us = (time.process_time() - cpu_before) / EVENTS * 1e6
            assert sink.counts.delivered == EVENTS, sink.counts
            rate = EVENTS / watch.seconds
            live = notifier(db, layout, webhook(url.replace("/hook", "/timed"), TimedSink), "live", start="new")
            live.ensure_groups()
            delays = live_delays(db, layout, live, port)
    finally:
        receiver.kill()
    delays.sort()
    figures = [Figure("webhook events/s (drain of 20,000)", rate, "events/s", "plain keep-alive POST loop", floor,
                      ">= 2,000/s"),
               Figure("notifier CPU per event (drain)", cpu_us, "µs"),
               Figure(f"delay p50 at {LIVE_RATE} events/s", delays[len(delays) // 2], "ms"),
               Figure(f"delay p99 at {LIVE_RATE} events/s", delays[int(len(delays) * 0.99) - 1], "ms", target="< 500 ms")]
    print_figures("notify to a webhook", figures, args.json)


def live_delays(db, layout, live: Notifier, port: int) -> list[int]:
    """Events written at LIVE_RATE while the notifier follows; delay = arrival - write."""
    total = LIVE_RATE * LIVE_SECONDS
    done = threading.Event()

    def writer() -> None:
        start = time.monotonic()
        for number in range(total):
            time.sleep(max(0.0, start + number / LIVE_RATE - time.monotonic()))
            event = alert(EVENTS + number, now_ms())
            fields = event.fields()
            db.xadd(layout.partition_for(event.sensor).group("aggregators").alerts,
                    {**dict(zip(fields[::2], fields[1::2])), "written_ms": str(now_ms())})
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    live.run(lambda: done.is_set() and live.sinks[0].counts.delivered >= total, grace_s=5)
    thread.join()
    connection = http.client.HTTPConnection("127.0.0.1", port)
    connection.request("GET", "/stats")
    arrivals = json.loads(connection.getresponse().read())
    return [arrived - written for arrived, written in arrivals]


if __name__ == "__main__":
    main()
