"""Several hubs as one service, joined by an in-memory bus (tests/cluster_world.py).

What one instance did alone must hold across instances: users anywhere see
each other, talk both ways, end and leave conversations, punch holes only
toward someone who called them, a second login anywhere ends the first and
keeps its conversations, and a user who vanished is answered ``offline``
(so nothing said to them disappears without a word).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chathack.protocol import (
    Command,
    Connect,
    Lan,
    ListenPort,
    Msg,
    Punch,
    ServerLine,
    Text,
    UserLine,
    parse_peer_address,
    parse_users,
)
from chathack.replies import parse_failed
from rendezvous.cluster_wire import Here, PresenceRecord
from rendezvous.hub import Session
from rendezvous.store import SqliteStore
from tests.cluster_world import Bus
from tests.test_hub import take


@pytest.fixture
def bus() -> Iterator[Bus]:
    store = SqliteStore(":memory:")
    world = Bus(store)
    for name in ("A", "B", "C"):
        world.add(name)
    yield world
    store.close()


def lines(session: Session) -> list[ServerLine | UserLine]:
    return take(session)


def flags(session: Session) -> list[str]:
    return [x.flag if isinstance(x, ServerLine) else f"from {x.origin}" for x in take(session)]


def do(bus: Bus, instance: str, session: Session, *events: object) -> None:
    for event in events:
        bus.instances[instance].hub.handle(session, event, 200.0)  # type: ignore[arg-type]
    bus.pump()


def peer_ready(bus: Bus, instance: str, session: Session, port: int) -> None:
    do(bus, instance, session, ListenPort(port), Lan(("192.0.2.7",)))
    take(session)


def test_users_on_different_instances_see_each_other_and_talk_both_ways(bus: Bus) -> None:
    alice = bus.login("A", "alice")
    bob = bus.login("B", "bob")
    bus.pump()
    take(alice), take(bob)

    do(bus, "A", alice, Command("users"))
    [users] = lines(alice)
    assert isinstance(users, ServerLine) and users.flag == "USERS"
    listed = {u.name: u.online for u in parse_users(users.text)}
    assert listed == {"alice": True, "bob": True}

    do(bus, "A", alice, Connect("bob"))
    [peer] = lines(alice)
    assert isinstance(peer, ServerLine) and peer.flag == "PEER"
    assert parse_peer_address(peer.text).name == "bob"
    [call] = lines(bob)
    assert isinstance(call, ServerLine) and call.flag == "CALL"
    assert parse_peer_address(call.text).name == "alice"

    do(bus, "A", alice, Text("hello bob"))
    assert lines(bob) == [UserLine("alice", "hello bob")]
    # bob's plain text goes to alice: the callee's current partner crossed too.
    do(bus, "B", bob, Text("hi alice"))
    assert lines(alice) == [UserLine("bob", "hi alice")]
    do(bus, "B", bob, Msg("alice", "and again"))
    assert lines(alice) == [UserLine("bob", "and again")]


def test_ending_and_leaving_cross_instances(bus: Bus) -> None:
    alice, bob, carol = bus.login("A", "alice"), bus.login("B", "bob"), bus.login("C", "carol")
    bus.pump()
    do(bus, "A", alice, Connect("bob"), Connect("carol"))
    for s in (alice, bob, carol):
        take(s)

    do(bus, "B", bob, Command("end", "alice"))
    assert flags(bob) == ["OK"]
    assert flags(alice) == ["END"]
    assert "bob" not in alice.partners

    hub_c = bus.instances["C"].hub
    hub_c.detach(carol, 300.0)
    bus.pump()
    assert flags(alice) == ["GONE"]
    assert alice.current is None and "carol" not in alice.partners
    assert bus.instances["A"].hub.roster.get("carol") is None


def test_punch_across_instances_only_toward_a_caller(bus: Bus) -> None:
    alice, bob = bus.login("A", "alice"), bus.login("B", "bob")
    bus.pump()
    peer_ready(bus, "A", alice, 5001)
    peer_ready(bus, "B", bob, 5002)

    # bob never called alice: alice may not learn where bob is by punching.
    do(bus, "A", alice, Punch("bob"))
    [refused] = lines(alice)
    assert isinstance(refused, ServerLine) and refused.flag == "FAILED"
    assert parse_failed(refused.text).code == "not-invited"
    assert take(bob) == []

    do(bus, "B", bob, Connect("alice"))
    take(alice), take(bob)
    do(bus, "A", alice, Punch("bob"))
    [to_alice] = lines(alice)
    [to_bob] = lines(bob)
    assert isinstance(to_alice, ServerLine) and to_alice.flag == "PUNCH"
    assert to_alice.text.startswith("bob ") and to_alice.text.endswith(f":{bob.remote_port}")
    assert isinstance(to_bob, ServerLine) and to_bob.flag == "PUNCH"
    assert to_bob.text.startswith("alice ")


def test_addresses_only_to_whom_the_callee_called(bus: Bus) -> None:
    alice, bob = bus.login("A", "alice"), bus.login("B", "bob")
    bus.pump()
    peer_ready(bus, "A", alice, 5001)
    peer_ready(bus, "B", bob, 5002)
    do(bus, "A", alice, Connect("bob"))
    [peer] = lines(alice)
    assert isinstance(peer, ServerLine)
    withheld = parse_peer_address(peer.text)
    assert withheld.host is None and ("lan", "-") in withheld.extra
    [call] = lines(bob)
    assert isinstance(call, ServerLine)
    assert parse_peer_address(call.text).port == 5001  # the caller's, to the callee

    do(bus, "B", bob, Connect("alice"))
    take(bob), take(alice)
    do(bus, "A", alice, Connect("bob"))
    [peer] = lines(alice)
    assert isinstance(peer, ServerLine)
    assert parse_peer_address(peer.text).port == 5002


def test_a_login_elsewhere_ends_the_old_session_and_keeps_its_conversations(bus: Bus) -> None:
    alice, bob = bus.login("A", "alice"), bus.login("B", "bob")
    bus.pump()
    do(bus, "A", alice, Connect("bob"))
    take(alice), take(bob)

    bob2 = bus.login("C", "bob", ip="203.0.113.9")
    bus.pump()
    [bye] = lines(bob)
    assert isinstance(bye, ServerLine) and bye.flag == "BYE" and "203.0.113.9" in bye.text
    assert bob.closed
    assert bus.instances["B"].hub.session_of("bob") is None
    assert bus.instances["A"].hub.roster.get("bob").instance == "C"  # type: ignore[union-attr]
    assert take(alice) == []  # bob did not go offline: no GONE
    assert bob2.partners == {"alice"} and bob2.current == "alice"

    do(bus, "A", alice, Text("still there?"))
    assert lines(bob2)[-1] == UserLine("alice", "still there?")
    do(bus, "C", bob2, Text("yes"))
    assert lines(alice) == [UserLine("bob", "yes")]


def test_an_older_announcement_never_hides_a_newer_login(bus: Bus) -> None:
    bob = bus.login("B", "bob")
    bus.pump()
    hub_a = bus.instances["A"].hub
    stale = PresenceRecord("bob", "C", bob.epoch - 1, "198.51.100.5")
    bus.instances["A"].inbox.presence(Here(stale), 200.0)
    assert hub_a.roster.get("bob").instance == "B"  # type: ignore[union-attr]
    # Nor does an older one end the newer session.
    bus.instances["B"].inbox.presence(Here(stale), 200.0)
    assert not bob.closed and take(bob) == []


def test_a_dead_instance_users_go_offline_for_everyone(bus: Bus) -> None:
    alice, _bob = bus.login("A", "alice"), bus.login("B", "bob")
    bus.pump()
    do(bus, "A", alice, Connect("bob"))
    take(alice)
    bus.kill("B")
    bus.lease_expired("B")
    assert flags(alice) == ["GONE"]
    do(bus, "A", alice, Connect("bob"))
    [peer] = lines(alice)
    assert isinstance(peer, ServerLine) and "state=offline" in peer.text


def test_a_message_to_a_user_who_left_meanwhile_is_answered_offline(bus: Bus) -> None:
    alice, bob = bus.login("A", "alice"), bus.login("B", "bob")
    bus.pump()
    do(bus, "A", alice, Connect("bob"))
    take(alice), take(bob)
    # bob leaves B, and the message is sent before A hears of it.
    hub_b = bus.instances["B"].hub
    del hub_b.online["bob"]
    bus.instances["A"].hub.handle(alice, Msg("bob", "are you there"), 200.0)
    bus.pump()
    [failed] = lines(alice)
    assert isinstance(failed, ServerLine) and failed.flag == "FAILED"
    reply = parse_failed(failed.text)
    assert (reply.request, reply.name, reply.code) == ("msg", "bob", "offline")


def test_a_conversation_taken_over_by_a_session_already_gone_tells_the_partners(bus: Bus) -> None:
    alice, bob = bus.login("A", "alice"), bus.login("B", "bob")
    bus.pump()
    do(bus, "A", alice, Connect("bob"))
    take(alice), take(bob)
    bob2 = bus.login("C", "bob")
    # bob's new session ends before B's takeover reaches C.
    bus.instances["C"].hub.detach(bob2, 150.0)
    bus.pump()
    assert "GONE" in flags(alice)
    assert "bob" not in alice.partners
