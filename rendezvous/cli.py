"""``chathack-rendezvous``: run the rendezvous server."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import platformdirs
import trio

from chathack import __version__
from chathack.errors import sole_error
from rendezvous.cluster_engine import DEFAULT_LEASE, ClusterEngine
from rendezvous.cluster_store import AccountReplica, ClusterStore
from rendezvous.limit_flags import (
    add_limit_flags,
    add_mail_flags,
    limits_from_args,
    mail_limits_from_args,
)
from rendezvous.limits import Limits
from rendezvous.logfmt import JsonFormatter
from rendezvous.login_guard import RedisLoginGuard
from rendezvous.mailbox import MailLimits
from rendezvous.metrics import MetricsApp, serve_metrics
from rendezvous.redis_mail import RedisMailStore
from rendezvous.redis_shared import RedisShared
from rendezvous.redis_shared import connect as redis_connect
from rendezvous.server import Server
from rendezvous.shared import SharedStoreDown
from rendezvous.shared_mailbox import SharedMailbox
from rendezvous.shared_prekeys import RedisPrekeys, SharedPrekeys
from rendezvous.store import SqliteStore, StoreError
from rendezvous.tls import (
    TLSConfigError,
    fingerprint_of_file,
    load_or_create_certificate,
    server_context,
)

DEFAULT_PORT = 7777
#: Cyclic-GC thresholds for the server process (``gc.set_threshold``): a
#: young collection every 50,000 net allocations instead of 700, and full
#: collections rarely. Why: every connection keeps ~100 GC-tracked objects
#: alive (tasks, coroutine frames, cancel scopes), so with 10,000 peers a full
#: collection walks ~1M objects and stalled the event loop for 0.5-2.6 s
#: (idle pings answered after seconds); at the default thresholds collection
#: took 13% of the relay's CPU at 100 pairs, 43% at 1,000 (benchmarks/README.md).
#: Little of what the server allocates per message is cyclic, so rarer
#: collections cost memory only briefly.
GC_THRESHOLDS = (50_000, 20, 1_000)
#: Seconds the server takes on SIGINT/SIGTERM to handle what it has read,
#: say goodbye to every client and flush.
SHUTDOWN_FLUSH_SECONDS = 2.0

log = logging.getLogger("chathack.rendezvous")


def default_db() -> Path:
    return Path(platformdirs.user_data_dir("chathack")) / "rendezvous.sqlite3"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chathack-rendezvous",
        description="Run the chathack rendezvous server: accounts, who is online and where, "
        "and the relay for peers that cannot reach each other directly.",
    )
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (default: %(default)s)")
    p.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"SQLite file for accounts and addresses (default: {default_db()})",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log detail on stderr (default: %(default)s)",
    )
    p.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="log lines as text, or one JSON object a line with its fields "
        "(ts, level, logger, event, args, message) for a log pipeline (default: %(default)s)",
    )
    p.add_argument(
        "--metrics",
        type=metrics_address,
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics (/metrics) and health checks (/healthz, /readyz) "
        "over HTTP here; HOST defaults to 127.0.0.1 (off by default; docs/OPERATIONS.md)",
    )
    tls = p.add_argument_group(
        "TLS",
        "encrypt the rendezvous dialogue (passwords, who talks to whom); conversations "
        "are end-to-end encrypted either way (docs/SECURITY.md)",
    )
    tls.add_argument(
        "--tls",
        action="store_true",
        help="serve TLS with a self-signed certificate kept beside the --db file "
        "(made on first use); peers pin its fingerprint, printed at startup",
    )
    tls.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve TLS with this certificate (PEM; implies --tls)",
    )
    tls.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="the private key of --tls-cert (PEM)"
    )
    cluster = p.add_argument_group(
        "several instances",
        "run this server as one of several sharing one Redis: accounts, who is online, "
        "the relay and resume tokens are shared (docs/OPERATIONS.md)",
    )
    cluster.add_argument(
        "--redis",
        metavar="URL",
        help="share state through this Redis 7: redis://HOST:PORT/DB (rediss:// for TLS)",
    )
    cluster.add_argument(
        "--instance-id",
        metavar="ID",
        help="this instance's name among the others, unique and stable (default: HOSTNAME-PORT)",
    )
    cluster.add_argument(
        "--lease",
        type=float,
        default=DEFAULT_LEASE,
        metavar="SECONDS",
        help="how long the others wait for this instance before its users count as "
        "offline; it closes its sessions when it cannot renew for this long "
        "(default: %(default)s)",
    )
    add_limit_flags(p)
    add_mail_flags(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def metrics_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``PORT`` (on 127.0.0.1: metrics are not for everyone)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not (port.isascii() and port.isdigit() and 0 <= int(port) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r}: give [HOST:]PORT, such as 127.0.0.1:9464")
    return host, int(port)


async def run(
    server: Server,
    host: str,
    port: int,
    metrics: MetricsApp | None = None,
    metrics_at: tuple[str, int] | None = None,
) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            listeners = await nursery.start(server.serve, host, port)
            addr = listeners[0].socket.getsockname()
            print(
                f"chathack-rendezvous listening on {addr[0]}:{addr[1]}", file=sys.stderr, flush=True
            )
            if metrics is not None and metrics_at is not None:
                try:
                    served = await nursery.start(serve_metrics, metrics, *metrics_at)
                except OSError as e:  # told as what it is, not as the chat port
                    where = f"{metrics_at[0]}:{metrics_at[1]}"
                    raise ValueError(f"--metrics {where}: cannot listen: {e.strerror or e}") from e
                where = served[0].socket.getsockname()
                print(
                    f"chathack-rendezvous metrics on http://{where[0]}:{where[1]}/metrics",
                    file=sys.stderr,
                    flush=True,
                )
            async for signum in signals:
                log.info("got %s; telling clients and shutting down", signal.Signals(signum).name)
                if await server.shut_down(SHUTDOWN_FLUSH_SECONDS):
                    log.info("every connection closed; exiting")
                nursery.cancel_scope.cancel()
                break


async def run_cluster(
    server: Server,
    engine: ClusterEngine,
    host: str,
    port: int,
    metrics: MetricsApp | None = None,
    metrics_at: tuple[str, int] | None = None,
) -> None:
    """``run`` with this instance's part in the cluster around it."""
    async with engine.shared.r:
        await engine.load()
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            await run(server, host, port, metrics, metrics_at)
            await engine.leave()
            nursery.cancel_scope.cancel()


