"""The driver of direct links: accepting and running them, and looking for them.

Each link gets an integer id, and the core (:mod:`peer.core`) knows it only
by that id: :class:`~peer.core.records.LinkUp` when it is up,
:class:`~peer.core.records.LinkFrame` for each frame, and
:class:`~peer.core.records.LinkDown` when it is gone. What runs here is what
the core cannot do: a reader task per link, a keepalive (pings; a link
silent for :data:`LINK_DEAD_AFTER` s is dropped), and the background search
for a path (:mod:`peer.paths`: the direct race, then hole punching timed by
the rendezvous).

How links are made is behind :class:`Dialer`: TCP (:class:`TcpDialer`)
today; a UDP or QUIC dialer plugs in beside it without touching the core,
which only ever sees ids and frames.
"""

from __future__ import annotations

import logging
from typing import Protocol

import trio

from chathack.errors import RemoteProtocolError
from chathack.link import Frame, Ping, Pong
from chathack.protocol import ClientEvent, Punch
from peer import direct, paths
from peer.core.candidates import Candidates
from peer.core.records import Input, LinkDown, LinkFrame, LinkInfo, LinkUp, PunchFailed
from peer.errors import LinkFailed
from peer.faults import Faults

log = logging.getLogger("chathack.peer")

#: Seconds between keepalive pings on a direct link.
LINK_PING_INTERVAL = 1.0
#: Seconds without any frame after which a direct link counts as dead.
LINK_DEAD_AFTER = 4.0
#: Seconds to wait for an answer when checking that a link still works.
LINK_PROBE_TIMEOUT = 1.5
#: Incoming links at once, in all and from one address: a chat client has a
#: few partners; strangers holding connections open must not take every
#: descriptor (the core also closes a link that has not verified in 10 s).
MAX_INCOMING = 128
MAX_INCOMING_PER_ADDRESS = 16


class IncomingCaps:
    """How many incoming links each remote address holds (sans-IO)."""

    def __init__(self, total: int = MAX_INCOMING, per_address: int = MAX_INCOMING_PER_ADDRESS):
        self.total, self.per_address = total, per_address
        self.held: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        if sum(self.held.values()) >= self.total or self.held.get(address, 0) >= self.per_address:
            return False
        self.held[address] = self.held.get(address, 0) + 1
        return True

    def release(self, address: str) -> None:
        left = self.held.get(address, 0) - 1
        if left > 0:
            self.held[address] = left
        else:
            self.held.pop(address, None)


class Dialer(Protocol):
    """Makes links to a partner; raises :class:`~peer.errors.LinkFailed`."""

    async def race(self, cands: Candidates) -> direct.DirectLink: ...

    async def punch(self, name: str, remote: tuple[str, int]) -> direct.DirectLink: ...


class TcpDialer:
    """Direct TCP links, dialled from (and punched through) our listening port."""

    def __init__(self, me: str, epoch: str, local: tuple[str, int] | None) -> None:
        self.me, self.epoch, self.local = me, epoch, local

    async def race(self, cands: Candidates) -> direct.DirectLink:
        return await paths.race_direct(cands, self.me, self.epoch)

    async def punch(self, name: str, remote: tuple[str, int]) -> direct.DirectLink:
        if self.local is None:
            raise LinkFailed("this peer has no listening port to punch from")
        return await paths.punch(remote, self.local, self.me, name, self.epoch)


class Host(Protocol):
    """What the links need from the peer they serve."""

    def feed(self, event: Input) -> None: ...
    def current_link(self, name: str) -> int | None: ...
    def send_server(self, event: ClientEvent) -> bool: ...
    def can_punch(self) -> bool: ...
    def note(self, name: str, outcome: str) -> None: ...


