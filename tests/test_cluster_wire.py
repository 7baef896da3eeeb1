"""The messages between instances (rendezvous/cluster_wire.py): what one
instance writes, the others read back unchanged; what no instance would
write is refused with RemoteProtocolError (and only that)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chathack.errors import RemoteProtocolError
from rendezvous.cluster_wire import (
    Call,
    Deliver,
    Ended,
    Gone,
    Here,
    Left,
    PresenceRecord,
    PunchFrom,
    Takeover,
    decode_batch,
    decode_presence,
    decode_record,
    encode_batch,
    encode_presence,
    encode_record,
)

names = st.from_regex(r"[A-Za-z0-9_.-]{1,32}", fullmatch=True)
instances = st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)
epochs = st.integers(1, 2**62)
ports = st.integers(0, 65535)
lines = st.builds(
    lambda who, text: f"{who}: {text}\n",
    names,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),
)
ops = st.one_of(
    st.builds(Deliver, names, lines, st.none() | names),
    st.builds(Call, names, names, names.map(lambda n: f"Servidor[CALL]: {n} -\n")),
    st.builds(PunchFrom, names, names, st.sampled_from(["203.0.113.5", "2001:db8::1"]), ports),
    st.builds(Ended, names, names),
    st.builds(Gone, names, names),
    st.builds(
        Takeover,
        names,
        epochs,
        st.lists(names.map(str.lower), max_size=5).map(tuple),
        st.lists(names.map(str.lower), max_size=5).map(tuple),
        st.none() | names,
    ),
)
records = st.builds(
    PresenceRecord,
    names,
    instances,
    epochs,
    st.sampled_from(["198.51.100.7", "2001:db8::9"]),
    st.none() | ports,
    st.none() | ports,
    st.none() | st.lists(st.sampled_from(["192.0.2.1", "[2001:db8::1]"]), max_size=3).map(tuple),
    st.none() | st.just("mSOZnc9v2fqURD+yaLj6K3Xkz0JoPK4vP6hsu1dxMhM="),
)


@given(st.lists(ops, max_size=20))
def test_a_batch_reads_back_as_written(batch: list) -> None:
    assert decode_batch(encode_batch(batch)) == batch


@given(records)
def test_presence_reads_back_as_written(record: PresenceRecord) -> None:
    assert decode_record(encode_record(record)) == record
    assert decode_presence(encode_presence(Here(record))) == Here(record)
    left = Left(record.name, record.instance, record.epoch)
    assert decode_presence(encode_presence(left)) == left


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_anything_else_is_refused_with_the_protocol_error(data: bytes | str) -> None:
    for decode in (decode_batch, decode_presence, decode_record):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


@pytest.mark.parametrize(
    "line",
    [
        "bob: \x1b[2Jcleared\n",  # a terminal escape no server line carries
        "bob: two\nlines\n",
        "bob: no newline",
        "bob: \u202eevil\n",  # a bidi override, neutralised by every server
        "S%rvidor[CALL]: carol -\n",  # no server line: the fuzzer's find
        "Servidor[]: nothing\n",
    ],
)
def test_a_line_no_instance_would_write_never_reaches_a_user(line: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_batch(encode_batch([Deliver("alice", line, None)]))


def test_a_call_carries_a_call_line_and_nothing_else() -> None:
    with pytest.raises(RemoteProtocolError):
        decode_batch(encode_batch([Call("bob", "carol", "carol: hi\n")]))
    ok = Call("bob", "carol", "Servidor[CALL]: carol -\n")
    assert decode_batch(encode_batch([ok])) == [ok]
