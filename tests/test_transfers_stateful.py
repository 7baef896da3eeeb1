"""The file transfer promise, against a hostile world, as a hypothesis state machine.

alice and bob on the real rendezvous domain and real peer cores
(tests/core_world.py), talking through the relay. Hypothesis picks what
happens: alice offers files, bob accepts them; the relay drops, duplicates,
reorders and alters what it carries; the rendezvous is SIGKILLed; either
peer is killed and started again from its data folder; time passes.
Throughout, nothing but a file alice offered, byte for byte, is ever placed
in bob's folder, and never twice. At the end, once the network behaves,
every file bob accepted is there, intact, and alice was told.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chathack.link import SealedChunk, frame_to_relay_text, is_relay_frame, relay_text_to_frame
from chathack.protocol import ServerLine, UserLine
from peer.core import records as rec
from peer.core.transfers import RELAY_CHUNK_BYTES
from tests.core_world import Peer, World


class TransferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="chathack-files-"))
        self.world = World(self.tmp)
        alice, bob = self.world.add("alice"), self.world.add("bob")
        self.world.connect("alice", "bob")
        self.world.type("bob", rec.Switch("alice"))
        self.world.pump()
        self.keys = {"alice": alice.state.keys.identity, "bob": bob.state.keys.identity}
        self.sources: Counter[str] = Counter()  # sha256 of each file offered -> offers
        self.accepted = 0
        self.rng = random.Random(0)
        self.loss = 0.0
        self.tamper = 0.0

    def teardown(self) -> None:
        try:
            self.everything_accepted_arrives_once_the_network_behaves()
        finally:
            self.world.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def peer(self, name: str) -> Peer:
        return self.world.peers[name]

    # ------------------------------------------------------------ the net
    def _fate(self, _line: ServerLine | UserLine) -> tuple[int, bool]:
        roll = self.rng.random()
        if roll < self.loss:
            return 0, False
        if roll < self.loss * 1.5:
            return 2, False
        return 1, roll > 1 - self.loss

    def _alter(self, line: ServerLine | UserLine) -> list[ServerLine | UserLine]:
        if (
            isinstance(line, UserLine)
            and is_relay_frame(line.text)
            and self.rng.random() < self.tamper
        ):
            frame = relay_text_to_frame(line.text)
            if isinstance(frame, SealedChunk):
                body = bytearray(frame.body)
                body[self.rng.randrange(1, len(body))] ^= 0x40
                return [UserLine(line.origin, frame_to_relay_text(SealedChunk(body)))]
        return [line]

    @rule(
        loss=st.sampled_from([0.0, 0.1, 0.3]),
        tamper=st.sampled_from([0.0, 0.05, 0.2]),
        seed=st.integers(0, 2**16),
    )
    def relay_behaves(self, loss: float, tamper: float, seed: int) -> None:
        self.loss, self.tamper, self.rng = loss, tamper, random.Random(seed)
        self.world.fate = self._fate if loss else (lambda _line: (1, False))
        self.world.tamper = self._alter

    @rule()
    def rendezvous_crashes_and_restarts(self) -> None:
        self.world.crash()
        self.world.pump()

    @rule(seconds=st.sampled_from([0.5, 2.0, 11.0]))
    def time_passes(self, seconds: float) -> None:
        self.world.advance(seconds)

    @rule(who=st.sampled_from(["alice", "bob"]))
    def a_peer_is_killed_and_started_again(self, who: str) -> None:
        self.world.logout(self.peer(who))
        self.world.pump()
        self.world.start(who, self.keys[who])
        self.world.pump()

    # ------------------------------------------------------------ people
    @precondition(lambda self: sum(self.sources.values()) < 3)
    @rule(chunks=st.integers(0, 9), extra=st.integers(0, RELAY_CHUNK_BYTES - 1))
    def alice_offers_a_file(self, chunks: int, extra: int) -> None:
        content = os.urandom(chunks * RELAY_CHUNK_BYTES + extra)
        sha = hashlib.sha256(content).hexdigest()
        path = self.tmp / f"source-{sum(self.sources.values())}.bin"
        path.write_bytes(content)
        self.sources[sha] += 1
        self.world.type("alice", rec.Switch("bob"))
        self.world.type("alice", rec.SendFile(None, str(path), path.name, len(content), sha, "x/y"))
        self.world.pump()

    @rule()
    def bob_accepts(self) -> None:
        offered = [t for t in self.peer("bob").state.transfers.all.values() if t.state == "offered"]
        self.world.type("bob", rec.Switch("alice"))
        self.world.type("bob", rec.AcceptFile())
        self.world.pump()
        if offered:
            self.accepted += 1

    # ------------------------------------------------------------ promises
    def placed(self) -> list[Path]:
        folder = self.tmp / "bob" / "downloads"
        if not folder.is_dir():
            return []
        return [p for p in folder.iterdir() if not p.name.endswith(".part")]

    @invariant()
    def only_what_alice_offered_is_placed_and_never_twice(self) -> None:
        digests = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in self.placed())
        assert all(d in self.sources for d in digests), "a file alice never offered was placed"
        assert all(n <= self.sources[d] for d, n in digests.items()), "one file placed twice"

    def everything_accepted_arrives_once_the_network_behaves(self) -> None:
        self.world.fate = lambda _line: (1, False)
        self.world.tamper = lambda line: [line]
        self.world.settle(120.0)
        moving = [t for t in self.peer("bob").state.transfers.all.values() if t.state == "moving"]
        assert not moving, f"accepted transfers never finished: {moving}"
        placed = {hashlib.sha256(p.read_bytes()).hexdigest() for p in self.placed()}
        told = self.peer("alice").state.transfers.all.values()
        for t in told:
            assert t.state != "moving", f"alice never heard how {t.name} ended"
            if t.state == "done":
                assert t.sha256 in placed, f"alice was told {t.name} was saved; it is not"


TransferMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("CHATHACK_STATEFUL_EXAMPLES", "25")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class TestTransfers(TransferMachine.TestCase):  # type: ignore[name-defined]
    pass
