"""The floor: the least a relay in Python on trio can do, to measure chathack against.

    python -m benchmarks.floor_relay --port 0     # prints "floor relay listening on H:P"

It speaks just enough IRC for the benchmark's load generator (``NICK``,
``USER``, ``PRIVMSG``, ``PING``), one trio task per connection over bare
non-blocking sockets, and keeps nothing a real server needs: no limits, no
accounts, no checks of the text, no outbox bound. Whatever chathack costs
above this is the price of what it guarantees, or fat to cut.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys

import trio

RECV_BYTES = 65536


class Client:
    __slots__ = ("nick", "pending", "prefix", "sock", "wake")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.nick = b""
        self.prefix = b""
        self.pending = bytearray()  # what the socket did not take yet
        self.wake: trio.Event | None = None

    def send(self, data: bytes) -> None:
        if self.pending:
            self.pending += data
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        if sent < len(data):
            self.pending += data[sent:]
            if self.wake is not None:
                self.wake.set()


class Relay:
    def __init__(self) -> None:
        self.by_nick: dict[bytes, Client] = {}

    async def serve(self, listener: socket.socket) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                await trio.lowlevel.wait_readable(listener)
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client = Client(sock)
                nursery.start_soon(self.read, client)
                nursery.start_soon(self.write, client)

    async def write(self, client: Client) -> None:
        """Flush what a slow reader left behind (idle otherwise)."""
        while True:
            client.wake = trio.Event()
            await client.wake.wait()
            while client.pending:
                await trio.lowlevel.wait_writable(client.sock)
                try:
                    sent = client.sock.send(client.pending)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                del client.pending[:sent]

    async def read(self, client: Client) -> None:
        sock, buf = client.sock, b""
        by_nick = self.by_nick
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    data = sock.recv(RECV_BYTES)
                except BlockingIOError:
                    continue
                if not data:
                    return
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.startswith(b"PRIVMSG "):
                        target, _, text = line[8:].partition(b" ")
                        to = by_nick.get(target)
                        if to is not None:
                            to.send(client.prefix + target + b" " + text.rstrip(b"\r") + b"\r\n")
                    elif line.startswith(b"NICK "):
                        client.nick = line[5:].strip()
                        by_nick[client.nick] = client
                        client.prefix = b":" + client.nick + b"!f@127.0.0.1 PRIVMSG "
                    elif line.startswith(b"USER "):
                        client.send(b":floor 001 " + client.nick + b" :Welcome\r\n")
                    elif line.startswith(b"PING"):
                        client.send(b"PONG" + line[4:].rstrip(b"\r") + b"\r\n")
        finally:
            if by_nick.get(client.nick) is client:
                del by_nick[client.nick]
            trio.lowlevel.notify_closing(sock)
            sock.close()


async def main_async(host: str, port: int) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(4096)
    listener.setblocking(False)
    bound = listener.getsockname()
    print(f"floor relay listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    await Relay().serve(listener)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main_async, args.host, args.port)


if __name__ == "__main__":
    main()
