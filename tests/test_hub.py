"""Pure domain tests of :class:`rendezvous.hub.Hub`: no sockets, no trio, no clock.

Sessions write into a :class:`FakeOutbox` that records bytes; the store is a
real :class:`SqliteStore` in memory; ``now`` is a plain number.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import rendezvous.hub
from chathack.protocol import (
    Command,
    Connect,
    Lan,
    ListenPort,
    Msg,
    Password,
    PeerAddress,
    Punch,
    ServerLine,
    Text,
    UserLine,
    Username,
    UserState,
    parse_peer_address,
    parse_server_line,
    parse_users,
)
from chathack.replies import Failed, parse_failed
from rendezvous.commands import COMMANDS, KEYWORD_HELP, help_lines
from rendezvous.hub import Hub, Session
from rendezvous.store import SqliteStore


class FakeOutbox:
    """Records what the hub sends to one session."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def send(self, data: bytes, lines: int = 1) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[ServerLine | UserLine]:
        """Every line sent since the last call, parsed."""
        text = self.data.decode("utf-8")
        self.data.clear()
        assert text == "" or text.endswith("\n")
        return [parse_server_line(line) for line in text.splitlines()]


@pytest.fixture
def store() -> Iterator[SqliteStore]:
    s = SqliteStore(":memory:")
    yield s
    s.close()


@pytest.fixture
def hub(store: SqliteStore) -> Hub:
    return Hub(store)


def login(hub: Hub, name: str, ip: str = "198.51.100.1", now: float = 100.0) -> Session:
    """Register ``name`` if needed and attach a new session for it (login is the server's job)."""
    account = hub.store.get_account(name) or hub.store.create_account(name, "hash", now)
    session = Session(FakeOutbox(), ip)
    hub.attach(session, account, now)
    return session


def take(session: Session) -> list[ServerLine | UserLine]:
    assert isinstance(session.outbox, FakeOutbox)
    return session.outbox.take()


def say(hub: Hub, session: Session, *events: object, now: float = 200.0) -> None:
    for event in events:
        hub.handle(session, event, now)  # type: ignore[arg-type]


def only(session: Session, flag: str) -> str:
    """The one line the session got, which must be ``Servidor[flag]``; its text."""
    [line] = take(session)
    assert isinstance(line, ServerLine) and line.flag == flag, line
    return line.text


# --------------------------------------------------------------------------
# Presence
# --------------------------------------------------------------------------


def test_attach_puts_the_user_online_and_records_the_login(hub: Hub) -> None:
    alice = login(hub, "alice", "198.51.100.1", now=5)
    assert hub.session_of("ALICE") is alice and alice.name == "alice"
    acc = hub.store.get_account("alice")
    assert acc is not None and acc.last_ip == "198.51.100.1" and acc.last_seen == 5
    assert take(alice) == []  # the welcome is the I/O layer's job


def test_detach_takes_the_user_offline_and_records_last_seen(hub: Hub) -> None:
    alice = login(hub, "alice")
    hub.detach(alice, now=300)
    assert hub.session_of("alice") is None
    acc = hub.store.get_account("alice")
    assert acc is not None and acc.last_seen == 300
    hub.detach(alice, now=400)  # twice is harmless
    hub.detach(Session(FakeOutbox(), "198.51.100.9"), now=400)  # never logged in: nothing to do


def test_second_login_kicks_the_old_session_and_keeps_its_conversations(hub: Hub) -> None:
    old = login(hub, "alice", "198.51.100.1")
    bob = login(hub, "bob")
    say(hub, bob, Connect("alice"))
    take(old), take(bob)
    new = login(hub, "Alice", "192.0.2.55", now=500)
    [bye] = take(old)
    assert bye == ServerLine("BYE", "You logged in again from 192.0.2.55; this session is closed")
    assert old.closed and old.outbox.closed  # type: ignore[attr-defined]
    assert hub.session_of("alice") is new and new.name == "alice"  # the registered spelling
    acc = hub.store.get_account("alice")
    assert acc is not None and acc.last_ip == "192.0.2.55"
    # Same user from a new network (roaming): the conversation carries on.
    assert take(bob) == []
    assert bob.current == "alice" and new.partners == {"bob"} and new.current == "bob"
    assert old.partners == set()
    # The old session's connection ending later changes nothing.
    hub.detach(old, now=600)
    assert hub.session_of("alice") is new


