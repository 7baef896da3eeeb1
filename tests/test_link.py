"""Sans-IO tests of the peer link (:mod:`chathack.link`): frames, their two
encodings, and the delivery guarantees of :class:`Conversation`.

The delivery properties run two conversations joined by a simulated link that
loses, duplicates and reorders frames (as ``h11``'s tests join two
connections), entirely synchronously.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chathack import link
from chathack.delivery import Conversation
from chathack.errors import LocalProtocolError, RemoteProtocolError
from chathack.link import (
    LINK_VERSION,
    MAX_FRAME_BYTES,
    RELAY_PREFIX,
    VIAS,
    Ack,
    Bye,
    Chat,
    Frame,
    FrameDecoder,
    Hello,
    Ping,
    Pong,
    encode_frame,
    frame_from_bytes,
    frame_to_bytes,
    frame_to_relay_text,
    is_relay_frame,
    path_of,
    relay_text_to_frame,
)
from chathack.protocol import (
    MAX_LINE_BYTES,
    MAX_RELAY_CHARS,
    MAX_TEXT_CHARS,
    NAME_RE,
    Msg,
    check_text,
    format_client_event,
    format_user_line,
    parse_client_line,
)

EXAMPLES: list[Frame] = [
    Hello("alice", "bob", "e1"),
    Hello("a.b-c_9", "B", "", version=7),
    Chat("e1", 1, 1, "hello", 1732530000.25),
    Chat("e1", 9, 3, 'caf\u00e9 \U0001f600 "quoted" \\ back\tslash'),
    Ack("e1", 0),
    Ack("e1", 12),
    Bye(),
    Bye("closed the window"),
    Ping(0),
    Pong(2**40),
]


def decode_all(dec: FrameDecoder) -> list[Frame]:
    out: list[Frame] = []
    while (frame := dec.next_frame()) is not None:
        out.append(frame)
    return out


def raw(d: object) -> bytes:
    return json.dumps(d).encode()


# --------------------------------------------------------------------------
# Frames and encodings
# --------------------------------------------------------------------------


@pytest.mark.parametrize("frame", EXAMPLES)
def test_frame_round_trips(frame: Frame) -> None:
    assert frame_from_bytes(frame_to_bytes(frame)) == frame
    dec = FrameDecoder()
    dec.receive_data(encode_frame(frame))
    assert decode_all(dec) == [frame]
    assert dec.pending_bytes == 0
    text = frame_to_relay_text(frame)
    assert is_relay_frame(text) and text.startswith(RELAY_PREFIX)
    assert "=" not in text  # base64url without padding
    assert relay_text_to_frame(text) == frame


def test_wire_shapes() -> None:
    body = json.loads(frame_to_bytes(Hello("alice", "bob", "e1")))
    expected = {"t": "hello", "name": "alice", "to": "bob", "epoch": "e1", "version": LINK_VERSION}
    assert expected.items() <= body.items()
    assert encode_frame(Ack("e", 1)) == struct.pack(">I", len(frame_to_bytes(Ack("e", 1)))) + (
        b'{"t":"ack","epoch":"e","seq":1}'
    )
    # UTF-8 on the wire, not \\u escapes.
    assert "\u00e9".encode() in frame_to_bytes(Chat("e", 1, 1, "\u00e9"))
    # An integer sent_at (another implementation) is read as a float.
    assert frame_from_bytes(
        raw({"t": "chat", "epoch": "e", "seq": 1, "base": 1, "text": "x", "sent_at": 5})
    ) == Chat("e", 1, 1, "x", 5.0)


def test_relay_frame_travels_as_a_msg_line() -> None:
    chat = Chat("e1", 1, 1, "hi")
    text = frame_to_relay_text(chat)
    # The peer sends it as "msg: bob #ch1:..."; the rendezvous parses it as any msg.
    line = format_client_event(Msg("bob", text))
    assert parse_client_line(line.decode().rstrip("\n")) == Msg("bob", text)
    # ... and bob receives "alice: #ch1:...".
    assert format_user_line("alice", text) == f"alice: {text}\n".encode()


def test_longest_message_fits_the_relay() -> None:
    # Worst case: every character takes 4 bytes of UTF-8, long epoch, big numbers.
    text = "\U0001f600" * MAX_TEXT_CHARS
    chat = Chat("f" * 64, 2**40, 2**40, text, 1732530000.123456)
    relay = frame_to_relay_text(chat)
    assert check_text(relay, MAX_RELAY_CHARS) == relay
    line = format_client_event(Msg("n" * 32, relay))
    assert len(line) <= MAX_LINE_BYTES
    assert len(format_user_line("n" * 32, relay)) <= MAX_LINE_BYTES
    assert len(encode_frame(chat)) <= MAX_FRAME_BYTES


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "not UTF-8 JSON"),
        (b"\xff", "not UTF-8 JSON"),
        (b"{", "not UTF-8 JSON"),
        (b"[" * 100_000, "not UTF-8 JSON"),  # deeper than Python's recursion limit
        (b"[]", "unknown type"),
        (b'"hello"', "unknown type"),
        (raw({}), "unknown type"),
        (raw({"t": "nope"}), "unknown type"),
        (raw({"t": []}), "unknown type"),
        (raw({"t": {"a": 1}}), "unknown type"),
        (raw({"t": "hello", "name": "a", "to": "b", "epoch": "e"}), "'version'"),
        (raw({"t": "hello", "name": "a b", "to": "b", "epoch": "e", "version": 1}), "user name"),
        (raw({"t": "hello", "name": "a", "to": "", "epoch": "e", "version": 1}), "user name"),
        (raw({"t": "hello", "name": "a", "to": "b", "epoch": 1, "version": 1}), "'epoch'"),
        (raw({"t": "chat", "epoch": "e", "seq": 1, "base": 1, "text": "x"}), "'sent_at'"),
        (raw({"t": "chat", "epoch": "e", "seq": 0, "base": 0, "text": "x", "sent_at": 0}), "seq"),
        (raw({"t": "chat", "epoch": "e", "seq": 2, "base": 3, "text": "x", "sent_at": 0}), "seq"),
        (raw({"t": "chat", "epoch": "e", "seq": 1, "base": 0, "text": "x", "sent_at": 0}), "seq"),
        (raw({"t": "chat", "epoch": "e", "seq": 1.5, "base": 1, "text": "x", "sent_at": 0}), "seq"),
        (
            raw({"t": "chat", "epoch": "e", "seq": True, "base": 1, "text": "x", "sent_at": 0}),
            "seq",
        ),
        (raw({"t": "chat", "epoch": "e", "seq": 1, "base": 1, "text": "", "sent_at": 0}), "Empty"),
        (
            raw({"t": "chat", "epoch": "e", "seq": 1, "base": 1, "text": "\x1b[2J", "sent_at": 0}),
            "Control characters",
        ),
        (
            raw({"t": "chat", "epoch": "e", "seq": 1, "base": 1, "text": "x" * 5000, "sent_at": 0}),
            "too long",
        ),
        (raw({"t": "ack", "epoch": "e"}), "'seq'"),
        (raw({"t": "bye", "reason": None}), "'reason'"),
        (raw({"t": "ping", "nonce": "1"}), "'nonce'"),
        (raw({"t": "pong"}), "'nonce'"),
        (b'{"t":"ping","nonce":' + b"9" * 5000 + b"}", "not UTF-8 JSON"),
    ],
)
def test_malformed_frames(data: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why.replace("[", r"\[")):
        frame_from_bytes(data)


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        RELAY_PREFIX + "!!!not base64",
        RELAY_PREFIX + "a",
        RELAY_PREFIX + base64.urlsafe_b64encode(b"[" * 3000).decode(),
        RELAY_PREFIX + base64.urlsafe_b64encode(b'{"t":"x"}').decode(),
    ],
)
def test_malformed_relay_text(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        relay_text_to_frame(text)
    assert is_relay_frame(text) == text.startswith(RELAY_PREFIX)


def test_oversized_frames() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(Bye("x" * MAX_FRAME_BYTES))
    # The decoder refuses as soon as it sees the length, before the body arrives.
    dec = FrameDecoder()
    dec.receive_data(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(RemoteProtocolError, match="over the"):
        dec.next_frame()
    # A frame of exactly the limit is accepted.
    reason = "x" * (MAX_FRAME_BYTES - len(frame_to_bytes(Bye(""))))
    frame = Bye(reason)
    assert len(frame_to_bytes(frame)) == MAX_FRAME_BYTES
    dec = FrameDecoder()
    dec.receive_data(encode_frame(frame))
    assert dec.next_frame() == frame


def test_decoder_waits_for_whole_frames() -> None:
    data = encode_frame(Ping(1)) + encode_frame(Pong(1))
    dec = FrameDecoder()
    for b in data[:-1]:
        dec.receive_data(bytes([b]))
    assert decode_all(dec) == [Ping(1)]
    assert dec.pending_bytes == len(encode_frame(Pong(1))) - 1
    dec.receive_data(data[-1:])
    assert decode_all(dec) == [Pong(1)]


names = st.from_regex(NAME_RE, fullmatch=True)
epochs = st.text(max_size=40)
typed = st.text(
    st.characters(exclude_categories=("Cs", "Cc")) | st.just("\t"), min_size=1, max_size=80
).filter(str.strip)
seqs = st.integers(1, 2**53)
frames = st.one_of(
    st.builds(Hello, names, names, epochs, st.integers(0, 100)),
    st.builds(
        lambda e, s, b, t, at: Chat(e, s, min(b, s), t, at),
        epochs,
        seqs,
        seqs,
        typed,
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.builds(Ack, epochs, st.integers(0, 2**53)),
    st.builds(Bye, st.text(max_size=80)),
    st.builds(Ping, st.integers(-(2**63), 2**63)),
    st.builds(Pong, st.integers(-(2**63), 2**63)),
)


@given(st.lists(frames, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_stream_encoding_round_trips_under_any_chunking(sent: list[Frame], cuts: list[int]) -> None:
    data = b"".join(encode_frame(f) for f in sent)
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    dec = FrameDecoder()
    got: list[Frame] = []
    for a, b in itertools.pairwise(bounds):
        dec.receive_data(data[a:b])
        got += decode_all(dec)
    assert got == sent
    assert dec.pending_bytes == 0


@given(frames)
def test_relay_encoding_round_trips(frame: Frame) -> None:
    assert relay_text_to_frame(frame_to_relay_text(frame)) == frame


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
frame_like = st.builds(
    lambda t, fields: {"t": t, **fields},
    st.sampled_from(["hello", "chat", "ack", "bye", "ping", "pong", "other"]) | json_values,
    st.dictionaries(
        st.sampled_from(["name", "to", "epoch", "version", "seq", "base", "text", "sent_at"])
        | st.text(max_size=5),
        json_values,
    ),
)


@given(st.binary(max_size=300) | frame_like.map(raw))
def test_malformed_bytes_raise_only_remote_protocol_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        frame_from_bytes(data)
    dec = FrameDecoder()
    dec.receive_data(struct.pack(">I", len(data)) + data + data)
    with contextlib.suppress(RemoteProtocolError):
        decode_all(dec)
    with contextlib.suppress(RemoteProtocolError):
        relay_text_to_frame(RELAY_PREFIX + base64.urlsafe_b64encode(data).decode())


@given(st.text())
def test_arbitrary_relay_text_raises_only_remote_protocol_error(text: str) -> None:
    for candidate in (text, RELAY_PREFIX + text):
        with contextlib.suppress(RemoteProtocolError):
            relay_text_to_frame(candidate)


# The fast encoders/decoders against the straightforward reference ones: the
# same bytes for any frame (even with fields of unusual types: ints for floats,
# bools, NaN, infinities, str and int subclasses), and the same frame or the
# same error for any decoded dict.
class _Str(str):
    pass


class _Int(int):
    pass


odd_values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.text(max_size=20),
    st.text(max_size=5).map(_Str),
    st.integers(-5, 5).map(_Int),
)
any_frames = st.one_of(
    frames,
    st.builds(Chat, odd_values, odd_values, odd_values, odd_values, odd_values),
    st.builds(Ack, odd_values, odd_values),
    st.builds(Ping, odd_values),
    st.builds(Pong, odd_values),
    st.builds(Bye, odd_values),
    st.builds(Hello, odd_values, odd_values, odd_values, odd_values, odd_values),
)


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return ("ok", repr(fn()))
    except Exception as e:  # the exact error is what is compared
        return ("error", type(e), str(e))


@settings(max_examples=500)
@given(any_frames)
def test_fast_encoders_write_the_reference_bytes(frame: Frame) -> None:
    assert _outcome(lambda: frame_to_bytes(frame)) == _outcome(
        lambda: link._reference_frame_to_bytes(frame)
    )


@settings(max_examples=500)
@given(
    st.builds(
        lambda t, fields: {"t": t, **fields},
        st.sampled_from(["chat", "ack", "ping", "pong"]),
        st.dictionaries(
            st.sampled_from(["epoch", "seq", "base", "text", "sent_at", "nonce"]),
            odd_values | st.none() | st.just("x"),
        ),
    )
    | frame_like
    | st.builds(Chat, epochs, seqs, seqs, typed, st.floats()).map(
        lambda c: json.loads(frame_to_bytes(c))
    )
)
def test_fast_decoders_agree_with_the_reference(d: dict) -> None:
    def fast() -> object:
        return frame_from_bytes(json.dumps(d, ensure_ascii=False).encode())

    assert _outcome(fast) == _outcome(lambda: link._frame_from_dict(json.loads(json.dumps(d))))


@pytest.mark.parametrize(
    "data",
    [
        b' {"t":"ping","nonce":1}',
        b'{"t":"ping","nonce":1}\n',
        '\ufeff{"t":"ping","nonce":1}'.encode(),
        b'{"t":"ping","nonce":1}{}',
        b'{"t":"ping","nonce":NaN}',
        b'{"t":"chat","epoch":"e","seq":1,"base":1,"text":"x","sent_at":NaN}',
    ],
)
def test_json_edge_cases_decode_as_json_loads_does(data: bytes) -> None:
    def reference() -> object:
        try:
            d = json.loads(data.decode())
        except ValueError:
            raise RemoteProtocolError("Malformed link frame: not UTF-8 JSON") from None
        return link._frame_from_dict(d)

    assert _outcome(lambda: frame_from_bytes(data)) == _outcome(reference)


# --------------------------------------------------------------------------
# Conversation: examples
# --------------------------------------------------------------------------


def pair() -> tuple[Conversation, Conversation]:
    return Conversation("alice", "bob", "A1"), Conversation("bob", "alice", "B1")


def texts_of(chats: list[Chat]) -> list[str]:
    return [c.text for c in chats]


def test_in_order_delivery_and_acks() -> None:
    a, b = pair()
    c1, c2 = a.send_text("one", now=1.0), a.send_text("two")
    assert (c1.seq, c1.base, c1.sent_at) == (1, 1, 1.0)
    assert (c2.seq, c2.base) == (2, 1)  # 1 is still unacknowledged
    r1 = b.receive_chat(c1)
    assert texts_of(r1.deliver) == ["one"] and r1.ack == Ack("A1", 1) and not r1.duplicate
    assert a.receive_ack(r1.ack) == [c1]
    assert a.send_text("three").base == 2
    r2 = b.receive_chat(c2)
    assert texts_of(r2.deliver) == ["two"] and r2.ack == Ack("A1", 2)
    assert a.receive_ack(r2.ack) == [c2]
    assert list(a.unacked) == [3]


def test_send_text_refuses_what_the_rendezvous_would() -> None:
    a, _ = pair()
    for bad in ("", "   ", "x" * (MAX_TEXT_CHARS + 1), "esc\x1b"):
        with pytest.raises(RemoteProtocolError):
            a.send_text(bad)
    assert a.next_seq == 1 and not a.unacked


def test_duplicates_are_dropped_and_acknowledged_again() -> None:
    a, b = pair()
    c1 = a.send_text("one")
    assert texts_of(b.receive_chat(c1).deliver) == ["one"]
    again = b.receive_chat(c1)
    assert again.deliver == [] and again.duplicate
    assert again.ack == Ack("A1", 1)  # so a lost ack is repaired


def test_out_of_order_frames_are_buffered_then_delivered() -> None:
    a, b = pair()
    c1, c2, c3 = (a.send_text(t) for t in ("one", "two", "three"))
    r = b.receive_chat(c3)
    assert r.deliver == [] and r.ack == Ack("A1", 0) and not r.duplicate
    assert b.receive_chat(c3).duplicate  # a copy of a buffered frame
    r = b.receive_chat(c2)
    assert r.deliver == [] and r.ack == Ack("A1", 0)
    r = b.receive_chat(c1)
    assert texts_of(r.deliver) == ["one", "two", "three"] and r.ack == Ack("A1", 3)


def test_acks_of_another_epoch_or_old_acks_change_nothing() -> None:
    a, _ = pair()
    a.send_text("one")
    assert a.receive_ack(Ack("someone else", 5)) == []
    assert a.receive_ack(Ack("A1", 0)) == []
    assert list(a.unacked) == [1]


def test_resend_after_path_change_delivers_each_exactly_once() -> None:
    a, b = pair()
    sent = [a.send_text(t) for t in ("one", "two", "three")]
    # The old path carried only the first frame, and its ack was lost.
    assert texts_of(b.receive_chat(sent[0]).deliver) == ["one"]
    resent = a.to_resend()
    assert [c.seq for c in resent] == [1, 2, 3]
    shown: list[str] = []
    for chat in resent:
        r = b.receive_chat(chat)
        shown += texts_of(r.deliver)
        a.receive_ack(r.ack)
    assert shown == ["two", "three"]
    assert a.unacked == {} and a.to_resend() == []


def test_resent_frames_carry_the_current_base() -> None:
    a, _ = pair()
    a.send_text("one")
    a.send_text("two")
    a.send_text("three")
    a.receive_ack(Ack("A1", 1))
    assert [(c.seq, c.base) for c in a.to_resend()] == [(2, 2), (3, 2)]


def test_receiver_restart_starts_at_base() -> None:
    a, b = pair()
    c1, c2 = a.send_text("one"), a.send_text("two")
    a.receive_ack(b.receive_chat(c1).ack)  # "one" shown and acknowledged
    b.receive_chat(c2)  # "two" shown, but this ack is lost
    restarted = Conversation("bob", "alice", "B2")
    shown: list[str] = []
    for chat in a.to_resend():
        r = restarted.receive_chat(chat)
        shown += texts_of(r.deliver)
        a.receive_ack(r.ack)
    # "one" was acknowledged, so the restarted side does not wait for it;
    # "two" was never acknowledged, so it is shown again (at least once).
    assert shown == ["two"] and a.unacked == {}


def test_receiver_restart_is_not_stuck_by_a_frame_sent_before_an_ack() -> None:
    a, b = pair()
    c1, c2 = a.send_text("one"), a.send_text("two")  # c2 says base=1
    a.receive_ack(b.receive_chat(c1).ack)
    restarted = Conversation("bob", "alice", "B2")
    shown: list[str] = []
    # The stale c2 (base=1) reaches the restarted side first: it waits for 1,
    # which the sender no longer holds; a fresh frame or a resend says base=2.
    for chat in [c2, a.send_text("three"), *a.to_resend()]:
        r = restarted.receive_chat(chat)
        shown += texts_of(r.deliver)
        a.receive_ack(r.ack)
    assert shown == ["two", "three"] and a.unacked == {}


def test_new_epoch_of_the_sender_starts_afresh() -> None:
    a, b = pair()
    for t in ("one", "two"):
        a.receive_ack(b.receive_chat(a.send_text(t)).ack)
    a2 = Conversation("alice", "bob", "A2")  # alice's program restarted
    r = b.receive_chat(a2.send_text("after restart"))
    assert texts_of(r.deliver) == ["after restart"] and r.ack == Ack("A2", 1)
    assert a2.receive_ack(r.ack) and not a2.unacked
    # An ack for the old epoch means nothing to the new sender.
    assert a2.receive_ack(Ack("A1", 99)) == []


# --------------------------------------------------------------------------
# Conversation: two sides joined by a lossy, duplicating, reordering link
# --------------------------------------------------------------------------


@dataclass
class LossyLink:
    """Alice sends to Bob over a link that the test drives one step at a time."""

    alice: Conversation = field(default_factory=lambda: Conversation("alice", "bob", "A"))
    bob: Conversation = field(default_factory=lambda: Conversation("bob", "alice", "B0"))
    to_bob: list[Chat] = field(default_factory=list)
    to_alice: list[Ack] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    # What each run of Bob's program showed, in order.
    shown: list[list[Chat]] = field(default_factory=lambda: [[]])

    def step(self, op: str, i: int) -> None:
        if op == "send":
            text = f"m{len(self.sent)}"
            self.sent.append(text)
            self.to_bob.append(self.alice.send_text(text))
        elif op == "resend":  # the path changed
            self.to_bob += self.alice.to_resend()
        elif op == "restart_bob":
            self.bob = Conversation("bob", "alice", f"B{len(self.shown)}")
            self.shown.append([])
        elif self.to_bob and op in ("deliver", "duplicate", "drop"):
            i %= len(self.to_bob)
            if op == "deliver":  # any frame in flight, so frames overtake each other
                self.deliver(self.to_bob.pop(i))
            elif op == "duplicate":
                self.to_bob.append(self.to_bob[i])
            else:
                del self.to_bob[i]
        elif self.to_alice and op in ("ack", "drop_ack"):
            ack = self.to_alice.pop(i % len(self.to_alice))
            if op == "ack":
                self.alice.receive_ack(ack)

    def deliver(self, chat: Chat) -> None:
        r = self.bob.receive_chat(chat)
        self.shown[-1] += r.deliver
        self.to_alice.append(r.ack)

    def settle(self) -> None:
        """The link heals: deliver everything, then resend until all is acknowledged."""
        for _ in range(3):
            while self.to_bob:
                self.deliver(self.to_bob.pop(0))
            while self.to_alice:
                self.alice.receive_ack(self.to_alice.pop(0))
            if not self.alice.unacked:
                return
            self.to_bob += self.alice.to_resend()
        raise AssertionError(f"still unacknowledged after the link healed: {self.alice.unacked}")


LINK_OPS = ["send", "deliver", "duplicate", "drop", "resend", "ack", "drop_ack"]
# Small indices pick the oldest frames in flight, large ones any frame.
link_op = st.tuples(st.sampled_from(LINK_OPS), st.integers(0, 3) | st.integers(0, 1000))
link_ops = st.lists(link_op, max_size=80)
# Two or three runs of Bob's program, each seeing a short stretch of traffic:
# short stretches find the interleavings around a restart far more often.
runs_of_bob = st.lists(st.lists(link_op, max_size=12), min_size=2, max_size=3).map(
    lambda runs: [op for run in runs for op in [("restart_bob", 0), *run]][1:]
)


@settings(max_examples=300)
@given(link_ops)
def test_every_text_is_delivered_exactly_once_and_in_order(ops: list[tuple[str, int]]) -> None:
    link = LossyLink()
    for op, i in ops:
        link.step(op, i)
    link.settle()
    assert texts_of(link.shown[0]) == link.sent


@settings(max_examples=500)
@given(runs_of_bob)
def test_a_restarting_receiver_shows_everything_and_never_gets_stuck(
    ops: list[tuple[str, int]],
) -> None:
    link = LossyLink()
    for op, i in ops:
        link.step(op, i)
    link.settle()  # nothing stays unacknowledged forever
    shown_anywhere = {c.text for run in link.shown for c in run}
    assert shown_anywhere == set(link.sent)  # at least once
    for run in link.shown:  # each run of Bob's program: in order, no repeats
        seqs = [c.seq for c in run]
        assert seqs == sorted(set(seqs))


# --------------------------------------------------------------------------
# Hello.via and the path word (issue 3)
# --------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIAS)
def test_hello_via_round_trips_on_both_encodings(via: str) -> None:
    hello = Hello("alice", "bob", "e1", via=via)
    assert json.loads(frame_to_bytes(hello))["via"] == via
    assert frame_from_bytes(frame_to_bytes(hello)) == hello
    assert relay_text_to_frame(frame_to_relay_text(hello)) == hello
    dec = FrameDecoder()
    dec.receive_data(encode_frame(hello))
    assert decode_all(dec) == [hello]


def test_a_hello_without_via_was_dialled() -> None:
    """Peers from before issue 3 send no ``via``: they can only have dialled."""
    old = raw({"t": "hello", "name": "alice", "to": "bob", "epoch": "e", "version": 1})
    assert frame_from_bytes(old) == Hello("alice", "bob", "e", via="dial")


@pytest.mark.parametrize("via", ["", "DIAL", "relay", "punched", 1, None, True, ["dial"], {}])
def test_an_unknown_via_is_refused(via: object) -> None:
    data = raw({"t": "hello", "name": "alice", "to": "bob", "epoch": "e", "version": 1, "via": via})
    with pytest.raises(RemoteProtocolError, match="unknown via"):
        frame_from_bytes(data)


@pytest.mark.parametrize(
    ("mine", "theirs", "path"),
    [
        ("dial", "accept", "direct"),  # a plain dial to a listener
        ("accept", "dial", "direct"),
        ("punch", "accept", "direct"),  # a punch that reached a listener: reachable anyway
        ("accept", "punch", "direct"),
        ("punch", "punch", "punched"),  # TCP simultaneous open through two NATs
        ("dial", "punch", "punched"),
        ("punch", "dial", "punched"),
        ("dial", "dial", "punched"),  # nobody accepted: a simultaneous open too
        ("accept", "accept", "direct"),  # cannot happen; named for completeness
    ],
)
def test_path_of(mine: str, theirs: str, path: str) -> None:
    assert path_of(mine, theirs) == path


@given(st.sampled_from(VIAS), st.sampled_from(VIAS))
def test_both_ends_agree_on_the_path_word(mine: str, theirs: str) -> None:
    assert path_of(mine, theirs) == path_of(theirs, mine)
    assert path_of(mine, theirs) in ("direct", "punched")


@given(names, names, epochs, st.integers(0, 100), st.sampled_from(VIAS))
def test_hellos_with_any_via_round_trip(
    name: str, to: str, epoch: str, version: int, via: str
) -> None:
    hello = Hello(name, to, epoch, version, via)
    assert frame_from_bytes(frame_to_bytes(hello)) == hello
    assert relay_text_to_frame(frame_to_relay_text(hello)) == hello
