"""What operators see: Prometheus metrics and health checks over HTTP.

``chathack-rendezvous --metrics 127.0.0.1:9464`` serves, on the same trio
process as the relay (one small HTTP/1.1 exchange per connection, with h11):

* ``GET /metrics``: the Prometheus text format, made by **prometheus-client**
  from :class:`rendezvous.counts.Counts` and the server's own state at scrape
  time (:class:`ServerCollector`). Nothing is computed on the relay's path
  but integer increments; no label holds a user name, an address or text.
* ``GET /healthz``: 200 while the process serves (it answered);
* ``GET /readyz``: 200 when the server accepts connections and its storage
  answers within :data:`READY_TIMEOUT` (SQLite, and Redis with ``--redis``);
  503 with the reason otherwise.

``docs/OPERATIONS.md`` says what each metric means and what to alert on.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Awaitable, Callable, Iterator

import h11
import trio
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from chathack import __version__
from rendezvous.counts import Histogram
from rendezvous.redis_shared import REDIS_STATS
from rendezvous.server import Server

log = logging.getLogger("chathack.rendezvous.metrics")

#: Seconds /readyz waits for the storage before it answers "not ready".
READY_TIMEOUT = 2.0
#: Seconds one HTTP exchange may take (a scraper that stalls is dropped).
REQUEST_TIMEOUT = 10.0
MAX_REQUEST_BYTES = 16 * 1024

#: A readiness check: None when ready, else why not.
ReadyCheck = Callable[[], Awaitable[str | None]]


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], hist.cumulative(), sum_value=hist.total)
    return family


def _by(
    name: str, doc: str, label: str, counts: dict[str, int], keys: tuple[str, ...] = ()
) -> CounterMetricFamily:
    """A counter family with one sample per key (``keys`` always present, at 0)."""
    family = CounterMetricFamily(name, doc, labels=[label])
    for key in sorted({*keys, *counts}):
        family.add_metric([key], counts.get(key, 0))
    return family


class ServerCollector(Collector):
    """The rendezvous's metrics, read from the server at each scrape."""

    def __init__(self, server: Server, instance: str | None = None) -> None:
        self.server = server
        self.instance = instance  # with --redis: this instance's id
        self.started = time.time()

    def collect(self) -> Iterator[Metric]:
        server, counts = self.server, self.server.counts
        info = GaugeMetricFamily(
            "chathack_build_info",
            "Version of chathack and of Python (always 1)",
            labels=["version", "python"],
        )
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
        yield GaugeMetricFamily(
            "chathack_start_time_seconds", "When this process started", value=self.started
        )
        logged_in = len(server.hub.online)
        conns = GaugeMetricFamily(
            "chathack_connections", "Open client connections, by state", labels=["state"]
        )
        conns.add_metric(["logging_in"], max(0, len(server.connections) - logged_in))
        conns.add_metric(["logged_in"], logged_in)
        yield conns
        yield CounterMetricFamily(
            "chathack_connections_accepted",
            "Client connections admitted",
            value=counts.accepted,
        )
        yield _by(
            "chathack_connections_refused",
            "Client connections refused before any line, by reason",
            "reason",
            counts.refused,
            ("full", "per_address", "shutting_down"),
        )
        yield _by(
            "chathack_connection_faults",
            "Connections ended by an unexpected error (a bug), by exception type",
            "type",
            server.faults,
        )
        yield _by(
            "chathack_logins",
            "Login attempts by outcome: password, registered, resumed (in); failed "
            "(wrong password or token); throttled (told to retry before any hash)",
            "outcome",
            counts.logins,
            ("password", "registered", "resumed", "failed", "throttled"),
        )
        queue = server.logins.hash_queue
        depth = GaugeMetricFamily(
            "chathack_password_hash_queue",
            "Password checks and hashes by stage: reserved (waiting out a back-off), "
            "queued (waiting for a worker), running",
            labels=["stage"],
        )
        depth.add_metric(["reserved"], queue.reserved)
        depth.add_metric(["queued"], queue.queued)
        depth.add_metric(["running"], queue.running)
        yield depth
        yield _histogram(
            "chathack_password_hash_wait_seconds",
            "Seconds a password check or hash waited in the queue for a worker",
            queue.waits,
        )
        yield _by(
            "chathack_password_hash_refused",
            "Password checks refused before any hash, by reason",
            "reason",
            queue.refused,
        )
        yield CounterMetricFamily(
            "chathack_relayed_lines", "Chat lines relayed", value=counts.relayed_lines
        )
        yield CounterMetricFamily(
            "chathack_relayed_bytes", "Bytes of relayed chat lines", value=counts.relayed_bytes
        )
        yield _histogram(
            "chathack_read_handled_seconds",
            "Seconds from a client's read to its lines handled and their output "
            "written or queued (each read; the relay's latency inside the server)",
            counts.relay_latency,
        )
        mail = {k: v for k, v in counts.mail.items() if not k.startswith("refused_")}
        yield _by(
            "chathack_mail",
            "Mailbox events: stored, delivered, read, expired",
            "event",
            mail,
            ("stored", "delivered", "read", "expired"),
        )
        refused = {k[8:]: v for k, v in counts.mail.items() if k.startswith("refused_")}
        yield _by(
            "chathack_mail_refused",
            "Mail refused, by code (full: the recipient's quota)",
            "code",
            refused,
            ("full",),
        )
        waiting = self._mail_depth()
        if waiting is not None:
            gauge = GaugeMetricFamily(
                "chathack_mailbox_waiting",
                "Messages waiting for their recipients (unit: messages or bytes)",
                labels=["unit"],
            )
            gauge.add_metric(["messages"], waiting[0])
            gauge.add_metric(["bytes"], waiting[1])
            yield gauge
        yield CounterMetricFamily(
            "chathack_slow_readers_disconnected",
            "Clients dropped for taking nothing for the write timeout",
            value=counts.slow_readers,
        )
        yield CounterMetricFamily(
            "chathack_outbox_overflows",
            "Clients dropped because their outbox filled",
            value=counts.outbox_overflows,
        )
        yield _by(
            "chathack_rate_limited",
            "Pauses imposed by a rate limit, by kind",
            "kind",
            counts.rate_limited,
            ("chat", "command", "login"),
        )
        if self.instance is not None:
            yield from self._cluster()

    def _mail_depth(self) -> tuple[int, int] | None:
        depth = getattr(self.server.hub.store.mail, "depth", None)  # SQLite only
        if depth is None or self.instance is not None:
            return None  # with Redis the mail is the cluster's, not this instance's
        try:
            return depth()
        except Exception as e:  # a scrape must not fail for one figure
            log.warning("mailbox depth not read: %s", e)
            return None

    def _cluster(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "chathack_instance_info",
            "This instance's id among several (always 1)",
            labels=["instance"],
        )
        info.add_metric([str(self.instance)], 1)
        yield info
        yield CounterMetricFamily("chathack_redis_commands", "Redis calls", value=REDIS_STATS.calls)
        yield _by(
            "chathack_redis_errors",
            "Failed Redis calls: down (unreachable, timed out), fault (refused)",
            "kind",
            REDIS_STATS.errors,
            ("down", "fault"),
        )
        yield _histogram(
            "chathack_redis_call_seconds", "Seconds per Redis call", REDIS_STATS.seconds
        )
        engine = self.server.hub.cluster
        resubscribed = getattr(engine, "counts", {}).get("resubscribed", 0)
        yield CounterMetricFamily(
            "chathack_redis_reconnects",
            "Times the subscription to the other instances was lost and made again",
            value=resubscribed,
        )