# --------------------------------------------------------------------------
# connect:
# --------------------------------------------------------------------------


def test_connect_sends_peer_to_the_caller_and_call_to_the_callee(hub: Hub) -> None:
    alice, bob = login(hub, "alice", "198.51.100.1"), login(hub, "bob", "198.51.100.2")
    say(hub, bob, ListenPort(4000))
    assert only(bob, "OK") == "Direct links to you go to 198.51.100.2:4000"
    say(hub, alice, Connect("BOB"))
    # Where bob is, only once bob asks to talk to alice (weakness 8).
    assert parse_peer_address(only(alice, "PEER")) == PeerAddress("bob", None, None)
    assert parse_peer_address(only(bob, "CALL")) == PeerAddress("alice", None, None)
    assert alice.current == "bob" and bob.current == "alice"
    assert alice.partners == {"bob"} and bob.partners == {"alice"}
    say(hub, bob, Connect("alice"))
    assert parse_peer_address(only(alice, "CALL")) == PeerAddress("bob", "198.51.100.2", 4000)


def test_port_is_stored(hub: Hub) -> None:
    alice = login(hub, "alice")
    say(hub, alice, ListenPort(5555))
    acc = hub.store.get_account("alice")
    assert acc is not None and acc.last_port == 5555 and alice.port == 5555


def test_a_call_does_not_steal_the_callees_current_conversation(hub: Hub) -> None:
    alice, bob, carol = login(hub, "alice"), login(hub, "bob"), login(hub, "carol")
    say(hub, alice, Connect("bob"))
    say(hub, carol, Connect("bob"))
    assert bob.current == "alice" and bob.partners == {"alice", "carol"}
    assert [e.flag for e in take(bob)] == ["CALL", "CALL"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("nobody", "unknown", "There is no user named nobody: ::users lists who is registered"),
        ("alice", "self", "You cannot connect to yourself"),
        ("ALICE", "self", "You cannot connect to yourself"),
    ],
)
def test_connect_errors_name_the_request_they_answer(
    hub: Hub, target: str, code: str, message: str
) -> None:
    hub.store.create_account("carol", "hash", 1)
    alice = login(hub, "alice")
    say(hub, alice, Connect(target))
    assert parse_failed(only(alice, "FAILED")) == Failed("connect", target, code, message)
    assert alice.current is None and alice.partners == set()


def test_connect_to_an_offline_user_answers_with_the_vouched_key(hub: Hub) -> None:
    hub.store.create_account("carol", "hash", 1)
    key = "A" * 43 + "="
    hub.store.set_pubkey("carol", key)
    alice = login(hub, "alice")
    say(hub, alice, Connect("Carol"))
    assert parse_peer_address(only(alice, "PEER")) == PeerAddress(
        "carol", None, None, (("state", "offline"), ("key", key))
    )
    assert alice.partners == set()  # nobody to tell: carol learns of it from her mail


# --------------------------------------------------------------------------
# Relaying text
# --------------------------------------------------------------------------


def test_msg_is_relayed_with_the_senders_name(hub: Hub) -> None:
    alice, bob = login(hub, "alice"), login(hub, "bob")
    say(hub, alice, Msg("Bob", "hello: there"))
    assert bob.outbox.data == b"alice: hello: there\n"  # type: ignore[attr-defined]
    assert take(bob) == [UserLine("alice", "hello: there")]
    assert take(alice) == []  # no echo, no receipt