def instance_id(args: argparse.Namespace) -> str:
    given = args.instance_id or f"{socket.gethostname()}-{args.port}"
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", given)[:64]
    if args.instance_id is not None and cleaned != args.instance_id:
        raise ValueError(
            f"--instance-id {args.instance_id!r}: use letters, digits, '.', '_' and '-' "
            "(64 at most)"
        )
    return cleaned


def cluster_server(
    args: argparse.Namespace, store: SqliteStore, limits: Limits, mail_limits: MailLimits
) -> tuple[Server, ClusterEngine]:
    """A server sharing accounts, presence, relay and tokens through ``--redis``."""
    if not args.lease > 0:
        raise ValueError(f"--lease {args.lease:g}: give a number of seconds above 0")
    client = redis_connect(args.redis)
    shared = RedisShared(client)
    replica = AccountReplica()
    engine = ClusterEngine(shared, instance_id(args), replica, lease=args.lease)
    cluster_store = ClusterStore(store, replica, engine.write, shared)
    mailbox = SharedMailbox(
        RedisMailStore(client), cluster_store, lambda name: None, engine.nudge_far, mail_limits
    )
    prekeys = SharedPrekeys(RedisPrekeys(client), cluster_store, lambda name, event: None)
    server = Server(
        cluster_store,
        limits=limits,
        mail_limits=mail_limits,
        cluster=engine,
        accounts=shared,
        token_book=shared,
        claims=shared,
        mailbox=mailbox,
        prekeys=prekeys,
        guard=RedisLoginGuard(client, limits.max_new_accounts),
    )
    engine.bind(server.hub, mailbox, prekeys)
    return server, engine