class MetricsApp:
    """The answers of the metrics port: /metrics, /healthz, /readyz."""

    def __init__(self, server: Server, ready: ReadyCheck, instance: str | None = None) -> None:
        self.server = server
        self.ready = ready
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServerCollector(server, instance))

    async def respond(self, method: str, target: str) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain; charset=utf-8", b"ok\n"
        if path == "/readyz":
            why: str | None = "storage did not answer in time"
            with trio.move_on_after(READY_TIMEOUT):
                why = await self.ready()
            if why is None:
                return 200, "text/plain; charset=utf-8", b"ready\n"
            return 503, "text/plain; charset=utf-8", f"not ready: {why}\n".encode()
        return 404, "text/plain; charset=utf-8", b"/metrics, /healthz or /readyz\n"


async def _exchange(app: MetricsApp, stream: trio.abc.Stream) -> None:
    """One request, one answer, then close (``Connection: close``)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
    request: h11.Request | None = None
    try:
        while request is None:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(MAX_REQUEST_BYTES))
            elif isinstance(event, h11.Request):
                request = event
            else:
                return  # closed before asking anything
        status, ctype, body = await app.respond(
            request.method.decode("ascii", "replace"), request.target.decode("ascii", "replace")
        )
    except h11.RemoteProtocolError:
        status, ctype, body = 400, "text/plain; charset=utf-8", b"bad request\n"
        conn = h11.Connection(h11.SERVER)  # answer it on a fresh state machine
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
    head = request is not None and request.method == b"HEAD"
    headers = [
        ("Content-Type", ctype),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
    if not head:
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)


async def serve_metrics(
    app: MetricsApp,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the metrics port until cancelled; ``started()`` gets the listeners."""
    listeners = await trio.open_tcp_listeners(port, host=host)

    async def handle(stream: trio.SocketStream) -> None:
        await answer(app, stream)

    task_status.started(listeners)
    await trio.serve_listeners(handle, listeners)


async def answer(app: MetricsApp, stream: trio.abc.Stream) -> None:
    """One connection to the metrics port: answered (or dropped after
    :data:`REQUEST_TIMEOUT`), then closed; nothing escapes it."""
    try:
        with trio.move_on_after(REQUEST_TIMEOUT):
            await _exchange(app, stream)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the scraper went away
    except Exception as e:  # a bug here must not stop the rendezvous
        log.error("metrics request failed: %r", e)
    finally:
        await trio.aclose_forcefully(stream)
