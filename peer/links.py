"""The peer's direct links and the search for them, as a part of
:class:`peer.node.PeerNode` (a mixin, so the node stays readable).

* accepting and running links: each link has a reader (this task), a writer
  task and a keepalive; a link carries a conversation only once its own key
  exchange verified the partner (:mod:`peer.pathsec`), and the best of two
  links to one partner is kept by both ends alike (``DirectLink.rank``);
* losing a link: switch to a spare one, else fall back to the relay and
  re-send what was not acknowledged;
* upgrading a conversation in the background (:mod:`peer.paths`): the direct
  race, then hole punching timed by the rendezvous.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from chathack.errors import RemoteProtocolError
from chathack.link import Ping
from chathack.protocol import Punch, format_client_event
from peer import direct, paths, pathsec
from peer.errors import LinkFailed
from peer.events import System

if TYPE_CHECKING:
    from peer.node import PeerNode as _Node
    from peer.node import Talk

    _Base = _Node
else:
    _Base = object

log = logging.getLogger("chathack.peer")

#: Seconds between keepalive pings on a direct link.
LINK_PING_INTERVAL = 1.0
#: Seconds without any frame after which a direct link counts as dead.
LINK_DEAD_AFTER = 4.0
#: Seconds to wait for an answer when checking that a link still works.
LINK_PROBE_TIMEOUT = 1.5
#: Upgrade outcomes ``::netcheck`` remembers.
NETCHECK_HISTORY = 10


class LinkMixin(_Base):
    # ------------------------------------------------------------ direct links
    async def _accept(self, stream: trio.SocketStream) -> None:
        # trio.serve_listeners runs this in its own nursery: what escapes it
        # would stop the listener and then the whole node.
        try:
            link = await direct.accept(stream, self.me, self.epoch)
        except LinkFailed as e:
            log.info("refused an incoming link: %s", e)
            await trio.aclose_forcefully(stream)
            return
        except Exception as exc:
            self.faults.report("an incoming direct link", exc, "that link was closed")
            await trio.aclose_forcefully(stream)
            return
        await self.faults.contain(f"the direct link to {link.partner}", self._run_link, link)

    async def _run_link(self, link: direct.DirectLink) -> None:
        link.received()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.writer.run)
                nursery.start_soon(self._link_keepalive, link)
                if pathsec.link_initiator(self, link):
                    pathsec.start(self, link.partner, link.sec, link)
                while True:
                    try:
                        frame = await link.reader.next_frame()
                    except RemoteProtocolError as e:
                        log.info("closing link to %s: %s", link.partner, e)
                        break
                    if frame is None:
                        break
                    link.received()
                    try:
                        self._on_frame(link.partner, frame, link)
                    except Exception as exc:
                        # A frame this side cannot handle: this link ends (the
                        # conversation falls back to the relay), nothing else.
                        self.faults.report(
                            f"a frame from {link.partner}", exc, "that direct link was closed"
                        )
                        break
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await link.aclose()
            self._link_lost(link)

    async def _link_keepalive(self, link: direct.DirectLink) -> None:
        nonce = 0
        while True:
            await trio.sleep(LINK_PING_INTERVAL)
            if trio.current_time() - link.last_rx > LINK_DEAD_AFTER:
                log.info("link to %s silent for %.0f s: dropping it", link.partner, LINK_DEAD_AFTER)
                await trio.aclose_forcefully(link.stream)
                return
            nonce += 1
            link.send(Ping(nonce))

    async def _link_alive(self, link: direct.DirectLink) -> bool:
        """Whether ``link`` still carries traffic: ping it and wait for any frame."""
        before = link.last_rx
        if not link.send(Ping(0)):
            return False
        with trio.move_on_after(LINK_PROBE_TIMEOUT):
            while link.last_rx <= before:
                await link.heard.wait()
            return True
        return False

    def link_verified(self, link: direct.DirectLink) -> None:
        """The key exchange on ``link`` proved the partner: use it if it is the best."""
        if not self._adopt_link(link):
            link.writer.finish()

    def relay_verified(self, partner: str) -> None:
        """The key exchange on the relay finished: what waited for it goes now."""
        talk = self.talks.get(partner.lower())
        if talk is not None and talk.open and talk.link is None:
            self.resend(talk)

    def resend(self, talk: Talk) -> None:
        for chat in talk.conv.to_resend():
            self._send_frame(talk, chat)

    def _adopt_link(self, link: direct.DirectLink) -> bool:
        """Make ``link`` the talk's path unless a better one is up; False: not taken."""
        talk = self._talk_for(link.partner, link)
        current = talk.link
        if current is not None and current is not link and current.rank() >= link.rank():
            return False  # both ends keep the same (higher-ranked) link
        talk.links.add(link)
        talk.link, talk.plain = link, False
        was = talk.path
        talk.path = link.path
        if current is not None and current is not link:
            current.writer.finish()
        if was != talk.path:
            how = "directly" if talk.path == "direct" else "through a punched hole"
            self.emit(System(f"Now talking to {talk.partner} {how} ({talk.path})"))
            self._status_changed()
        self.resend(talk)
        self._linked.setdefault(link.partner.lower(), trio.Event()).set()
        return True

    def _link_lost(self, link: direct.DirectLink) -> None:
        talk = self.talks.get(link.partner.lower())
        if talk is None:
            return
        talk.links.discard(link)
        if talk.link is not link:
            return
        talk.link = None
        spare = max(talk.links, key=lambda x: x.rank(), default=None)
        if spare is not None and talk.open:
            self._adopt_link(spare)
        elif talk.open and not self.closed:
            self._fall_back(talk, "The direct link broke")

    def _partner_left(self, talk: Talk, text: str) -> None:
        """The partner went offline: what it did not confirm goes to the mailbox."""
        if talk.link is not None:
            self.emit(System(f"{text}; your direct link to {talk.partner} goes on"))
            return
        talk.offline = True
        pending = talk.conv.to_resend()
        talk.conv.unacked.clear()
        for chat in pending:  # same id as on the link: the partner shows it once
            self.mail.send(talk, chat.text, chat.sent_at, msg_id=f"{self.epoch}-{chat.seq}")
        self.emit(
            System(f"{text}; what you type is kept for {talk.partner} on the server", "warning")
        )
        self._status_changed()

    def _fall_back(self, talk: Talk, why: str) -> None:
        talk.path = "relayed"
        self._linked.pop(talk.partner.lower(), None)
        self.emit(
            System(f"{why}; talking to {talk.partner} through the relay (relayed)", "warning")
        )
        self._status_changed()
        self.resend(talk)

    # ------------------------------------------------------------ upgrading
    def _start_upgrade(self, cands: paths.Candidates) -> None:
        """(Re)start looking for a direct path to ``cands.name`` in the background."""
        if self.config.relay_only or not cands.frames:
            return
        key = cands.name.lower()
        old = self._upgrade_scopes.pop(key, None)
        if old is not None:
            old.cancel()
        scope = self._upgrade_scopes[key] = trio.CancelScope()
        self.nursery.start_soon(
            self.faults.contain, f"the upgrade to {cands.name}", self._upgrade, cands, scope
        )

    async def _upgrade(self, cands: paths.Candidates, scope: trio.CancelScope) -> None:
        key = cands.name.lower()
        try:
            with scope:
                await self._upgrade_steps(cands, key)
        finally:
            if self._upgrade_scopes.get(key) is scope:
                del self._upgrade_scopes[key]

    async def _upgrade_steps(self, cands: paths.Candidates, key: str) -> None:
        talk = self.talks.get(key)
        current = talk.link if talk is not None else None
        if current is not None:
            if await self._link_alive(current):
                return
            await trio.aclose_forcefully(current.stream)  # dead: replace it
        try:
            link = await paths.race_direct(cands, self.me, self.epoch)
        except LinkFailed as e:
            self._note(cands.name, f"direct race failed ({e})")
        else:
            self._note(cands.name, f"{link.path} link up")
            self._start_link(link)
            return
        if self._has_link(key):
            return  # the partner reached us meanwhile
        if cands.public is None or self.server.seen is None:
            self._note(cands.name, "no public endpoints to punch with")
            return
        if self.me.lower() < key:  # one side asks, both get Servidor[PUNCH]
            self._send_server(format_client_event(Punch(cands.name)))

    async def _punch(self, name: str, remote: tuple[str, int]) -> None:
        if self._has_link(name.lower()) or self.listen_port is None:
            return
        local = (self.config.listen_host, self.listen_port)
        try:
            link = await paths.punch(remote, local, self.me, name, self.epoch)
        except LinkFailed as e:
            self._note(name, str(e))
            if not self._has_link(name.lower()) and self._is_open(name):
                self.emit(System(f"No direct path to {name} ({e}); staying on the relay (relayed)"))
            return
        self._note(name, f"{link.path} link up (punch)")
        self._start_link(link)

    def _start_link(self, link: direct.DirectLink) -> None:
        self.nursery.start_soon(
            self.faults.contain, f"the direct link to {link.partner}", self._run_link, link
        )

    def _has_link(self, key: str) -> bool:
        talk = self.talks.get(key)
        return talk is not None and talk.link is not None

    def _note(self, name: str, outcome: str) -> None:
        self.upgrades.append(f"{time.strftime('%H:%M:%S')} {name}: {outcome}")
        del self.upgrades[:-NETCHECK_HISTORY]
        log.info("upgrade %s: %s", name, outcome)