def test_msg_errors(hub: Hub) -> None:
    alice = login(hub, "alice")
    hub.store.create_account("carol", "hash", 1)
    say(hub, alice, Msg("nobody", "hi"), Msg("alice", "hi"), Msg("carol", "hi"))
    assert take(alice) == [
        ServerLine(
            "FAILED",
            "msg nobody unknown: There is no user named nobody: ::users lists who is registered",
        ),
        ServerLine("FAILED", "msg alice self: You cannot send messages to yourself"),
        ServerLine(
            "FAILED",
            "msg carol offline: carol is offline: try again when ::users shows carol online",
        ),
    ]


def test_plain_text_goes_to_the_current_partner(hub: Hub) -> None:
    alice, bob = login(hub, "alice"), login(hub, "bob")
    say(hub, alice, Text("before connecting"))
    assert "You are not in a conversation" in only(alice, "ERROR")
    say(hub, alice, Connect("bob"))
    take(alice), take(bob)
    say(hub, alice, Text("hi bob"))
    say(hub, bob, Text("hi alice"))
    assert take(bob) == [UserLine("alice", "hi bob")]
    assert take(alice) == [UserLine("bob", "hi alice")]


def test_login_lines_after_login_are_errors(hub: Hub) -> None:
    alice = login(hub, "alice")
    say(hub, alice, Username("bob"), Password("x"))
    assert take(alice) == [ServerLine("ERROR", "You are already logged in as alice")] * 2


# --------------------------------------------------------------------------
# ::commands
# --------------------------------------------------------------------------


def test_end_notifies_the_partner(hub: Hub) -> None:
    alice, bob = login(hub, "alice"), login(hub, "bob")
    say(hub, alice, Connect("bob"))
    take(alice), take(bob)
    say(hub, bob, Command("end"))
    assert only(bob, "OK") == "Conversation with alice ended"
    assert only(alice, "END") == "bob ended the conversation"
    assert alice.current is None and bob.current is None
    assert alice.partners == set() and bob.partners == set()
    say(hub, alice, Text("still there?"))
    assert "You are not in a conversation" in only(alice, "ERROR")


def test_end_by_name_keeps_the_other_conversations(hub: Hub) -> None:
    alice, bob, carol = login(hub, "alice"), login(hub, "bob"), login(hub, "carol")
    say(hub, alice, Connect("bob"), Connect("carol"))  # now talking to carol
    say(hub, alice, Command("end", "bob"))
    assert alice.current == "carol" and alice.partners == {"carol"}
    assert carol.partners == {"alice"}
    assert [e.flag for e in take(bob)] == ["CALL", "END"]  # type: ignore[union-attr]


def test_end_errors(hub: Hub) -> None:
    alice = login(hub, "alice")
    say(hub, alice, Command("end"), Command("end", "bob"))
    assert take(alice) == [
        ServerLine("ERROR", "You are not in a conversation; there is nothing to end"),
        ServerLine("ERROR", "You are not in a conversation with bob"),
    ]


def test_users_lists_online_first_then_recently_seen(hub: Hub, store: SqliteStore) -> None:
    for name, seen in [("dave", 10), ("erin", 30), ("carol", 20)]:
        store.create_account(name, "hash", seen)
    bob = login(hub, "bob", now=40)
    alice = login(hub, "alice", now=50)
    say(hub, alice, Command("users"))
    text = only(alice, "USERS")
    assert text == "alice online, bob online, erin offline, carol offline, dave offline"
    assert parse_users(text)[:2] == [UserState("alice", True), UserState("bob", True)]
    hub.detach(bob, now=60)
    say(hub, alice, Command("users"))
    assert only(alice, "USERS").startswith("alice online, bob offline, erin offline")


def test_users_says_how_many_were_left_out(
    hub: Hub, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rendezvous.hub, "MAX_USERS_LISTED", 3)
    for i in range(5):
        store.create_account(f"user{i}", "hash", i)
    alice = login(hub, "alice", now=100)
    say(hub, alice, Command("users"))
    assert only(alice, "USERS") == "alice online, user4 offline, user3 offline, +3 more"


