"""A line-level TCP proxy in front of the rendezvous: a lying or lossy one.

It stands between one peer and the rendezvous on 127.0.0.1 and forwards
both ways line by line, through a rewrite function per direction that may
drop a line, change it, or add lines (inject, replay): what a rendezvous that
lies, or a path to it that an attacker controls, would do. It records every
line the peer sent. Threads, not trio: the peers are real processes and the
tests around it are synchronous (pexpect). :meth:`LineProxy.close` ends every
thread.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress

#: Seconds a thread of the proxy may take to notice it is closed.
JOIN_TIMEOUT = 5.0


Rewrite = Callable[[bytes], list[bytes]]


def as_is(line: bytes) -> list[bytes]:
    return [line]


def drop_first(pick: Callable[[bytes], bool], dropped: list[bytes]) -> Rewrite:
    """Lose the first line ``pick`` chooses (recorded in ``dropped``)."""

    def rewrite(line: bytes) -> list[bytes]:
        if not dropped and pick(line):
            dropped.append(line)
            return []
        return [line]

    return rewrite


class LineProxy:
    def __init__(
        self, upstream: tuple[str, int], up: Rewrite = as_is, down: Rewrite = as_is
    ) -> None:
        self.upstream = upstream
        self.up, self.down = up, down
        self.sent: list[bytes] = []  # every line the peer sent, before any rewrite
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
            self._start(self._pump, client, server, self.up, True)
            self._start(self._pump, server, client, self.down, False)

    def _pump(self, source: socket.socket, sink: socket.socket, rewrite: Rewrite, up: bool) -> None:
        pending = b""
        while data := _recv(source):
            pending += data
            *lines, pending = pending.split(b"\n")
            out = b""
            for line in lines:
                with self._lock:
                    if up:
                        self.sent.append(line)
                    out += b"".join(new + b"\n" for new in rewrite(line))
            if out and not _send(sink, out):
                break
        _shut(sink)

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
