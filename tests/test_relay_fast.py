"""The relay's fast paths against the full parser: for any line
(``Hub.relay_line``) or run of lines (``Hub.relay_run``), either it
declines, or it relays exactly what parsing each line and ``Hub.handle``
would have relayed, to the same session, in the same order; and it declines
nothing the benchmark's ordinary traffic sends. ``LoggedInLines`` (what the
server's readers call) is held to the same over reads split anywhere."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from chathack.errors import RemoteProtocolError
from chathack.protocol import MAX_LINE_BYTES, MAX_RELAY_CHARS, LineBuffer, parse_client_line
from rendezvous.hub import Hub
from rendezvous.limits import ConnectionRates, Limits
from rendezvous.lines import LoggedInLines, Reader
from rendezvous.ratelimit import KeyedBuckets
from rendezvous.session import Session
from rendezvous.store import SqliteStore


class Outbox:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes, lines: int = 1) -> None:
        assert data.count(b"\n") == lines  # what the outbox's bound counts
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


# --------------------------------------------------------------------------
# Runs of lines relayed in one piece (Hub.relay_run, LoggedInLines)
# --------------------------------------------------------------------------

plain_texts = st.sampled_from(["hello", "x", "two words", "a  b", "é", " lead", "trail ", "\t"])
run_lines = st.one_of(
    st.builds(lambda to, text: f"msg: {to} {text}", st.sampled_from(["bob", "Bob"]), plain_texts),
    st.builds(lambda to, gap, text: f"msg: {to}{gap} {text}", names, texts, texts),
    st.sampled_from(["::ping", "msg:bob hi", "msg: bob", "mail: bob 1 hi", ""]),
)


def _reference(hub: Hub, alice: Session, data: bytes) -> None:
    """``data`` the slow way: each line framed, parsed and handled on its own."""
    buf = LineBuffer()
    buf.receive_data(data)
    while True:
        try:
            line = buf.next_line()
        except RemoteProtocolError as e:
            alice.say("ERROR", str(e))
            continue
        if line is None:
            return
        try:
            hub.handle(alice, parse_client_line(line), 0.0)
        except RemoteProtocolError as e:
            alice.say("ERROR", str(e))


def _joined(sent: dict[str, list[bytes]]) -> dict[str, bytes]:
    return {name: b"".join(chunks) for name, chunks in sent.items()}


@given(st.lists(run_lines, min_size=1, max_size=12), st.sampled_from([b"\n", b"\r\n"]))
@settings(max_examples=1500)
@example(["msg: bob hello", "msg: bob two words"], b"\n")
@example(["msg: bob hello", "msg: Bob hello"], b"\n")
@example(["msg: bob hello", "msg: bob  lead"], b"\n")
@example(["msg: bob " + "a" * (MAX_RELAY_CHARS + 1)], b"\n")
@example(["msg: bob hi", "msg: bob " + "a" * (MAX_RELAY_CHARS - 20)], b"\n")
def test_a_run_relays_exactly_what_its_lines_would_one_by_one(
    lines: list[str], newline: bytes
) -> None:
    run = b"".join(line.encode() + newline for line in lines)
    hub, sessions = _world()
    alice = sessions["alice"]
    took = hub.relay_run(alice, run, 0.0)
    fast = _sent(sessions)
    hub, sessions = _world()  # the reference in a world of its own
    _reference(hub, sessions["alice"], run)
    full = _sent(sessions)
    if took:
        assert took == len(lines)
        assert _joined(fast) == _joined(full)
        assert all(len(chunk) <= MAX_LINE_BYTES for chunks in fast.values() for chunk in chunks)
    else:
        assert all(not chunks for chunks in fast.values())  # declined: nothing sent


class _Conn:
    stopping = False
    closing = False


@given(
    st.lists(run_lines, min_size=1, max_size=12),
    st.integers(min_value=0, max_value=40),
    st.booleans(),
)
@settings(max_examples=500)
def test_a_logged_in_readers_lines_are_handled_as_the_parser_would(
    lines: list[str], cut: int, limited: bool
) -> None:
    """LoggedInLines.handle (runs in one piece, the fast path, the full
    parser) against the reference, over two reads split anywhere; with a
    chat rate limit it may stop for a pause, and then the lines handled so
    far are a prefix of the reference's."""
    data = b"".join(line.encode() + b"\n" for line in lines)
    cut = min(cut, len(data))
    hub, sessions = _world()
    alice = sessions["alice"]
    rates = KeyedBuckets(1.0, 3.0) if limited else KeyedBuckets(0.0, 1.0)
    handler = LoggedInLines(hub, rates)
    reader = Reader(_Conn(), alice, LineBuffer(), ConnectionRates(Limits(), rates, 0.0))  # type: ignore[arg-type]
    paused = False
    for part in (data[:cut], data[cut:]):
        reader.buf.receive_data(part)
        if handler.handle(reader, 0.0, 0.0) is not None:
            paused = True
            break
    got = _joined(_sent(sessions))
    hub, sessions = _world()  # the reference in a world of its own (mail ids are kept)
    _reference(hub, sessions["alice"], data)
    want = _joined(_sent(sessions))
    if paused:
        assert all(want[name].startswith(got[name]) for name in want)
    else:
        assert got == want


def test_the_benchmarks_runs_are_relayed_in_one_piece() -> None:
    hub, sessions = _world()
    run = b"".join(b"msg: bob %020d %s\n" % (i, b"x" * 43) for i in range(8))
    assert hub.relay_run(sessions["alice"], run, 0.0) == 8
    assert sessions["bob"].outbox.sent == [run.replace(b"msg: bob ", b"alice: ")]  # type: ignore[attr-defined]


def test_a_run_does_not_relay_a_text_the_parser_refuses_as_too_long() -> None:
    """A line under the line limit whose text is over the relay's (12,000
    characters) is answered with an ERROR by the parser: the run declines it."""
    hub, sessions = _world()
    run = b"msg: bob " + b"a" * (MAX_RELAY_CHARS + 1000) + b"\n"
    assert len(run) <= MAX_LINE_BYTES
    assert hub.relay_run(sessions["alice"], run, 0.0) == 0
    assert not sessions["bob"].outbox.sent  # type: ignore[attr-defined]