def test_help_is_generated_from_the_registry(hub: Hub) -> None:
    alice = login(hub, "alice")
    say(hub, alice, Command("help"))
    lines = take(alice)
    assert all(isinstance(e, ServerLine) and e.flag == "HELP" for e in lines)
    texts = [e.text for e in lines]
    assert texts == help_lines()
    assert len(texts) == len(COMMANDS) + len(KEYWORD_HELP)
    for spec in COMMANDS.values():
        assert any(t.startswith(spec.usage) and t.endswith(spec.help) for t in texts)
    for usage, text in KEYWORD_HELP:
        assert any(t.startswith(usage) and t.endswith(text) for t in texts)


def test_unknown_command(hub: Hub) -> None:
    alice = login(hub, "alice")
    say(hub, alice, Command("dance", "now"))
    assert only(alice, "ERROR") == "Unknown command ::dance: ::help lists the commands"


def test_quit_says_goodbye_and_closes(hub: Hub) -> None:
    alice, bob = login(hub, "alice"), login(hub, "bob")
    say(hub, bob, Connect("alice"))
    take(alice), take(bob)
    say(hub, alice, Command("quit"))
    assert only(alice, "BYE") == "Goodbye alice"
    assert alice.closed and hub.session_of("alice") is None
    assert only(bob, "GONE") == "alice went offline"


def test_partners_are_told_when_a_user_goes_offline(hub: Hub) -> None:
    alice, bob, carol = login(hub, "alice"), login(hub, "bob"), login(hub, "carol")
    say(hub, alice, Connect("bob"), Connect("carol"))
    for s in (alice, bob, carol):
        take(s)
    hub.detach(alice, now=300)
    assert only(bob, "GONE") == "alice went offline"
    assert only(carol, "GONE") == "alice went offline"
    assert bob.current is None and bob.partners == set()
    say(hub, bob, Text("hello?"))
    assert "You are not in a conversation" in only(bob, "ERROR")


# --------------------------------------------------------------------------
# Across networks: candidates, hole punching, keepalive (issue 3)
# --------------------------------------------------------------------------


def login_from(hub: Hub, name: str, ip: str, remote_port: int, now: float = 100.0) -> Session:
    """Like :func:`login`, with the client's source port as the server sees it (after NAT)."""
    account = hub.store.get_account(name) or hub.store.create_account(name, "hash", now)
    session = Session(FakeOutbox(), ip, remote_port)
    hub.attach(session, account, now)
    return session


def extras(text: str) -> dict[str, str]:
    return dict(parse_peer_address(text).extra)


def test_lan_then_connect_shows_public_and_lan_candidates(hub: Hub) -> None:
    # alice behind natA, bob behind natB, as in tests/netlab.py.
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    bob = login_from(hub, "bob", "203.0.113.102", 40002)
    say(hub, alice, ListenPort(40001), Lan(("192.0.2.10:40001",)))
    assert [e.text for e in take(alice)] == [  # type: ignore[union-attr]
        "Direct links to you go to 203.0.113.101:40001",
        "Your own addresses: 192.0.2.10:40001",
    ]
    say(hub, bob, ListenPort(40002), Lan(("198.51.100.10:40002", "[2001:db8::10]:40002")))
    take(bob)
    say(hub, alice, Connect("bob"))
    # bob did not ask to talk to alice: where he is stays his (weakness 8).
    withheld = parse_peer_address(only(alice, "PEER"))
    assert (withheld.name, withheld.host, withheld.port) == ("bob", None, None)
    assert dict(withheld.extra) == {"lan": "-"}  # a chathack peer, nothing to dial
    call = only(bob, "CALL")  # alice asked: bob learns where she is
    assert parse_peer_address(call).host == "203.0.113.101"
    assert extras(call)["public"] == "203.0.113.101:40001"
    assert extras(call)["lan"] == "192.0.2.10:40001"
    say(hub, bob, Connect("alice"))  # bob asks too: now each may know where the other is
    peer = only(alice, "CALL")
    addr = parse_peer_address(peer)
    assert (addr.name, addr.host, addr.port) == ("bob", "203.0.113.102", 40002)
    assert extras(peer)["public"] == "203.0.113.102:40002"
    assert extras(peer)["lan"] == "198.51.100.10:40002,[2001:db8::10]:40002"  # comma-joined
    assert extras(only(bob, "PEER"))["lan"] == "192.0.2.10:40001"  # alice invited bob


