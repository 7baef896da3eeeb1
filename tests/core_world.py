"""A whole chathack world in one thread: the real rendezvous domain
(:class:`rendezvous.hub.Hub` on an in-memory store) and any number of
:class:`peer.core.state.PeerState`, joined by queues of wire lines.

Nothing here has a socket, a task or a real clock (the h11 ``ConnectionPair``
idea, for a whole system): every line a peer sends is formatted, parsed by the
server's grammar and handed to the hub; every line the hub sends is parsed by
the peer's grammar and handed to the peer. The queue from the rendezvous to
the peers is where a test (or hypothesis) drops, duplicates, delays and
reorders what the relay carries, and :meth:`World.crash` loses everything in
flight and every session, keeping only what the store committed, as a
SIGKILL of the rendezvous does.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from chathack.link import Frame, is_relay_frame
from chathack.protocol import (
    IdentityKey,
    Lan,
    ServerLine,
    UserLine,
    format_client_event,
    parse_client_line,
    parse_server_line,
)
from chathack.retransmit import Timing
from peer.core import records as rec
from peer.core.state import PeerState
from peer.events import Incoming, Outgoing, System, UIEvent
from peer.files import FileStore
from peer.history import History
from peer.identity import Pins, public_b64
from peer.prekeys import PrekeyVault
from rendezvous.hub import Hub, Session
from rendezvous.store import SqliteStore

#: Fast timers: the world's clock only moves when a test moves it.
FAST = Timing()

#: Where the fake peers come from (documentation range).
PEER_IP = "198.51.100.7"


class Outbox:
    """The hub's side of one session: bytes for the peer, in order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._partial = b""

    def send(self, data: bytes, lines: int = 1) -> None:
        data = self._partial + data
        *whole, self._partial = data.split(b"\n")
        self.lines.extend(line.decode("utf-8") for line in whole)

    def close(self) -> None:
        self.closed = True


@dataclass(eq=False)
class Peer:
    name: str
    state: PeerState
    session: Session | None = None
    ui: list[UIEvent] = field(default_factory=list)
    answers: list[rec.Answered] = field(default_factory=list)
    inbox: list[ServerLine | UserLine] = field(default_factory=list)  # not yet handled

    def shown(self) -> list[Incoming]:
        return [e for e in self.ui if isinstance(e, Incoming)]

    def shown_texts(self, origin: str | None = None) -> list[str]:
        return [e.text for e in self.shown() if origin is None or e.origin == origin]

    def sent_texts(self) -> list[str]:
        return [e.text for e in self.ui if isinstance(e, Outgoing)]

    def notices(self) -> list[str]:
        return [e.text for e in self.ui if isinstance(e, System)]


#: Decides the fate of one relayed line on its way to a peer: how many copies
#: arrive (0: dropped), and whether it may overtake the line before it.
Fate = Callable[[ServerLine | UserLine], tuple[int, bool]]


def reliable(_line: ServerLine | UserLine) -> tuple[int, bool]:
    return 1, False


