"""A TCP proxy in front of the rendezvous that loses one line on purpose.

It stands between one peer and the rendezvous on 127.0.0.1 and forwards
both ways, except the first line from the peer that ``drop`` picks: what a
rendezvous (or a path to it) that lost a relayed frame would leave behind.
Threads, not trio: the peers are real processes, and the test around it is
synchronous (pexpect). :meth:`DroppingProxy.close` ends every thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress

#: Seconds a thread of the proxy may take to notice it is closed.
JOIN_TIMEOUT = 5.0


class DroppingProxy:
    def __init__(self, upstream: tuple[str, int], drop: Callable[[bytes], bool]) -> None:
        self.upstream = upstream
        self.drop = drop
        self.dropped: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._sockets: list[socket.socket] = [self._server]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._start(self._accept)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            self._start(self._up, client, server)
            self._start(self._down, server, client)

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        """Peer to rendezvous, line by line, losing the one ``drop`` picks."""
        pending = b""
        while data := _recv(client):
            pending += data
            *lines, pending = pending.split(b"\n")
            out = b""
            for line in lines:
                with self._lock:
                    lose = not self.dropped and self.drop(line)
                    if lose:
                        self.dropped.append(line)
                if not lose:
                    out += line + b"\n"
            if out and not _send(server, out):
                break
        _shut(server)

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        while (data := _recv(server)) and _send(client, data):
            pass
        _shut(client)

    def close(self) -> None:
        for sock in self._sockets:
            _shut(sock)
            sock.close()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _shut(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