def test_public_is_the_observed_source_port_not_the_announced_one(hub: Hub) -> None:
    # A symmetric NAT (or a taken port): the connection arrives from another port.
    s1 = login_from(hub, "s1", "203.0.113.103", 61234)
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    say(hub, s1, ListenPort(40003), Lan(("198.51.100.130:40003",)))
    take(s1)
    say(hub, s1, Connect("alice"))
    peer = only(alice, "CALL")
    assert parse_peer_address(peer).port == 40003
    assert extras(peer)["public"] == "203.0.113.103:61234"


def test_a_relay_only_peer_has_no_address_but_is_marked_a_chathack_peer(hub: Hub) -> None:
    dave = login_from(hub, "dave", "203.0.113.20", 50000)
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    say(hub, dave, Lan(()))
    assert only(dave, "OK") == "Your own addresses: none"
    say(hub, alice, Connect("dave"))
    peer = parse_peer_address(only(alice, "PEER"))
    assert (peer.host, peer.port) == (None, None)  # "dave -": nothing to dial
    assert dict(peer.extra)["lan"] == "-"  # ... but it speaks link frames


def test_a_plain_client_gets_no_candidates(hub: Hub) -> None:
    """A person with nc sends neither lan: nor port:, so PEER/CALL stay as before issue 3."""
    carol = login_from(hub, "carol", "203.0.113.5", 50500)
    bob = login_from(hub, "bob", "203.0.113.102", 40002)
    say(hub, bob, ListenPort(40002), Lan(("198.51.100.10:40002",)))
    take(bob)
    say(hub, carol, Connect("bob"))
    assert extras(only(carol, "PEER")) == {"lan": "-"}  # bob did not call carol
    call = parse_peer_address(only(bob, "CALL"))
    assert (call.name, call.host, call.port) == ("carol", None, None)
    assert "public" not in dict(call.extra) and "lan" not in dict(call.extra)


def test_a_new_lan_line_replaces_the_old_one(hub: Hub) -> None:
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    bob = login_from(hub, "bob", "203.0.113.102", 40002)
    say(hub, bob, Lan(("198.51.100.10:40002",)), Lan(("198.51.100.11:40002",)))
    take(bob)
    say(hub, bob, Connect("alice"))
    assert extras(only(alice, "CALL"))["lan"] == "198.51.100.11:40002"


def test_punch_sends_both_sides_each_others_public_endpoint_at_once(hub: Hub) -> None:
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    bob = login_from(hub, "bob", "203.0.113.102", 40002)
    say(hub, alice, ListenPort(40001), Lan(("192.0.2.10:40001",)), Connect("bob"))
    say(hub, bob, ListenPort(40002), Lan(("198.51.100.10:40002",)))
    take(alice), take(bob)
    say(hub, bob, Punch("ALICE"))  # the callee asks: alice called bob
    assert only(alice, "PUNCH") == "bob 203.0.113.102:40002"
    assert only(bob, "PUNCH") == "alice 203.0.113.101:40001"


