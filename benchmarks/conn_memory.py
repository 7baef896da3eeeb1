"""Where an idle connection's memory goes: tracemalloc, in process.

    python -m benchmarks.conn_memory [--clients 1000] [--top 25]

Starts a rendezvous (``Server.serve``, cheap argon2, limits lifted) inside
this process on 127.0.0.1, logs ``--clients`` plain sockets in, has each send
one ``::ping``, and prints the Python memory they added per connection:
the total, then the source lines that allocated most (tracemalloc snapshots
before and after, full garbage collection first). Python objects only: the
``idle`` scenario of ``benchmarks.run`` measures the whole process (VmRSS).
Bounded: every wait has a deadline, and the server stops when it is done.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc

import trio

from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Limits, Server
from rendezvous.store import SqliteStore

PASSWORD = "benchmark-pw"
DEADLINE = 120.0


async def measure(clients: int, top: int) -> None:
    store = SqliteStore(":memory:")
    passwords = Passwords(fast_hasher())
    pw_hash = await passwords.hash(PASSWORD)
    for i in range(clients + 5):
        store.create_account(f"u{i}", pw_hash, 1.0)
    unlimited = Limits(
        max_conns=clients + 100,
        max_conns_per_ip=clients + 100,
        max_login_rate=0,
        max_cmd_rate=0,
        max_msg_rate=0,
    )
    server = Server(store, passwords=passwords, limits=unlimited)
    socks: list[trio.socket.SocketType] = []
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]

            async def log_in(i: int) -> None:
                sock = trio.socket.socket()
                await sock.connect(("127.0.0.1", port))
                await sock.send(f"username: u{i}\npassword: {PASSWORD}\n".encode())
                got = b""
                while b"Servidor[TOKEN]" not in got:
                    data = await sock.recv(4096)
                    if not data:
                        raise RuntimeError(f"u{i}: the server closed the connection")
                    got += data
                socks.append(sock)

            for i in range(5):  # warm-up: one-time costs are not the connections'
                await log_in(clients + i)
            gc.collect()
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()
            async with trio.open_nursery() as logins:
                for i in range(clients):
                    logins.start_soon(log_in, i)
            for sock in socks:
                await sock.send(b"::ping\n")
            for sock in socks:  # every PONG read: every connection is idle again
                while b"PONG" not in await sock.recv(4096):
                    pass
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            stats = after.compare_to(before, "lineno")
            total = sum(s.size_diff for s in stats)
            print(f"{total / clients:,.0f} bytes of Python objects per idle connection")
            print(f"{'bytes':>8} {'blocks':>6}  where")
            for s in stats[:top]:
                print(f"{s.size_diff / clients:8.0f} {s.count_diff / clients:6.2f}  {s.traceback}")
            for sock in socks:
                sock.close()
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.conn_memory",
        description="Python memory per idle rendezvous connection, by source line (tracemalloc).",
    )
    p.add_argument("--clients", type=int, default=1000, help="connections to open (1000)")
    p.add_argument("--top", type=int, default=25, help="source lines to list (25)")
    args = p.parse_args(argv)
    if args.clients < 1:
        p.error("--clients must be at least 1")
    trio.run(measure, args.clients, args.top)


if __name__ == "__main__":
    main()
