"""Sockets that share one local port: the listener for direct links, the
connection to the rendezvous, and hole-punching dials.

Why one port: a NAT maps our (local address, port) to a public endpoint when
we connect to the rendezvous, which reports that endpoint to partners. An
endpoint-independent NAT (Linux MASQUERADE, most home routers) reuses the
same mapping for every connection from that local port, so a partner's SYN to
our public endpoint can cross ours (TCP simultaneous open). SO_REUSEADDR and
SO_REUSEPORT let the listener and the outgoing connections bind the same port.
"""

from __future__ import annotations

import errno
import socket as stdsocket

import trio

#: Pending connections the direct-link listener queues.
BACKLOG = 64


def _reusable(family: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(family, stdsocket.SOCK_STREAM)
    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
    if hasattr(stdsocket, "SO_REUSEPORT"):
        sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 1)
    return sock


def _family(host: str) -> int:
    return stdsocket.AF_INET6 if ":" in host else stdsocket.AF_INET


async def open_listener(host: str, port: int) -> trio.SocketListener:
    """A TCP listener on ``host:port`` (port 0: a free one) that shares its port."""
    sock = _reusable(_family(host))
    try:
        await sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def connect_from(local: tuple[str, int], remote: tuple[str, int]) -> trio.SocketStream:
    """Connect to ``remote`` from the local address ``local`` (shared port).

    Raises OSError like ``connect``; the caller sets the deadline.
    """
    sock = _reusable(_family(remote[0]))
    try:
        await sock.bind(local)
        await sock.connect(remote)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def resolve_all(host: str, port: int) -> list[tuple[str, int]]:
    """Every address of ``host`` (numeric IPv4 ones first), without repeats."""
    infos = await trio.socket.getaddrinfo(host, port, type=stdsocket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != stdsocket.AF_INET)
    addrs: list[tuple[str, int]] = []
    for info in infos:
        addr = (str(info[4][0]), int(info[4][1]))
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise OSError(errno.EHOSTUNREACH, f"no address for {host}")
    return addrs


async def resolve(host: str, port: int) -> tuple[str, int]:
    """``host`` as a numeric IPv4 address when it has one (else IPv6)."""
    infos = await trio.socket.getaddrinfo(host, port, type=stdsocket.SOCK_STREAM)
    infos.sort(key=lambda info: info[0] != stdsocket.AF_INET)
    if not infos:
        raise OSError(errno.EHOSTUNREACH, f"no address for {host}")
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])


def wildcard_for(host: str) -> str:
    return "::" if ":" in host else "0.0.0.0"