def test_a_punch_toward_someone_who_did_not_call_is_refused(hub: Hub) -> None:
    """A punch tells each side where the other is: alice called bob, so bob
    may punch toward her, but she may not punch toward bob (he never asked
    to talk to her), nor may carol, who called nobody."""
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    bob = login_from(hub, "bob", "203.0.113.102", 40002)
    carol = login_from(hub, "carol", "203.0.113.103", 40003)
    for who, port in ((alice, 40001), (bob, 40002), (carol, 40003)):
        say(hub, who, ListenPort(port), Lan((f"192.0.2.10:{port}",)))
    say(hub, alice, Connect("bob"))
    take(alice), take(bob), take(carol)
    say(hub, alice, Punch("bob"))
    assert parse_failed(only(alice, "FAILED")) == Failed(
        "punch", "bob", "not-invited", "bob did not call you"
    )
    say(hub, carol, Punch("alice"))
    assert parse_failed(only(carol, "FAILED")).code == "not-invited"
    assert take(bob) == [] and take(alice) == []


def test_punch_does_not_reveal_a_relay_only_peer(hub: Hub) -> None:
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    dave = login_from(hub, "dave", "203.0.113.104", 40004)
    say(hub, alice, ListenPort(40001), Lan(("192.0.2.10:40001",)))
    say(hub, dave, Lan(()))  # relay only: no port, no addresses
    take(alice), take(dave)
    say(hub, alice, Punch("dave"))
    assert "cannot take part in hole punching" in only(alice, "FAILED")
    assert take(dave) == []


@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("alice", "self", "You cannot punch to yourself"),
        ("nobody", "unknown", "There is no user named nobody: ::users lists who is registered"),
        ("carol", "offline", "carol is offline: try again when ::users shows carol online"),
        ("erin", "not-peer", "erin cannot take part in hole punching"),  # a plain client
    ],
)
def test_punch_errors_go_to_the_asker_only(hub: Hub, target: str, code: str, message: str) -> None:
    hub.store.create_account("carol", "hash", 1)
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    erin = login_from(hub, "erin", "203.0.113.5", 50500)
    say(hub, alice, Lan(("192.0.2.10:40001",)))
    take(alice)
    say(hub, alice, Punch(target))
    assert parse_failed(only(alice, "FAILED")) == Failed("punch", target, code, message)
    assert take(erin) == []


def test_ping_answers_pong_with_the_token(hub: Hub) -> None:
    alice = login(hub, "alice")
    say(hub, alice, Command("ping", "18c4f2a9"), Command("ping"))
    assert take(alice) == [ServerLine("PONG", "18c4f2a9"), ServerLine("PONG", "-")]


def test_help_lists_the_new_lines(hub: Hub) -> None:
    alice = login(hub, "alice")
    say(hub, alice, Command("help"))
    texts = [e.text for e in take(alice)]  # type: ignore[union-attr]
    for usage in ("::ping [TOKEN]", "lan: HOST:PORT ...", "punch: NAME"):
        assert any(t.startswith(usage) for t in texts), usage


def test_relogin_from_a_new_address_keeps_partners_and_tells_them_where(hub: Hub) -> None:
    """Roaming: alice's home gets a new public address; her peer logs in again,
    re-announces, and asks for bob again; bob's CALL carries the new endpoint."""
    alice = login_from(hub, "alice", "203.0.113.101", 40001)
    bob = login_from(hub, "bob", "203.0.113.102", 40002)
    say(hub, alice, Lan(("192.0.2.10:40001",)), Connect("bob"))
    say(hub, bob, Lan(("198.51.100.10:40002",)))
    take(alice), take(bob)
    new = login_from(hub, "alice", "203.0.113.111", 40001, now=500)
    assert new.partners == {"bob"} and bob.partners == {"alice"} and bob.current == "alice"
    assert take(bob) == []  # no GONE: the conversation carries on
    say(hub, new, ListenPort(40001), Lan(("192.0.2.10:40001",)), Connect("bob"))
    take(new)
    assert extras(only(bob, "CALL"))["public"] == "203.0.113.111:40001"
    hub.detach(alice, now=600)  # the old connection's end, later, changes nothing
    assert take(bob) == [] and hub.session_of("alice") is new
