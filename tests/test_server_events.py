"""Typed server events (chathack/server_events.py): what the rendezvous
formats, the peer parses back to the same event; a malformed payload of a
known flag raises RemoteProtocolError and nothing else; an unknown flag is a
Notice."""

from __future__ import annotations

from contextlib import suppress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chathack.errors import RemoteProtocolError
from chathack.protocol import MailItem, MailKey, PeerAddress, Refusal, UserState, parse_server_line
from chathack.replies import Failed
from chathack.server_events import (
    CallFrom,
    ConversationEnded,
    Failure,
    MailIn,
    MailReceipt,
    MailRefused,
    MailStored,
    Notice,
    PartnerGone,
    PasswdResult,
    PeerInfo,
    PunchNow,
    Seen,
    ServerLine,
    TokenIssued,
    UsersInfo,
    format_server_event,
    parse_server_event,
)

names = st.from_regex(r"[A-Za-z0-9_.-]{1,32}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
hosts = st.sampled_from(["192.0.2.1", "198.51.100.7", "203.0.113.9", "2001:db8::1"])
ports = st.integers(1, 65535)
words = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1).map(str.strip)
keys = st.builds(MailKey, names, ids)
stamps = st.integers(0, 10**11)
tokens = st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True)

events = st.one_of(
    st.builds(PeerInfo, st.builds(PeerAddress, names, hosts, ports, st.just(()))),
    st.builds(CallFrom, st.builds(PeerAddress, names, hosts, ports, st.just(()))),
    st.builds(PunchNow, names, hosts, ports),
    st.builds(
        UsersInfo,
        st.lists(st.builds(UserState, names, st.booleans()), max_size=5).map(tuple),
        st.integers(0, 10**6),
    ),
    names.map(lambda n: PartnerGone(n, f"{n} went offline")),
    names.map(lambda n: ConversationEnded(n, f"{n} ended the conversation")),
    st.builds(MailIn, st.builds(MailItem, names, ids, stamps, words.filter(bool))),
    st.builds(MailStored, keys),
    st.builds(MailReceipt, st.sampled_from(["DELIVERED", "READ", "EXPIRED"]), keys),
    st.builds(MailRefused, st.builds(Refusal, keys, st.sampled_from(["full", "unknown"]), words)),
    st.builds(
        Failure,
        st.builds(
            Failed,
            st.sampled_from(["connect", "msg", "punch"]),
            names,
            st.sampled_from(["unknown", "offline", "self", "not-peer"]),
            words,
        ),
    ),
    st.builds(PasswdResult, st.just(True), st.just("")),
    words.filter(bool).map(lambda r: PasswdResult(False, r)),
    st.builds(Seen, hosts, ports),
    st.builds(
        TokenIssued, st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True), st.integers(0, 10**6)
    ),
)


@given(events)
def test_what_the_rendezvous_formats_the_peer_reads_back(event: object) -> None:
    wire = format_server_event(event).decode("utf-8")  # type: ignore[arg-type]
    assert wire.endswith("\n") and wire.count("\n") == 1
    line = parse_server_line(wire.rstrip("\n"))
    assert isinstance(line, ServerLine)
    assert parse_server_event(line) == event


@given(
    st.sampled_from(
        [
            "PEER",
            "CALL",
            "PUNCH",
            "GONE",
            "END",
            "MAIL",
            "STORED",
            "READ",
            "REFUSED",
            "FAILED",
            "PASSWD",
            "SEEN",
            "TOKEN",
            "USERS",
        ]
    ),
    st.text(),
)
def test_a_malformed_payload_raises_remote_protocol_error_only(flag: str, text: str) -> None:
    with suppress(RemoteProtocolError):
        parse_server_event(ServerLine(flag, text))


def test_an_unknown_flag_is_a_notice() -> None:
    assert parse_server_event(ServerLine("NEWTHING", "x y")) == Notice("NEWTHING", "x y")


@pytest.mark.parametrize("text", ["", "done", "changed!", "Unchanged x"])
def test_passwd_has_exactly_two_outcomes(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_server_event(ServerLine("PASSWD", text))
