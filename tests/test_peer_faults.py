"""A bug met while handling one link, one relayed message, one server line or
one incoming connection costs that link, conversation, line or connection,
never the peer program.

Faults are injected into the sans-IO core (the code under test has no known
bug left to trigger them): ``PeerState.handle`` contains what they raise as a
``Fault`` effect, and the driver reports it through ``node.faults`` and carries
out what goes with it. In-process, with a real Server and real PeerNodes on
127.0.0.1.
"""

from __future__ import annotations

import pytest
import trio

from chathack.link import Chat, Frame
from chathack.protocol import ServerEvent, ServerLine
from peer import direct
from peer.core import records as rec
from peer.core.conversations import Conversations
from peer.core.state import PeerState
from peer.core.talk import Talk
from tests.test_e2e_security import world as relayed_world
from tests.test_node import DEADLINE, world


def break_bob_once_on_boom(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """bob's core raises, once, on the chat "boom"; returns the paths it tripped on."""
    real_on_inner = Conversations._on_inner
    tripped: list[str] = []

    def on_inner_once_broken(
        convs: Conversations, talk: Talk, frame: Frame, out: list[rec.Effect]
    ) -> None:
        if convs.me == "bob" and isinstance(frame, Chat) and frame.text == "boom" and not tripped:
            tripped.append(talk.path)
            raise RuntimeError("injected fault")
        real_on_inner(convs, talk, frame, out)

    monkeypatch.setattr(Conversations, "_on_inner", on_inner_once_broken)
    return tripped


async def test_a_fault_on_one_direct_link_closes_that_link_and_loses_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tripped = break_bob_once_on_boom(monkeypatch)
    async with world("alice", "bob", "carol") as w:
        wa, wb, wc = w["alice"], w["bob"], w["carol"]
        alice, bob, carol = wa.node, wb.node, wc.node
        await carol.connect("bob")
        await wb.system("carol opened a conversation with you")
        await alice.connect("bob")
        await wb.system("Now talking to alice directly (direct)")
        await wa.system("Now talking to bob directly (direct)")
        faulty = bob.talks["alice"].link
        assert faulty is not None
        await alice.send("bob", "boom")
        await wb.system(
            "Something went wrong while handling a frame from alice (RuntimeError); "
            "that direct link was closed"
        )
        assert tripped == ["direct"]
        # The driver closes that link (not only the core's word for it): both
        # sides see it go and fall back to the relay.
        await wb.system("talking to alice through the relay (relayed)")
        await wa.system("talking to bob through the relay (relayed)")
        assert faulty not in bob.links.links
        assert faulty not in bob.state.convs.links
        # alice re-sends over the relay what bob never acknowledged.
        await alice.send("bob", "after")
        await carol.send("bob", "carol is fine")
        await wb.wait_for(lambda e: len(wb.texts()) >= 3, "three messages")
        texts = wb.texts()
        assert sorted(texts) == ["after", "boom", "carol is fine"]
        assert texts.index("boom") < texts.index("after")
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()
        assert bob.faults.counts == {"RuntimeError": 1}
        assert not bob.closed


async def test_a_fault_on_a_relayed_message_closes_only_that_conversation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tripped = break_bob_once_on_boom(monkeypatch)
    relay = {"relay_only": True}
    async with relayed_world(alice=relay, bob=relay, carol=relay) as w:
        wa, wb, wc = w["alice"], w["bob"], w["carol"]
        alice, bob, carol = wa.node, wb.node, wc.node
        await carol.connect("bob")
        await wb.system("carol opened a conversation with you")
        await alice.connect("bob")
        await wb.system("alice opened a conversation with you")
        await alice.send("bob", "boom")
        await wb.system(
            "Something went wrong while handling a message from alice (RuntimeError); "
            "that conversation was closed"
        )
        await wb.system("Conversation with alice closed")
        assert tripped == ["relayed"]
        assert not bob.talks["alice"].open
        # The other conversation carries on; alice's next message opens hers
        # again, and what bob never acknowledged comes first.
        await carol.send("bob", "carol is fine")
        await alice.send("bob", "after")
        await wb.wait_for(lambda e: len(wb.texts()) >= 3, "three messages")
        texts = wb.texts()
        assert sorted(texts) == ["after", "boom", "carol is fine"]
        assert texts.index("boom") < texts.index("after")
        with trio.fail_after(DEADLINE):
            await alice.wait_delivered()
        assert bob.faults.counts == {"RuntimeError": 1}
        assert not bob.closed


async def test_a_fault_while_handling_a_server_line_costs_only_that_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = PeerState._from_server
    tripped: list[ServerEvent] = []

    def broken_on_users(state: PeerState, event: ServerEvent, out: list[rec.Effect]) -> None:
        if (
            state.me == "alice"
            and isinstance(event, ServerLine)
            and event.flag == "USERS"
            and not tripped
        ):
            tripped.append(event)
            raise KeyError("injected fault")
        real(state, event, out)

    monkeypatch.setattr(PeerState, "_from_server", broken_on_users)
    async with world("alice", "bob") as w:
        wa, wb = w["alice"], w["bob"]
        alice = wa.node
        alice.request_users()
        await wa.system("Something went wrong while handling a line from the rendezvous")
        await alice.connect("bob")
        await alice.send("bob", "still talking")
        assert await wb.texts_count(1) == ["still talking"]
        assert alice.faults.counts == {"KeyError": 1}


async def test_a_fault_while_accepting_a_link_leaves_the_listener_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_accept = direct.accept
    calls: list[int] = []

    async def accept_broken_once(stream: trio.abc.Stream, me: str, epoch: str) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return await real_accept(stream, me, epoch)

    monkeypatch.setattr(direct, "accept", accept_broken_once)
    async with world("alice", "bob") as w:
        wa, wb = w["alice"], w["bob"]
        alice, bob = wa.node, wb.node
        port = bob.listen_port
        assert port is not None
        # A first connection meets the fault; the listener must survive it.
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await wb.system("Something went wrong while handling an incoming direct link")
        finally:
            await trio.aclose_forcefully(stream)
        # bob calls: alice's peer dials bob's listener once bob's key checked out.
        await bob.connect("alice")
        await wa.system("Now talking to bob directly (direct)")
        await alice.send("bob", "through the same listener")
        assert await wb.texts_count(1) == ["through the same listener"]
        assert bob.faults.counts == {"RuntimeError": 1}