class Links:
    def __init__(
        self, me: str, host: Host, dialer: Dialer, nursery: trio.Nursery, faults: Faults
    ) -> None:
        self.me = me
        self.host = host
        self.dialer = dialer
        self.nursery = nursery
        self.faults = faults
        self.links: dict[int, direct.DirectLink] = {}
        self._next_id = 0
        self._searches: dict[str, trio.CancelScope] = {}  # folded name -> its search
        self.caps = IncomingCaps()

    # ------------------------------------------------------------ running
    def send(self, link_id: int, frame: Frame) -> bool:
        link = self.links.get(link_id)
        return link is not None and link.send(frame)

    def close(self, link_id: int) -> None:
        link = self.links.get(link_id)
        if link is not None:
            link.writer.finish()

    def writers(self) -> list[object]:
        return [link.writer for link in self.links.values()]

    def start(self, link: direct.DirectLink) -> None:
        self.nursery.start_soon(
            self.faults.contain, f"the direct link to {link.partner}", self.run, link
        )

    async def accept(self, stream: trio.SocketStream, epoch: str) -> None:
        try:
            address = str(stream.socket.getpeername()[0])
        except OSError:
            address = "?"
        if not self.caps.admit(address):
            log.info("refused an incoming link from %s: too many at once", address)
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._accept(stream, epoch)
        finally:
            self.caps.release(address)

    async def _accept(self, stream: trio.SocketStream, epoch: str) -> None:
        # trio.serve_listeners runs this in its own nursery: what escapes it
        # would stop the listener and then the whole peer.
        try:
            link = await direct.accept(stream, self.me, epoch)
        except LinkFailed as e:
            log.info("refused an incoming link: %s", e)
            await trio.aclose_forcefully(stream)
            return
        except Exception as exc:
            self.faults.report("an incoming direct link", exc, "that link was closed")
            await trio.aclose_forcefully(stream)
            return
        await self.faults.contain(f"the direct link to {link.partner}", self.run, link)

    async def run(self, link: direct.DirectLink) -> None:
        self._next_id += 1
        link_id = self._next_id
        self.links[link_id] = link
        link.received()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.writer.run)
                nursery.start_soon(self._keepalive, link)
                self.host.feed(LinkUp(LinkInfo(link_id, link.partner, link.path, link.dialer)))
                await self._read(link_id, link)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await link.aclose()
            del self.links[link_id]
            self.host.feed(LinkDown(link_id))

    async def _read(self, link_id: int, link: direct.DirectLink) -> None:
        while True:
            try:
                frame = await link.reader.next_frame()
            except RemoteProtocolError as e:
                log.info("closing link to %s: %s", link.partner, e)
                return
            if frame is None or link_id not in self.links:
                return
            link.received()
            match frame:
                case Ping(nonce):
                    link.send(Pong(nonce))
                case Pong():
                    pass
                case _:
                    self.host.feed(LinkFrame(link_id, frame))

    async def _keepalive(self, link: direct.DirectLink) -> None:
        nonce = 0
        while True:
            await trio.sleep(LINK_PING_INTERVAL)
            if trio.current_time() - link.last_rx > LINK_DEAD_AFTER:
                log.info("link to %s silent for %.0f s: dropping it", link.partner, LINK_DEAD_AFTER)
                await trio.aclose_forcefully(link.stream)
                return
            nonce += 1
            link.send(Ping(nonce))

    async def _alive(self, link: direct.DirectLink) -> bool:
        """Whether ``link`` still carries traffic: ping it and wait for any frame."""
        before = link.last_rx
        if not link.send(Ping(0)):
            return False
        with trio.move_on_after(LINK_PROBE_TIMEOUT):
            while link.last_rx <= before:
                await link.heard.wait()
            return True
        return False

    # ---------------------------------------------------------- searching
    def search(self, cands: Candidates) -> None:
        """(Re)start looking for a direct path to ``cands.name`` in the background."""
        key = cands.name.lower()
        self.stop_search(key)
        scope = self._searches[key] = trio.CancelScope()
        self.nursery.start_soon(
            self.faults.contain, f"the upgrade to {cands.name}", self._search, cands, scope
        )

    def stop_search(self, name: str) -> None:
        old = self._searches.pop(name.lower(), None)
        if old is not None:
            old.cancel()

    async def _search(self, cands: Candidates, scope: trio.CancelScope) -> None:
        key = cands.name.lower()
        try:
            with scope:
                await self._search_steps(cands)
        finally:
            if self._searches.get(key) is scope:
                del self._searches[key]

    async def _search_steps(self, cands: Candidates) -> None:
        current = self.links.get(self.host.current_link(cands.name) or 0)
        if current is not None:
            if await self._alive(current):
                return
            await trio.aclose_forcefully(current.stream)  # dead: replace it
        try:
            link = await self.dialer.race(cands)
        except LinkFailed as e:
            self.host.note(cands.name, f"direct race failed ({e})")
        else:
            self.host.note(cands.name, f"{link.path} link up")
            self.start(link)
            return
        if self.host.current_link(cands.name) is not None:
            return  # the partner reached us meanwhile
        if cands.public is None or not self.host.can_punch():
            self.host.note(cands.name, "no public endpoints to punch with")
            return
        if cands.called:  # the callee asks (the rendezvous allows no other); both get PUNCH
            self.host.send_server(Punch(cands.name))

    def punch(self, name: str, remote: tuple[str, int]) -> None:
        self.nursery.start_soon(
            self.faults.contain, f"the hole punch to {name}", self._punch, name, remote
        )

    async def _punch(self, name: str, remote: tuple[str, int]) -> None:
        # The partner asks for a punch only when it has no link to us: one we
        # still hold is most likely dead (we moved, say), and is checked.
        current = self.links.get(self.host.current_link(name) or 0)
        if current is not None:
            if await self._alive(current):
                return
            await trio.aclose_forcefully(current.stream)
        try:
            link = await self.dialer.punch(name, remote)
        except LinkFailed as e:
            self.host.feed(PunchFailed(name, str(e)))
            return
        self.host.note(name, f"{link.path} link up (punch)")
        self.start(link)