class World:
    def __init__(self, tmp: Path, timing: Timing = FAST) -> None:
        self.tmp = tmp
        self.timing = timing
        self.store = SqliteStore(":memory:")
        self.hub = Hub(self.store)
        self.now = 1000.0
        self.peers: dict[str, Peer] = {}
        self.fate: Fate = reliable
        #: A lying rendezvous: what each line to a peer becomes (none, itself,
        #: something else, several).
        self.tamper: Callable[[ServerLine | UserLine], list[ServerLine | UserLine]] = _as_is
        self.rng = random.Random(0)
        #: Free bytes every peer's disk reports (a full disk: a small number).
        self.free_bytes = 1 << 40

    def free_space(self, _folder: Path) -> int:
        return self.free_bytes

    def close(self) -> None:
        for peer in self.peers.values():
            peer.state.transfers.store.close_all()
            peer.state.mail.history.close()
            peer.state.mail.vault.close()
        self.store.close()

    # ----------------------------------------------------------- people
    def add(self, name: str, *, online: bool = True) -> Peer:
        """A new user ``name`` with a data folder of its own (its first run)."""
        return self.start(name, SigningKey.generate(), online=online)

    def start(self, name: str, identity: SigningKey, *, online: bool = True) -> Peer:
        """Run ``name``'s peer (again: same key and data folder, new epoch)."""
        folder = self.tmp / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        state = PeerState(
            name,
            identity,
            Pins(folder),
            History(folder),
            epoch=f"{name}{len(self.peers)}{self.rng.randrange(10**6)}",
            prekeys=PrekeyVault(folder, identity),
            timing=self.timing,
            wall=lambda: self.now,
            files=FileStore(folder, folder / "downloads", free_space=self.free_space),
        )
        old = self.peers.get(name.lower())
        if old is not None:
            old.state.transfers.store.close_all()
            old.state.mail.history.close()
            old.state.mail.vault.close()
        peer = self.peers[name.lower()] = Peer(name, state)
        if online:
            self.login(peer)
        return peer

    def login(self, peer: Peer, *, relogin: bool = False) -> None:
        account = self.store.get_account(peer.name) or self.store.create_account(
            peer.name, "hash", self.now
        )
        peer.session = Session(Outbox(), PEER_IP)
        self.hub.attach(peer.session, account, self.now)
        self.feed(peer, rec.ServerState("online"))
        self._to_hub(peer, IdentityKey(public_b64(peer.state.keys.identity)))
        self._to_hub(peer, Lan(()))  # a relay-only chathack peer
        self.hub.after_login(peer.session, self.now)
        self.feed(peer, rec.LoggedIn(relogin=relogin))

    def logout(self, peer: Peer) -> None:
        """The peer's program stops without a word (its session just ends)."""
        if peer.session is not None:
            self.hub.detach(peer.session, self.now)
            peer.session = None

    def crash(self) -> None:
        """SIGKILL of the rendezvous, and its restart: what was in flight is
        lost, sessions are gone, the store keeps what it committed. Every
        peer notices and logs in again."""
        self.hub = Hub(self.store)
        for peer in self.peers.values():
            peer.inbox.clear()
            if peer.session is not None:
                peer.session = None
                self.feed(peer, rec.ServerState("offline", "Lost the rendezvous"))
        for peer in list(self.peers.values()):
            if peer.state.closed:
                continue
            self.login(peer, relogin=True)

    # ----------------------------------------------------------- acting
    def type(self, name: str, command: rec.UserCommand) -> list[rec.Effect]:
        return self.feed(self.peers[name.lower()], command)

    def connect(self, who: str, whom: str) -> list[rec.Effect]:
        """``who`` types ``connect: whom``; the answers, the key exchange and
        the grace for a direct link all run their course."""
        effects = self.type(who, rec.Connect(whom))
        self.pump()
        self.advance(1.0)
        return effects

    def feed(self, peer: Peer, event: rec.Input) -> list[rec.Effect]:
        effects = peer.state.handle(event, self.now)
        for effect in effects:
            match effect:
                case rec.ToServer(event=client_event):
                    self._to_hub(peer, client_event)
                case rec.Show(event=ui_event):
                    peer.ui.append(ui_event)
                case rec.Answered():
                    peer.answers.append(effect)
                case rec.Fault(where, error, _):
                    raise AssertionError(f"the core met a bug handling {where}") from error
        if peer.state.mail.wants_flush:
            self.feed(peer, rec.FlushMail())
        return effects

    def _to_hub(self, peer: Peer, event: object) -> None:
        if peer.session is None or peer.session.closed:
            return  # no session: what the peer sends is lost, as on a dead socket
        wire = format_client_event(event).decode("utf-8").rstrip("\r\n")  # type: ignore[arg-type]
        self.hub.handle(peer.session, parse_client_line(wire), self.now)

    # ---------------------------------------------------------- the wire
    def pump(self, rounds: int = 10_000) -> None:
        """Deliver until nothing moves (bounded: a livelock fails the test)."""
        for _ in range(rounds):
            if not self._step():
                return
        raise AssertionError("the world did not settle")

    def drain(self, peer: Peer) -> None:
        """Hand ``peer`` what its session got (for a peer the world no longer
        lists, such as a session replaced by a login elsewhere)."""
        if peer.session is not None:
            outbox = peer.session.outbox
            assert isinstance(outbox, Outbox)
            lines, outbox.lines = outbox.lines, []
            for text in lines:
                self.feed(peer, rec.FromServer(parse_server_line(text)))

    def _step(self) -> bool:
        moved = False
        for peer in list(self.peers.values()):
            if peer.session is not None:
                outbox = peer.session.outbox
                assert isinstance(outbox, Outbox)
                lines, outbox.lines = outbox.lines, []
                for text in lines:
                    self._route(peer, parse_server_line(text))
            if peer.inbox:
                line = peer.inbox.pop(0)
                self.feed(peer, rec.FromServer(line))
                moved = True
        return moved

    def _route(self, peer: Peer, original: ServerLine | UserLine) -> None:
        for line in self.tamper(original):
            self._deliver(peer, line)

    def _deliver(self, peer: Peer, line: ServerLine | UserLine) -> None:
        copies, overtake = self.fate(line) if _is_relayed(line) else (1, False)
        for _ in range(copies):
            if overtake and peer.inbox:
                peer.inbox.insert(len(peer.inbox) - 1, line)
            else:
                peer.inbox.append(line)

    def advance(self, seconds: float, step: float = 0.5) -> None:
        """Let ``seconds`` pass, ticking every peer every ``step`` and
        delivering what the ticks send."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for peer in list(self.peers.values()):
                self.feed(peer, rec.Tick())
            self.pump()

    def settle(self, seconds: float = 120.0) -> None:
        """Pump, then let time pass so that timers re-send what was lost."""
        self.pump()
        self.advance(seconds)


def _as_is(line: ServerLine | UserLine) -> list[ServerLine | UserLine]:
    return [line]


def _is_relayed(line: ServerLine | UserLine) -> bool:
    return isinstance(line, UserLine) and is_relay_frame(line.text)


def count(texts: Iterable[str], text: str) -> int:
    return sum(1 for t in texts if t == text)


@contextmanager
def scratch_world(timing: Timing = FAST) -> Iterator[World]:
    """A :class:`World` in a folder of its own, removed afterwards: for
    hypothesis, whose examples cannot share pytest's ``tmp_path``. The folder
    is on the RAM disk when there is one: each peer's history is an SQLite
    file, whose creation waits for the disk (tens of ms; hundreds of examples)."""
    shm = Path("/dev/shm")
    ram = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    tmp = Path(tempfile.mkdtemp(prefix="chathack-world-", dir=ram))
    world = World(tmp, timing)
    try:
        yield world
    finally:
        world.close()
        shutil.rmtree(tmp, ignore_errors=True)


class DirectLinks:
    """Direct links between the peers of a :class:`World`: a link is a pair of
    ids, one per end; what one end's core sends on its id (``ToLink``) is
    queued for the other end's, and :meth:`pump` delivers it. ``closed``
    lists the (peer, id) pairs a core asked to close."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.queue: list[tuple[Peer, int, Frame]] = []
        self.ends: dict[tuple[str, int], tuple[Peer, int]] = {}
        self.closed: list[tuple[str, int]] = []
        feed = world.feed

        def feed_and_route(peer: Peer, event: rec.Input) -> list[rec.Effect]:
            effects = feed(peer, event)
            for e in effects:
                if isinstance(e, rec.ToLink):
                    other = self.ends.get((peer.name.lower(), e.link_id))
                    if other is not None:
                        self.queue.append((other[0], other[1], e.frame))
                elif isinstance(e, rec.CloseLink):
                    self.closed.append((peer.name.lower(), e.link_id))
            return effects

        world.feed = feed_and_route  # type: ignore[method-assign]

    def up(self, a: Peer, a_id: int, b: Peer, b_id: int, dialer: str) -> None:
        self.ends[(a.name.lower(), a_id)] = (b, b_id)
        self.ends[(b.name.lower(), b_id)] = (a, a_id)
        self.world.feed(a, rec.LinkUp(rec.LinkInfo(a_id, b.name, "direct", dialer)))
        self.world.feed(b, rec.LinkUp(rec.LinkInfo(b_id, a.name, "direct", dialer)))
        self.pump()

    def pump(self, limit: int = 1000) -> None:
        for _ in range(limit):
            if not self.queue:
                return
            peer, link_id, frame = self.queue.pop(0)
            self.world.feed(peer, rec.LinkFrame(link_id, frame))
        raise AssertionError("the links never went quiet")
