"""The peer node in-process: a real Server and real PeerNodes on 127.0.0.1.

Faster than processes and able to reach inside (break a direct link on
purpose), while still using real sockets. Every wait has a deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from peer.events import Incoming, System, UIEvent
from peer.node import PeerConfig, PeerNode, fixed_password, open_peer
from rendezvous.passwords import Passwords, fast_hasher
from rendezvous.server import Server
from rendezvous.store import SqliteStore

DEADLINE = 10


class Watcher:
    """Reads a node's events; tests wait for the ones they expect."""

    def __init__(self, node: PeerNode) -> None:
        self.node = node
        self.seen: list[UIEvent] = []
        self._changed = trio.Event()

    async def run(self) -> None:
        async for ev in self.node.events:
            self.seen.append(ev)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, pred: Callable[[UIEvent], bool], what: str) -> UIEvent:
        with trio.fail_after(DEADLINE):
            while True:
                for ev in self.seen:
                    if pred(ev):
                        return ev
                await self._changed.wait()
        raise AssertionError(what)  # pragma: no cover

    async def system(self, fragment: str) -> UIEvent:
        return await self.wait_for(
            lambda e: isinstance(e, System) and fragment in e.text, f"system line {fragment!r}"
        )

    async def settled(self) -> list[UIEvent]:
        """Every event the node emitted so far, seen: for asserting that one is
        absent (a marker is emitted and waited for; the channel keeps order)."""
        marker = System("(test marker)")
        self.node.emit(marker)
        await self.wait_for(lambda e: e is marker, "the marker")
        return self.seen

    def texts(self) -> list[str]:
        return [e.text for e in self.seen if isinstance(e, Incoming)]

    async def texts_count(self, n: int) -> list[str]:
        await self.wait_for(lambda e: len(self.texts()) >= n, f"{n} messages")
        return self.texts()


@asynccontextmanager
async def _peer(port: int, name: str, nursery: trio.Nursery) -> AsyncIterator[Watcher]:
    cfg = PeerConfig(name, "127.0.0.1", port, "127.0.0.1", 0)
    async with open_peer(cfg, fixed_password(f"{name}-password")) as node:
        w = Watcher(node)
        nursery.start_soon(w.run)
        yield w


@asynccontextmanager
async def world(*names: str) -> AsyncIterator[dict[str, Watcher]]:
    """An in-process rendezvous and one logged-in node per name, each with its watcher."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        server = Server(SqliteStore(":memory:"), passwords=Passwords(fast_hasher()))
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        port = listeners[0].socket.getsockname()[1]
        peers = {n: await stack.enter_async_context(_peer(port, n, nursery)) for n in names}
        yield peers
        nursery.cancel_scope.cancel()


async def test_direct_link_breaks_then_relay_carries_on_with_nothing_lost_or_doubled() -> None:
    async with world("alice", "bob") as w:
        wa, wb = w["alice"], w["bob"]
        alice, bob = wa.node, wb.node
        await alice.connect("bob")
        # Opened on the relay; bob's peer dials alice once her key checked out.
        await wa.system("Now talking to bob directly (direct)")
        for i in range(3):
            await alice.send("bob", f"m{i}")
        assert await wb.texts_count(3) == ["m0", "m1", "m2"]

        # Kill the TCP link under both nodes, as a dying network would.
        link_id = alice.talks["bob"].link
        assert link_id is not None
        await trio.aclose_forcefully(alice.links.links[link_id].stream)
        await wa.system("talking to bob through the relay (relayed)")
        for i in range(3, 6):
            await alice.send("bob", f"m{i}")
        await bob.send("alice", "still here")
        assert await wb.texts_count(6) == [f"m{i}" for i in range(6)]
        assert (await wa.texts_count(1)) == ["still here"]
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()
        assert alice.talks["bob"].path == "relayed"


async def test_unacknowledged_messages_are_resent_when_the_path_changes() -> None:
    async with world("alice", "bob") as w:
        wb = w["bob"]
        alice = w["alice"].node
        await alice.connect("bob")
        await w["alice"].system("Now talking to bob directly (direct)")
        talk = alice.talks["bob"]
        # Messages "sent" while the link is stalled: queued in the conversation
        # but never written (as if lost in flight).
        lost = [talk.conv.send_text(f"lost {i}") for i in range(2)]
        assert [c.seq for c in lost] == [1, 2]
        assert alice.unacknowledged() == 2
        link_id = talk.link
        assert link_id is not None
        await trio.aclose_forcefully(alice.links.links[link_id].stream)
        assert await wb.texts_count(2) == ["lost 0", "lost 1"]
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()


async def test_only_the_user_chooses_where_typed_lines_go() -> None:
    """Someone opening a conversation or writing never changes where the next
    typed line goes, and no notice says "Talking to X" unless X is active."""
    async with world("alice", "bob", "carol") as w:
        wa, wb, wc = w["alice"], w["bob"], w["carol"]
        alice, bob, carol = wa.node, wb.node, wc.node
        await alice.connect("bob")
        await wb.system("alice opened a conversation with you (relayed): ::switch alice to answer")
        await wb.system("Now talking to alice directly (direct)")
        assert bob.active is None
        assert await bob.handle_input("for nobody") is True
        await wb.system("You are not in a conversation")
        await bob.handle_input("::switch alice")
        await wb.system("Talking to alice (direct)")
        await carol.connect("bob")
        await carol.send("bob", "carol here")
        await wb.system("carol opened a conversation with you")
        assert await wb.texts_count(1) == ["carol here"]
        assert bob.active == "alice"  # carol does not steal the conversation
        assert bob.status().partner == "alice"
        assert bob.status().path == "direct"
        seen = await wb.settled()
        assert not [e for e in seen if isinstance(e, System) and "Talking to carol" in e.text]
        await bob.handle_input("to alice")
        assert await wa.texts_count(1) == ["to alice"]
        await bob.handle_input("::switch carol")
        assert bob.active == "carol"
        await bob.handle_input("hi carol")
        assert await wc.texts_count(1) == ["hi carol"]
        # The active conversation ends: nothing else becomes active by itself.
        await carol.handle_input("::switch bob")
        await carol.handle_input("::end")
        await wb.system("carol ended the conversation")
        assert bob.active is None
        await wb.system("Still open: alice; ::switch NAME to talk to one of them")


async def test_sending_to_nobody_and_to_self_is_refused_with_a_reason() -> None:
    async with world("alice") as w:
        wa = w["alice"]
        alice = wa.node
        assert await alice.handle_input("hello?") is True
        await wa.system("You are not in a conversation")
        assert await alice.connect("alice") is None
        await wa.system("You cannot talk to yourself")
        assert await alice.handle_input("::quit") is False
