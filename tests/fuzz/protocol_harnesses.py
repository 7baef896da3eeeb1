"""Harnesses for the rendezvous line grammar (:mod:`chathack.protocol`).

Their input is a raw byte stream, exactly as it arrives from a socket, so a
corpus file is readable protocol text.
"""

from __future__ import annotations

from chathack.errors import RemoteProtocolError
from chathack.prekeys import format_bundle, parse_bundle
from chathack.protocol import (
    FLAG_RE,
    NAME_RE,
    Command,
    Connect,
    IdentityKey,
    Lan,
    ListenPort,
    Mail,
    MailAck,
    MailRead,
    Msg,
    Password,
    Punch,
    ReceiptAck,
    Resume,
    ServerLine,
    Text,
    UserLine,
    Username,
    format_client_event,
    format_endpoint,
    format_mail,
    format_mail_keys,
    format_peer_address,
    format_refusal,
    format_server_line,
    format_user_line,
    format_users,
    has_controls,
    parse_client_line,
    parse_endpoint,
    parse_mail,
    parse_mail_key,
    parse_peer_address,
    parse_refusal,
    parse_server_line,
    parse_users,
)
from chathack.text import is_safe, neutralise
from peer.core.candidates import candidates_of
from tests.fuzz.contract import check_error, check_wire_line, lines_of

CLIENT_EVENTS = (
    Username,
    Resume,
    Password,
    ListenPort,
    Lan,
    IdentityKey,
    Connect,
    Punch,
    Msg,
    Mail,
    MailAck,
    MailRead,
    ReceiptAck,
    Command,
    Text,
)


def client_line(data: bytes) -> None:
    """Bytes a client sends -> lines -> events, and back.

    Contract: each line parses to a client event or raises
    :class:`RemoteProtocolError`; a parsed event formats without raising into
    exactly one line, which parses back to the same event.
    """
    for item in lines_of(data):
        if isinstance(item, RemoteProtocolError):
            continue
        try:
            event = parse_client_line(item)
        except RemoteProtocolError as e:
            check_error(e)
            continue
        assert isinstance(event, CLIENT_EVENTS), f"not a client event: {event!r}"
        line = check_wire_line(format_client_event(event))
        again = parse_client_line(line)
        assert again == event, f"round trip changed {event!r} into {again!r}"


def server_line(data: bytes) -> None:
    """Bytes the rendezvous sends -> lines -> server events and their payloads.

    Contract: each line parses to a :class:`ServerLine` or :class:`UserLine`
    or raises :class:`RemoteProtocolError`. Formatting the event again never
    raises, gives one line, and parses back to the same event with its text
    neutralised (the formatter escapes control and format characters, so the
    text read back is safe for a terminal). The relay's formatter is only
    given text :func:`check_text` passed: for other text it promises one
    line. The payload parsers of the flags that carry one (USERS, PEER,
    CALL, MAIL, receipts, REFUSED, SEEN, PUNCH, PREKEY) return a value or raise
    :class:`RemoteProtocolError`, and their formatters round-trip what they
    parsed.
    """
    for item in lines_of(data):
        if isinstance(item, RemoteProtocolError):
            continue
        try:
            event = parse_server_line(item)
        except RemoteProtocolError as e:
            check_error(e)
            continue
        match event:
            case ServerLine(flag, text):
                assert FLAG_RE.fullmatch(flag), f"bad flag parsed: {flag!r}"
                _server_payload(flag, text)
                expected: ServerLine | UserLine = ServerLine(flag, neutralise(text))
                again = parse_server_line(check_wire_line(format_server_line(flag, text)))
            case UserLine(origin, text):
                assert NAME_RE.fullmatch(origin), f"bad origin parsed: {origin!r}"
                again = parse_server_line(check_wire_line(format_user_line(origin, text)))
                if has_controls(text):
                    # The relay's formatter gets only text check_text passed; for
                    # anything else it promises one line, not an escaped text.
                    assert isinstance(again, UserLine) and again.origin == origin
                    continue
                expected = UserLine(origin, neutralise(text))
            case _:
                raise AssertionError(f"not a server event: {event!r}")
        assert again == expected, f"round trip changed {expected!r} into {again!r}"
        assert is_safe(again.text), f"formatted text is not neutralised: {again.text[:80]!r}"


def _server_payload(flag: str, text: str) -> None:
    try:
        match flag:
            case "USERS":
                users = parse_users(text)  # junk items are skipped, never raised
                assert all(NAME_RE.fullmatch(u.name) for u in users)
                assert parse_users(format_users(users)) == users
            case "PEER" | "CALL":
                addr = parse_peer_address(text)
                assert parse_peer_address(format_peer_address(addr)) == addr
                candidates_of(addr)  # what the peer dials: must not raise either
            case "MAIL":
                item = parse_mail(text)
                assert parse_mail(format_mail(item)) == item
            case "STORED" | "DELIVERED" | "READ" | "EXPIRED":
                key = parse_mail_key(text)
                assert parse_mail_key(format_mail_keys([key])) == key
            case "REFUSED":
                refusal = parse_refusal(text)
                assert parse_refusal(format_refusal(refusal)) == refusal
            case "SEEN":
                _endpoint(text)
            case "PUNCH":
                _endpoint(text.partition(" ")[2])
            case "PREKEY":
                bundle = parse_bundle(text)
                assert parse_bundle(format_bundle(bundle)) == bundle
    except RemoteProtocolError as e:
        check_error(e)


def _endpoint(text: str) -> None:
    endpoint = parse_endpoint(text)
    if endpoint is not None:
        host, port = endpoint
        assert 1 <= port <= 65535
        again = parse_endpoint(format_endpoint(host, port))
        assert again == endpoint, f"endpoint round trip changed {endpoint!r} into {again!r}"