def tls_from_args(args: argparse.Namespace, db: Path) -> ssl.SSLContext | None:
    """The server's TLS context from the flags (None: plain TCP, with a warning)."""
    if args.tls_cert is None and args.tls_key is None and not args.tls:
        log.warning(
            "serving PLAIN TCP: passwords, names and addresses cross the network in "
            "the clear (conversations stay end-to-end encrypted); use --tls"
        )
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise TLSConfigError(
            "--tls-cert and --tls-key go together: give both, or use --tls "
            "alone for a self-signed certificate"
        )
    if args.tls_cert is not None:
        cert, key = args.tls_cert, args.tls_key
    else:
        cert, key = load_or_create_certificate(db.parent)
    context = server_context(cert, key)
    print(
        f"chathack-rendezvous TLS certificate {cert}\n"
        f"  SHA-256 fingerprint {fingerprint_of_file(cert)}\n"
        "  (peers pin it on first use: tell your users to compare it)",
        file=sys.stderr,
        flush=True,
    )
    return context


def metrics_app(
    args: argparse.Namespace, server: Server, engine: ClusterEngine | None
) -> MetricsApp | None:
    if args.metrics is None:
        return None
    server.time_reads = True
    instance = engine.instance if engine is not None else None
    return MetricsApp(server, readiness(server, engine), instance)


def readiness(server: Server, engine: ClusterEngine | None) -> Callable[[], Awaitable[str | None]]:
    """What /readyz checks: the server accepts, its storage answers."""

    async def ready() -> str | None:
        if server.closing:
            return "shutting down"
        try:
            server.hub.store.count_accounts()
        except Exception as e:
            return f"the database does not answer: {e}"
        if engine is not None:
            try:
                await engine.shared.ping()
            except SharedStoreDown as e:
                return f"Redis does not answer: {e}"
        return None

    return ready


def tune_gc() -> None:
    """Collect rarely, and never look at the start-up objects again (see GC_THRESHOLDS)."""
    gc.collect()
    # Everything alive now (modules, classes, the store) lives as long as the
    # process: move it out of the collector's sight so full collections skip it.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # the database holds password hashes, mail and addresses
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    limits = limits_from_args(args)
    db = args.db or default_db()
    try:
        store = SqliteStore(db, mail_sync=args.mail_sync.upper())
    except StoreError as e:
        print(f"chathack-rendezvous: {e}", file=sys.stderr)
        return 2
    log.info("accounts in %s", db)
    try:
        tls_context = tls_from_args(args, db)
    except TLSConfigError as e:
        print(f"chathack-rendezvous: {e}", file=sys.stderr)
        store.close()
        return 2
    try:
        try:
            if args.redis:
                server, engine = cluster_server(args, store, limits, mail_limits_from_args(args))
                server.tls_context = tls_context
                metrics = metrics_app(args, server, engine)
                tune_gc()
                trio.run(run_cluster, server, engine, args.host, args.port, metrics, args.metrics)
            else:
                server = Server(store, limits=limits, mail_limits=mail_limits_from_args(args))
                server.tls_context = tls_context
                metrics = metrics_app(args, server, None)
                tune_gc()
                trio.run(run, server, args.host, args.port, metrics, args.metrics)
        except BaseExceptionGroup as group:
            raise (sole_error(group) or group) from None
    except SharedStoreDown as e:
        print(
            f"chathack-rendezvous: cannot use the Redis at {args.redis}: {e}. "
            "Is it running, and is the URL right?",
            file=sys.stderr,
        )
        return 2
    except ValueError as e:
        print(f"chathack-rendezvous: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"chathack-rendezvous: cannot listen on {args.host}:{args.port}: {e.strerror or e}. "
            "Is another server running there? Pick another --port.",
            file=sys.stderr,
        )
        return 2
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
