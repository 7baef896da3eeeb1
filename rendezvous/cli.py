"""``chathack-rendezvous``: run the rendezvous server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import platformdirs
import trio

from chathack import __version__
from chathack.errors import sole_error
from rendezvous.limit_flags import (
    add_limit_flags,
    add_mail_flags,
    limits_from_args,
    mail_limits_from_args,
)
from rendezvous.server import Server
from rendezvous.store import SqliteStore, StoreError

DEFAULT_PORT = 7777
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
    add_limit_flags(p)
    add_mail_flags(p)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


async def run(server: Server, host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            listeners = await nursery.start(server.serve, host, port)
            addr = listeners[0].socket.getsockname()
            print(
                f"chathack-rendezvous listening on {addr[0]}:{addr[1]}", file=sys.stderr, flush=True
            )
            async for signum in signals:
                log.info("got %s; telling clients and shutting down", signal.Signals(signum).name)
                if await server.shut_down(SHUTDOWN_FLUSH_SECONDS):
                    log.info("every connection closed; exiting")
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    limits = limits_from_args(args)
    db = args.db or default_db()
    try:
        store = SqliteStore(db, mail_sync=args.mail_sync.upper())
    except StoreError as e:
        print(f"chathack-rendezvous: {e}", file=sys.stderr)
        return 2
    log.info("accounts in %s", db)
    try:
        try:
            server = Server(store, limits=limits, mail_limits=mail_limits_from_args(args))
            trio.run(run, server, args.host, args.port)
        except BaseExceptionGroup as group:
            raise (sole_error(group) or group) from None
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
