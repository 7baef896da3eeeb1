"""The relay's fast path (``Hub.relay_line``) against the full parser: for
any line, either it declines, or it relays exactly what parsing the line and
``Hub.handle`` would have relayed, to the same session; and it declines
nothing the benchmark's ordinary traffic sends."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from chathack.errors import RemoteProtocolError
from chathack.protocol import MAX_RELAY_CHARS, parse_client_line
from rendezvous.hub import Hub
from rendezvous.session import Session
from rendezvous.store import SqliteStore


class Outbox:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def _world() -> tuple[Hub, dict[str, Session]]:
    store = SqliteStore(":memory:")
    hub = Hub(store)
    sessions = {}
    for name in ("alice", "Bob", "carol"):
        account = store.create_account(name, "hash", 0.0)
        session = Session(Outbox(), "192.0.2.1")  # type: ignore[arg-type]
        hub.attach(session, account, 0.0)
        hub.after_login(session, 0.0)
        sessions[name.lower()] = session
    for session in sessions.values():
        session.outbox.sent.clear()  # type: ignore[attr-defined]
    return hub, sessions


def _sent(sessions: dict[str, Session]) -> dict[str, list[bytes]]:
    out = {}
    for name, session in sessions.items():
        out[name] = list(session.outbox.sent)  # type: ignore[attr-defined]
        session.outbox.sent.clear()  # type: ignore[attr-defined]
    return out


names = st.sampled_from(["bob", "BOB", "Bob", "carol", "alice", "dave", "b0b", "\u212aob", ""])
pieces = st.sampled_from(
    [" ", "  ", "\t", "\r", "\x1f", "\x85", "\u3000", "\u2028", "\u202e", "é", "x", "hi", "\x00"]
)
texts = st.lists(pieces, max_size=8).map("".join)


@given(names, texts, texts)
@settings(max_examples=3000)
@example("bob", "", "hello there")
@example("bob", "", " hello  ")
@example("bob", "", "hi\r")
@example("bob", "", "hi\x1f")
@example("BOB", "", "\u202ehi")
@example("\u212aob", "", "hi")
def test_the_fast_path_relays_exactly_what_the_parser_would(to: str, gap: str, text: str) -> None:
    line = f"msg: {to}{gap} {text}"
    hub, sessions = _world()
    alice = sessions["alice"]
    took = hub.relay_line(alice, line, 0.0)
    fast = _sent(sessions)
    try:
        event = parse_client_line(line)
    except RemoteProtocolError:
        event = None
    if event is not None:
        hub.handle(alice, event, 0.0)
    full = _sent(sessions)
    if took:
        assert fast == full
        assert any(full[n] for n in ("bob", "carol")), full  # it went to the partner
    else:
        assert all(not lines for lines in fast.values())  # declined: nothing sent


def test_the_benchmarks_lines_take_the_fast_path() -> None:
    hub, sessions = _world()
    text = "00000000001234567890 " + "x" * 43
    assert hub.relay_line(sessions["alice"], f"msg: bob {text}", 0.0)
    assert sessions["bob"].outbox.sent == [f"alice: {text}\n".encode()]  # type: ignore[attr-defined]
    assert hub.relay_line(sessions["alice"], "msg: Carol " + "é" * 1000, 0.0)  # any case, any text
    assert not hub.relay_line(sessions["alice"], "msg: carol " + "x" * (MAX_RELAY_CHARS + 1), 0.0)
