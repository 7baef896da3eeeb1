"""The peer's trio driver: sockets, tasks and the clock around the sans-IO core.

Theory of operation
-------------------
Every decision is :class:`peer.core.state.PeerState`'s. This module feeds it
what happens — lines from the rendezvous (:mod:`peer.server_link`), links up,
frames and links down (:mod:`peer.links`), the user's commands, the clock —
through :meth:`PeerNode.feed`, and carries out the effects it answers with:
lines to the rendezvous, frames on links, searches for a direct path, events
for the UI.

``open_peer`` opens a listener for direct links on a local port P, connects
to the rendezvous *from the same port P*, logs in, and tells the server P
and its own addresses (``port:``, ``lan:``). Then one task serves the
rendezvous session (and reconnects it after a loss), one accepts direct
links, one runs the clock (:mod:`peer.clock`), one sends the mailbox's
batched acknowledgements.

The node never touches the terminal: it puts :mod:`peer.events` records on
``events``, read by exactly one UI (or by a bot through the library API).
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from functools import partial

import trio

from chathack.errors import sole_error
from chathack.protocol import (
    ClientEvent,
    IdentityKey,
    Lan,
    ListenPort,
    ServerEvent,
    format_client_event,
    format_endpoint,
)
from peer.clock import Answers, Clock
from peer.commands import help_lines
from peer.config import PeerConfig
from peer.core import records as rec
from peer.core.state import PeerState
from peer.core.talk import Talk
from peer.core.typed import Local, OfferFile, Problem, parse_typed
from peer.events import Outgoing, PathName, Status, System, UIEvent
from peer.faults import Faults
from peer.files import FileStore, media_type, regular_file, sha256_of
from peer.history import History
from peer.identity import Pins, load_identity, public_b64
from peer.links import Links, TcpDialer
from peer.netcheck import report
from peer.prekeys import PrekeyVault
from peer.server_link import (
    PasswordSource,
    ServerLink,
    TLSSettings,
    fixed_password,
)
from peer.sockets import open_listener, wildcard_for
from peer.tls import KnownServers, client_context

log = logging.getLogger("chathack.peer")

#: Seconds ``quit`` waits for goodbyes to be written.
CLOSE_FLUSH_TIMEOUT = 2.0
#: Upgrade outcomes ``::netcheck`` remembers.
NETCHECK_HISTORY = 10

__all__ = ["PasswordSource", "PeerConfig", "PeerNode", "fixed_password", "open_peer"]


class PeerNode:
    """A logged-in peer. Use :func:`open_peer` to get one."""

    def __init__(self, config: PeerConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.me = config.name
        self.epoch = secrets.token_hex(8)
        self.nursery = nursery
        # Unbounded on purpose: the UI is local and renders as fast as events come;
        # a bound here would make a slow terminal stall (or drop) network traffic.
        self._events_send, self.events = trio.open_memory_channel[UIEvent](math.inf)
        self.identity = config.identity or load_identity(config.data_dir)
        self.history = History(config.data_dir)
        self.state = PeerState(
            config.name,
            self.identity,
            Pins(config.data_dir),
            self.history,
            epoch=self.epoch,
            prekeys=PrekeyVault(config.data_dir, self.identity),
            relay_only=config.relay_only,
            timing=config.timing,
            files=FileStore(config.data_dir, config.downloads),
            relay_files=config.relay_files,
        )
        self.listen_port: int | None = None
        self.server = ServerLink(
            config.name,
            (config.server_host, config.server_port),
            self._on_server_line,
            self._on_server_state,
            config.more_servers,
        )
        if config.tls or config.tls_fingerprint or config.tls_ca:
            self.server.tls = TLSSettings(
                KnownServers(config.data_dir),
                config.tls_fingerprint,
                client_context(config.tls_ca) if config.tls_ca else None,
            )
        #: Contains what a bug in one link, line or task raises (peer/faults.py).
        self.faults = Faults(self.emit)
        dialer = TcpDialer(config.name, self.epoch, None)
        self.links = Links(config.name, self, dialer, nursery, self.faults)
        self.upgrades: list[str] = []  # recent outcomes, for ::netcheck
        self.answers = Answers()
        self.clock = Clock(lambda: self.feed(rec.Tick()), self.state.next_deadline)
        self._mail_due = trio.Event()
        self._acked = trio.Event()
        self.closed = False

    # ------------------------------------------------------------- views
    @property
    def talks(self) -> dict[str, Talk]:
        return self.state.talks

    @property
    def active(self) -> str | None:
        return self.state.active

    @property
    def known_users(self) -> list:
        return self.state.known_users

    @property
    def server_state(self) -> str:
        return self.server.state

    def status(self) -> Status:
        status = self.state.convs.status()
        retry_at = self.server.retry_at
        if retry_at is None:
            return status
        return replace(status, retry_in=max(0.0, retry_at - trio.current_time()))

    def unacknowledged(self) -> int:
        """How many sent messages the partners have not confirmed yet."""
        return self.state.convs.unacknowledged()

    # ------------------------------------------------------ feeding the core
    def emit(self, event: UIEvent) -> None:
        with suppress(trio.ClosedResourceError):
            self._events_send.send_nowait(event)

    def feed(self, event: rec.Input) -> list[rec.Effect]:
        """Hand ``event`` to the core and carry out what it answers (returned)."""
        stalled: list[int] = []
        effects = self.state.handle(event, trio.current_time())
        for effect in effects:
            self._do(effect, stalled)
        for link_id in stalled:
            self.links.close(link_id)
            self.feed(rec.LinkDown(link_id, "The direct link stalled"))
        if self.state.mail.wants_flush:
            self._mail_due.set()
        self.clock.check()
        if not self.unacknowledged():
            self._acked.set()
        return effects

    def _do(self, effect: rec.Effect, stalled: list[int]) -> None:
        match effect:
            case rec.ToServer(event):
                self.send_server(event)
            case rec.ToLink(link_id, frame):
                if not self.links.send(link_id, frame):
                    stalled.append(link_id)
            case rec.CloseLink(link_id):
                self.links.close(link_id)
            case rec.Show(ui_event):
                self.emit(ui_event)
            case rec.Upgrade(cands):
                self.links.search(cands)
            case rec.StopUpgrade(name):
                self.links.stop_search(name)
            case rec.PunchTo(name, host, port):
                self.links.punch(name, (host, port))
            case rec.Answered():
                self.answers.deliver(effect)
            case rec.Note(name, outcome):
                self.note(name, outcome)
            case rec.Fault(where, error, consequence):
                self.faults.report(where, error, consequence)

    # ------------------------------------------------------- what links use
    def current_link(self, name: str) -> int | None:
        talk = self.state.talks.get(name.lower())
        return talk.link if talk is not None else None

    def send_server(self, event: ClientEvent) -> bool:
        return self.server.send(format_client_event(event))

    def can_punch(self) -> bool:
        return self.server.seen is not None and self.listen_port is not None

    def note(self, name: str, outcome: str) -> None:
        self.upgrades.append(f"{trio.current_time():.1f} {name}: {outcome}")
        del self.upgrades[:-NETCHECK_HISTORY]
        log.info("upgrade %s: %s", name, outcome)

    # -------------------------------------------------------------- tasks
    async def start(self, source: PasswordSource) -> None:
        """Listen, log in, announce where we can be reached, serve the session."""
        if not self.config.relay_only:
            listener = await open_listener(self.config.listen_host, self.config.listen_port)
            self.listen_port = int(listener.socket.getsockname()[1])
            self.server.local = (self.config.listen_host, self.listen_port)
            self.links.dialer = TcpDialer(self.me, self.epoch, self.server.local)
            accept = partial(self.links.accept, epoch=self.epoch)
            self.nursery.start_soon(partial(trio.serve_listeners, accept, [listener]))
        reader = await self.server.login_any(self.nursery, source)
        self.feed(rec.ServerState(self.server.state))
        self.nursery.start_soon(self.faults.contain, "the clock", self.clock.run)
        self.nursery.start_soon(
            self.faults.contain, "sending mail acknowledgements", self._run_mail
        )
        self._announce()
        self.feed(rec.LoggedIn())
        self.nursery.start_soon(
            self.faults.contain,
            "the rendezvous session",
            self.server.run,
            reader,
            self.nursery,
            self._after_relogin,
        )

    def _announce(self) -> None:
        """Tell the server our identity key and where we accept direct links."""
        self.send_server(IdentityKey(public_b64(self.identity)))
        if self.config.relay_only or self.listen_port is None:
            self.send_server(Lan(()))
            return
        self.send_server(ListenPort(self.listen_port))
        addrs: list[str] = []
        for host in (self.config.listen_host, self.server.local_ip):
            if host and host != wildcard_for(host) and host not in addrs:
                addrs.append(host)
        self.send_server(Lan(tuple(format_endpoint(h, self.listen_port) for h in addrs)))

    def _after_relogin(self) -> None:
        self._announce()
        self.feed(rec.LoggedIn(relogin=True))

    def _on_server_state(self, state: str, sentence: str) -> None:
        self.feed(rec.ServerState(state, sentence))

    def _on_server_line(self, line: ServerEvent) -> None:
        self.feed(rec.FromServer(line))

    async def _run_mail(self) -> None:
        """Send acknowledgements in batches: all that one read of the server
        produced (its lines are fed without a pause) in one line."""
        while True:
            await self._mail_due.wait()
            self._mail_due = trio.Event()
            self.feed(rec.FlushMail())

    # ------------------------------------------------------------ user API
    async def connect(self, name: str, *, activate: bool = True) -> Talk | None:
        """Open a conversation with ``name`` and (``activate``) make it the
        active one: direct if possible, else relayed at once and upgraded in
        the background."""
        ask = rec.Connect(name, activate)
        answer = await self.answers.ask("connect", name, lambda: self.feed(ask))
        return self.state.convs.open_talk(name) if answer is not None and answer.ok else None

    async def send(self, name: str, text: str) -> bool:
        """Send ``text`` to ``name`` (opening the conversation if needed)."""
        needs_connect = self.state.convs.open_talk(name) is None and not self.state.kicked
        # msg: NAME TEXT opens the conversation but leaves the active one as it is.
        if needs_connect and await self.connect(name, activate=False) is None:
            return False
        effects = self.feed(rec.Send(name, text))
        return any(isinstance(e, rec.Show) and isinstance(e.event, Outgoing) for e in effects)

    def end(self, name: str | None = None) -> None:
        """End the conversation with ``name`` (default: the active one)."""
        self.feed(rec.End(name))

    def request_users(self) -> None:
        self.feed(rec.ListUsers())

    def switch(self, name: str) -> None:
        self.feed(rec.Switch(name))

    def show_history(self, name: str, n: int) -> None:
        self.feed(rec.ShowHistory(name, n))

    def whois(self, name: str) -> None:
        self.feed(rec.Whois(name))

    def trust(self, name: str) -> None:
        self.feed(rec.Trust(name))

    async def change_password(self, old: str, new: str) -> bool:
        """``::passwd``: the server checks ``old``, then keeps ``new``."""
        change = rec.ChangePassword(old, new)
        answer = await self.answers.ask("passwd", "", lambda: self.feed(change))
        if answer is not None and answer.ok and answer.secret is not None:
            self.server.remember_password(answer.secret)
            return True
        return False

    async def netcheck(self) -> None:
        """Report what this peer knows about its network (``::netcheck``)."""
        rtt = await self.server.ping()
        paths: dict[str, PathName] = {t.partner: t.path for t in self.talks.values() if t.open}
        for line in report(self.server, self.listen_port, paths, self.upgrades, rtt):
            self.emit(System(line))

    async def handle_input(self, line: str) -> bool:
        """Act on one line typed by the user; False once the user quit."""
        try:
            return await self._act(line)
        except Exception as exc:
            # What the user typed met a bug (or data from the network it could
            # not use, such as a junk key): that line is lost, not the program.
            self.faults.report("the line you typed", exc, "it was not acted on")
            return True

    async def _act(self, line: str) -> bool:
        match parse_typed(line):
            case None:
                pass
            case Problem(text):
                self.emit(System(text, "error"))
            case Local("::help"):
                for text in help_lines():
                    self.emit(System(text))
            case Local("::reconnect"):
                if self.server.retry_now():
                    self.emit(System("Trying the rendezvous again now"))
                elif self.server.state == "online":
                    self.emit(System("Connected to the rendezvous already"))
                else:
                    self.emit(System("Already trying the rendezvous; wait for the answer"))
            case Local():
                await self.netcheck()
            case rec.Quit():
                await self.quit()
                return False
            case rec.Connect(name):
                await self.connect(name)
            case rec.Send(name, text) if name is not None:
                await self.send(name, text)
            case OfferFile(path):
                await self.send_file(path)
            case command:
                self.feed(command)
        return True

    async def send_file(self, path: str, partner: str | None = None) -> None:
        """``::send PATH``: offer the file to ``partner`` (default: the
        conversation active now, chosen before the file is read)."""
        partner = partner or self.state.active
        try:
            source, size = await trio.to_thread.run_sync(regular_file, path)
        except OSError as e:
            self.emit(System(f"Cannot send {path}: {e.strerror or e}; nothing sent", "error"))
            return
        if size > (1 << 20):
            self.emit(
                System(f"Reading {source.name} ({size:,} bytes) to offer it...", about=partner)
            )
        try:
            digest = await trio.to_thread.run_sync(lambda: sha256_of(source).hexdigest())
        except OSError as e:
            self.emit(System(f"Cannot read {source}: {e.strerror or e}; nothing sent", "error"))
            return
        name = source.name
        self.feed(rec.SendFile(partner, str(source), name, size, digest, media_type(name)))

    async def wait_delivered(self) -> None:
        """Return once every sent message is acknowledged (callers set the deadline)."""
        while self.unacknowledged():
            # Every waiter waits on the same event: replacing it would strand
            # the waiters of the one it replaced.
            if self._acked.is_set():
                self._acked = trio.Event()
            await self._acked.wait()

    async def quit(self) -> None:
        """Say goodbye to every partner and to the rendezvous, flush, and stop.

        The ``events`` channel ends once the last event is read.
        """
        if self.closed:
            return
        self.feed(rec.Quit())
        await self._flush_and_stop()

    async def _flush_and_stop(self) -> None:
        if self.closed:
            return
        self.closed = True
        writers = self.links.writers()
        server_writer = self.server.finish()
        if server_writer is not None:
            writers.append(server_writer)
        for writer in writers:
            writer.finish()
        with trio.move_on_after(CLOSE_FLUSH_TIMEOUT):
            for writer in writers:
                await writer.done.wait()
        self._events_send.close()

    async def aclose(self) -> None:
        """Stop everything now (after a flush if :meth:`quit` was not called)."""
        await self._flush_and_stop()
        self.nursery.cancel_scope.cancel()
        self.history.close()
        self.state.mail.vault.close()
        self.state.transfers.store.close_all()


@asynccontextmanager
async def open_peer(config: PeerConfig, password_source: PasswordSource) -> AsyncIterator[PeerNode]:
    """Log in and listen; yield the running :class:`PeerNode`; close it on exit.

    Raises :class:`~peer.errors.ServerUnreachable` or
    :class:`~peer.errors.LoginFailed` before yielding.
    """
    try:
        async with trio.open_nursery() as nursery:
            node = PeerNode(config, nursery)
            await node.start(password_source)
            where = (
                f"direct links come to port {node.listen_port}"
                if node.listen_port
                else "relay only"
            )
            node.emit(
                System(f"Logged in as {node.me} at {format_endpoint(*node.server.server)}; {where}")
            )
            node.request_users()  # the notes' main menu: "Who do you want to talk to?"
            try:
                yield node
            finally:
                await node.aclose()
    except BaseExceptionGroup as group:
        # The nursery wraps even a lone error; callers want the error itself.
        sole = sole_error(group)
        if sole is not None:
            raise sole from None
        raise
