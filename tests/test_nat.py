"""Across networks, for real: the rendezvous and peers as processes inside the
network-namespace lab of :mod:`tests.netlab` (an internet, two home networks
behind port-keeping NATs, one behind a symmetric NAT, and a public host).

Each test asserts the path word a person would see and that messages flow
both ways, exactly once and in order. Needs root, iproute2 and iptables
(``.ci/run`` installs them); elsewhere the tests skip with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netlab import Lab, build_lab, lab_available
from tests.procs import Peer, Rendezvous

REASON = lab_available()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.lab]

RDV_PORT = 7777
#: Seconds a path change may take: a failed direct race (~2.5 s), then a punch
#: window (6 s), with slack for a loaded machine.
PATH_TIMEOUT = 20


class World:
    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab = lab
        self.tmp = tmp
        self.peers: list[Peer] = []
        rdv = lab.hosts["rdv"]
        self.rendezvous = Rendezvous(
            tmp / "rdv.sqlite3", host="0.0.0.0", port=RDV_PORT, prefix=tuple(rdv.argv_prefix())
        )
        self.server = f"{rdv.ip}:{RDV_PORT}"

    def peer(self, host: str, *extra: str) -> Peer:
        h = self.lab.hosts[host]
        p = Peer(
            host,
            self.server,
            self.tmp / host,
            listen="0.0.0.0:0",
            extra=extra,
            prefix=tuple(h.argv_prefix()),
        )
        self.peers.append(p)
        return p.logged_in()

    def close(self) -> None:
        for p in self.peers:
            p.stop()
        self.rendezvous.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with build_lab() as lab:
        w = World(lab, tmp_path)
        try:
            yield w
        finally:
            w.close()


def talk(a: Peer, b: Peer, path: str) -> None:
    """``a`` connects to ``b``; both end up on ``path``; messages flow both ways."""
    a.send(f"connect: {b.name}")
    a.expect(
        rf"\* \[{b.name}\] (Talking|Now talking) to {b.name}.*\({path}\)", timeout=PATH_TIMEOUT
    )
    b.expect(
        rf"\* \[{a.name}\] ({a.name} opened a conversation with you|Now talking to {a.name})"
        rf".*\({path}\)",
        timeout=PATH_TIMEOUT,
    )
    b.send(f"::switch {a.name}")  # only the user chooses where typed lines go
    exchange(a, b, "first")


def exchange(a: Peer, b: Peer, tag: str, n: int = 3) -> None:
    for i in range(n):
        a.send(f"{tag} {i} from {a.name}")
        b.send(f"{tag} {i} from {b.name}")
    for i in range(n):
        b.expect_line(f"{a.name}: {tag} {i} from {a.name}")
        a.expect_line(f"{b.name}: {tag} {i} from {b.name}")


def test_same_lan_is_direct(world: World) -> None:
    a1, a2 = world.peer("a1"), world.peer("a2")
    talk(a1, a2, "direct")


def test_nat_to_nat_is_punched(world: World) -> None:
    a1, b1 = world.peer("a1"), world.peer("b1")
    talk(a1, b1, "punched")


def test_nat_to_public_is_direct_whoever_calls(world: World) -> None:
    a1, pub, b1 = world.peer("a1"), world.peer("pub"), world.peer("b1")
    talk(a1, pub, "direct")
    # The public host calls a NATed one: the callee's own dial wins (reversal).
    talk(pub, b1, "direct")


def test_symmetric_nat_falls_back_to_the_relay(world: World) -> None:
    s1, b1 = world.peer("s1"), world.peer("b1")
    s1.send("connect: b1")
    s1.expect(r"\* \[b1\] Talking to b1 \(relayed\)")
    b1.expect(r"\* \[s1\] s1 opened a conversation with you \(relayed\)", timeout=PATH_TIMEOUT)
    b1.send("::switch s1")
    exchange(s1, b1, "early")  # the relay carries messages while the upgrade is tried
    s1.expect(r"No direct path to b1 .*\(relayed\)", timeout=PATH_TIMEOUT)
    exchange(s1, b1, "after")


def test_a_silently_dead_direct_path_falls_back_to_the_relay(world: World) -> None:
    a1, b1 = world.peer("a1"), world.peer("b1")
    talk(a1, b1, "punched")
    world.lab.block("a1", "b1")  # the path now drops everything, without a word
    a1.send("sent into the void")
    a1.expect(r"talking to b1 through the relay \(relayed\)", timeout=PATH_TIMEOUT)
    b1.expect_line("a1: sent into the void", timeout=PATH_TIMEOUT)
    exchange(a1, b1, "relayed")


def test_roaming_nat_address_change_recovers_with_nothing_lost(world: World) -> None:
    a1, b1 = world.peer("a1"), world.peer("b1")
    talk(a1, b1, "punched")
    world.lab.set_nat_public_ip("natA", "203.0.113.111")
    for i in range(5):
        a1.send(f"roaming {i}")
    # The old path dies, the peer re-registers from the new address, and the
    # conversation finds a punched path again, by itself.
    a1.expect(r"Reconnected to the rendezvous", timeout=PATH_TIMEOUT)
    a1.expect(r"\(punched\)", timeout=PATH_TIMEOUT)
    for i in range(5):
        b1.expect_line(f"a1: roaming {i}", timeout=PATH_TIMEOUT)
    exchange(a1, b1, "after")
    a1.send("::netcheck")
    a1.expect(r"public endpoint \(as the rendezvous sees you\): 203\.0\.113\.111:")
    assert "a1: roaming" not in b1.output  # nothing shown twice after the last one
