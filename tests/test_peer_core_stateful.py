"""The delivery promise, against a hostile world, as a hypothesis state machine.

Three users on the real rendezvous domain and real peer cores
(tests/core_world.py). Hypothesis picks what happens: people connect, switch,
type, end conversations and lose their session; the relay drops, duplicates
and reorders what it carries; the rendezvous is SIGKILLed and restarted
(losing whatever was in flight); time passes. Throughout, no message is ever
shown twice, nor to anyone but the partner it was typed to; at the end, once
the network behaves, every message typed is shown exactly once, in order, or
its sender was told it was not delivered.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chathack.protocol import ServerLine, UserLine
from peer.core import records as rec
from peer.events import System
from tests.core_world import World

USERS = ("alice", "bob", "carol")
people = st.sampled_from(USERS)


@dataclass(frozen=True, slots=True)
class Typed:
    sender: str
    partner: str
    text: str
    after: int  # how many UI events the sender had when it was typed


class DeliveryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="chathack-core-"))
        self.world = World(self.tmp)
        for name in USERS:
            self.world.add(name)
        self.world.pump()
        self.typed: list[Typed] = []
        self.rng = random.Random(0)
        self.loss = 0.0
        self.counter = 0

    def teardown(self) -> None:
        self.world.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------ the net
    def _fate(self, _line: ServerLine | UserLine) -> tuple[int, bool]:
        roll = self.rng.random()
        if roll < self.loss:
            return 0, False
        if roll < self.loss * 1.5:
            return 2, False  # duplicated
        return 1, roll > 1 - self.loss  # maybe overtakes the line before it

    @rule(loss=st.sampled_from([0.0, 0.1, 0.3, 0.6]), seed=st.integers(0, 2**16))
    def relay_behaves(self, loss: float, seed: int) -> None:
        self.loss, self.rng = loss, random.Random(seed)
        self.world.fate = self._fate if loss else (lambda _line: (1, False))

    @rule()
    def rendezvous_crashes_and_restarts(self) -> None:
        self.world.crash()
        self.world.pump()

    @rule(seconds=st.sampled_from([0.5, 2.0, 5.0, 31.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.advance(seconds)

    # ------------------------------------------------------------- people
    @rule(who=people, whom=people)
    def connect(self, who: str, whom: str) -> None:
        self.world.type(who, rec.Connect(whom))
        self.world.pump()
        self.world.advance(1.0)

    @rule(who=people, whom=people)
    def switch(self, who: str, whom: str) -> None:
        self.world.type(who, rec.Switch(whom))

    @rule(who=people, whom=people, lines=st.integers(1, 6))
    def types_lines(self, who: str, whom: str, lines: int) -> None:
        """``who`` types ``lines`` lines (into a conversation with ``whom``
        first, if none is active: what people mostly do)."""
        peer = self.world.peers[who]
        if peer.state.active is None and who != whom:
            self.connect(who, whom)
        for _ in range(lines):
            active = peer.state.active
            self.counter += 1
            text = f"{who}#{self.counter}"
            effects = self.world.type(who, rec.Send(None, text))
            shown = [e.event for e in effects if isinstance(e, rec.Show)]
            if active is not None and any(getattr(e, "text", None) == text for e in shown):
                self.typed.append(Typed(who, active.lower(), text, len(peer.ui)))
        self.world.pump()

    @rule(who=people)
    def ends_the_conversation(self, who: str) -> None:
        self.world.type(who, rec.End(None))
        self.world.pump()

    @precondition(lambda self: self.world.peers)
    @rule(who=people)
    def loses_the_session_and_comes_back(self, who: str) -> None:
        peer = self.world.peers[who]
        self.world.logout(peer)
        self.world.feed(peer, rec.ServerState("offline", "Lost the rendezvous"))
        peer.inbox.clear()
        self.world.pump()
        self.world.login(peer, relogin=True)
        self.world.pump()

    # --------------------------------------------------------- promises
    @invariant()
    def never_shown_twice_nor_to_the_wrong_person(self) -> None:
        partner_of = {t.text: t for t in self.typed}
        for name, peer in self.world.peers.items():
            seen: set[str] = set()
            for e in peer.shown():
                assert e.text not in seen, f"{name} was shown {e.text!r} twice"
                seen.add(e.text)
                typed = partner_of.get(e.text)
                if typed is not None:
                    assert typed.partner == name, f"{e.text!r} typed to {typed.partner}"
                    assert e.origin.lower() == typed.sender

    def _told_not_delivered(self, t: Typed) -> bool:
        events = self.world.peers[t.sender].ui[t.after :]
        return any(
            isinstance(e, System)
            and t.partner in e.text
            and (e.text.startswith("Not delivered") or "refused a message" in e.text)
            for e in events
        )

    def check_everything_arrived(self) -> None:
        self.world.fate = lambda _line: (1, False)
        self.world.settle(200.0)
        for t in self.typed:
            got = self.world.peers[t.partner].shown_texts()
            assert t.text in got or self._told_not_delivered(t), f"{t} lost silently"
        for sender in USERS:
            for partner in USERS:
                sent = [t.text for t in self.typed if (t.sender, t.partner) == (sender, partner)]
                shown = [
                    e.text for e in self.world.peers[partner].shown() if e.origin.lower() == sender
                ]
                in_order = [s for s in shown if s in sent]
                assert in_order == [s for s in sent if s in in_order], (sender, partner)


class FinalCheck(DeliveryMachine):
    def teardown(self) -> None:
        try:
            self.check_everything_arrived()
        finally:
            super().teardown()


FinalCheck.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDelivery = FinalCheck.TestCase
