"""Sans-IO tests of the rendezvous line grammar (:mod:`chathack.protocol`).

Synchronous: bytes in, events out. The hypothesis properties at the end are
the main guarantee; the examples above them document the grammar.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chathack.errors import RemoteProtocolError
from chathack.protocol import (
    CLIENT_KEYWORDS,
    MAX_LAN_ADDRS,
    MAX_LINE_BYTES,
    MAX_RELAY_CHARS,
    MAX_TEXT_CHARS,
    NAME_RE,
    SERVER_ORIGIN,
    ClientEvent,
    Command,
    Connect,
    Lan,
    LineBuffer,
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
    check_name,
    check_text,
    format_client_event,
    format_peer_address,
    format_server_line,
    format_user_line,
    format_users,
    has_controls,
    parse_client_line,
    parse_peer_address,
    parse_server_line,
    parse_users,
)
from chathack.text import neutralise

#: Every keyword a line may start with, from the grammar itself (a list kept
#: here went stale when the mailbox added ack:, read:, mail: and receipt:).
KEYWORDS = CLIENT_KEYWORDS


def drain(buf: LineBuffer) -> list[tuple[str, str]]:
    """Every line (or error) the buffer can produce now, as ``(kind, value)``."""
    out: list[tuple[str, str]] = []
    while True:
        try:
            line = buf.next_line()
        except RemoteProtocolError as e:
            out.append(("error", str(e)))
            continue
        if line is None:
            return out
        out.append(("line", line))


def feed(chunks: list[bytes], max_bytes: int = MAX_LINE_BYTES) -> list[tuple[str, str]]:
    buf = LineBuffer(max_bytes)
    out: list[tuple[str, str]] = []
    for chunk in chunks:
        if chunk:
            buf.receive_data(chunk)
            out += drain(buf)
    buf.receive_data(b"")
    out += drain(buf)
    return out


# --------------------------------------------------------------------------
# LineBuffer
# --------------------------------------------------------------------------


def test_lines_are_split_on_newline() -> None:
    assert feed([b"one\ntwo\n\nthree\n"]) == [
        ("line", "one"),
        ("line", "two"),
        ("line", ""),
        ("line", "three"),
    ]


def test_crlf_is_accepted_and_a_lone_cr_is_kept() -> None:
    assert feed([b"one\r\ntwo\n"]) == [("line", "one"), ("line", "two")]
    assert feed([b"a\rb\r\r\n"]) == [("line", "a\rb\r")]


def test_partial_line_waits_for_the_rest() -> None:
    buf = LineBuffer()
    buf.receive_data(b"hel")
    assert buf.next_line() is None
    buf.receive_data(b"lo\r")
    assert buf.next_line() is None
    buf.receive_data(b"\nwor")
    assert buf.next_line() == "hello"
    assert buf.next_line() is None
    buf.receive_data(b"ld\n")
    assert buf.next_line() == "world"


def test_multibyte_character_split_across_reads() -> None:
    data = "caf\u00e9 \U0001f600\n".encode()
    assert feed([data[:4], data[4:9], data[9:]]) == [("line", "caf\u00e9 \U0001f600")]


def test_line_at_the_limit_passes_one_byte_more_does_not() -> None:
    # The limit counts the newline (and the \r before it).
    assert feed([b"x" * 9 + b"\n"], max_bytes=10) == [("line", "x" * 9)]
    assert feed([b"x" * 8 + b"\r\n"], max_bytes=10) == [("line", "x" * 8)]
    out = feed([b"x" * 10 + b"\nok\n"], max_bytes=10)
    assert [k for k, _ in out] == ["error", "line"]
    assert "Line too long" in out[0][1] and "10 bytes" in out[0][1]
    assert out[1] == ("line", "ok")


def test_too_long_line_is_reported_once_then_discarded_until_newline() -> None:
    buf = LineBuffer(max_bytes=10)
    buf.receive_data(b"y" * 25)
    with pytest.raises(RemoteProtocolError, match="Line too long"):
        buf.next_line()
    # The rest of the long line is skipped silently, however it arrives.
    buf.receive_data(b"y" * 100)
    assert buf.next_line() is None
    buf.receive_data(b"yyy\nafter\n")
    assert buf.next_line() == "after"
    assert buf.next_line() is None


def test_invalid_utf8_is_reported_and_the_next_line_is_fine() -> None:
    out = feed([b"\xff\xfe bad\n", b"good\n", b"\xc3\n", b"caf\xc3\xa9\n"])
    assert out[0][0] == "error" and "UTF-8" in out[0][1]
    assert out[1] == ("line", "good")
    assert out[2][0] == "error"
    assert out[3] == ("line", "caf\u00e9")


def test_eof_drops_an_unterminated_fragment() -> None:
    buf = LineBuffer()
    buf.receive_data(b"done\nhalf a li")
    buf.receive_data(b"")
    assert buf.at_eof
    assert buf.next_line() == "done"
    assert buf.next_line() is None
    assert buf.next_line() is None


def test_default_limit_is_the_protocol_limit() -> None:
    assert LineBuffer().max_bytes == MAX_LINE_BYTES


# --------------------------------------------------------------------------
# Client lines
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("username: alice", Username("alice")),
        ("username:alice", Username("alice")),
        ("username:   Bob_1.x-y  ", Username("Bob_1.x-y")),
        ("password: s3cret with spaces", Password("s3cret with spaces")),
        ("password:  padded  ", Password("padded")),
        ("port: 4000", ListenPort(4000)),
        ("port: 1", ListenPort(1)),
        ("port: 65535", ListenPort(65535)),
        ("connect: bob", Connect("bob")),
        ("msg: bob hello there", Msg("bob", "hello there")),
        ("msg: bob   spaced out  ", Msg("bob", "spaced out")),
        ("msg: bob a: b", Msg("bob", "a: b")),
        ("::users", Command("users")),
        ("::USERS", Command("users")),
        ("::end bob", Command("end", "bob")),
        (":: end   bob  ", Command("end", "bob")),
        ("::quit", Command("quit")),
        ("::help", Command("help")),
        ("::whatever with args", Command("whatever", "with args")),
        ("hello bob", Text("hello bob")),
        (
            "  leading and trailing spaces are kept  ",
            Text("  leading and trailing spaces are kept  "),
        ),
        ("tab\tinside", Text("tab\tinside")),
        ("note: not a keyword", Text("note: not a keyword")),
        ("Username: keywords are lower-case", Text("Username: keywords are lower-case")),
        ("caf\u00e9 \U0001f600", Text("caf\u00e9 \U0001f600")),
    ],
)
def test_parse_client_line(line: str, event: ClientEvent) -> None:
    assert parse_client_line(line) == event


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("username:", "username: NAME"),
        ("username:   ", "username: NAME"),
        ("username: two words", "Invalid user name"),
        ("username: bad/name", "Invalid user name"),
        ("username: " + "a" * 33, "Invalid user name"),
        ("username: Servidor", "reserved"),
        ("username: SERVIDOR", "reserved"),
        ("password:", "password: SECRET"),
        ("port:", "port: N"),
        ("port: 0", "port: N"),
        ("port: 65536", "port: N"),
        ("port: -1", "port: N"),
        ("port: 80x", "port: N"),
        ("port: \u00b2", "port: N"),  # a digit to str.isdigit(), not to int()
        ("port: \u0661\u0662", "port: N"),  # Arabic-Indic digits
        ("connect:", "connect: NAME"),
        ("connect: no such/name", "Invalid user name"),
        ("connect: servidor", "reserved"),
        ("msg:", "msg: NAME TEXT"),
        ("msg: bob", "msg: NAME TEXT"),
        ("msg: bob    ", "msg: NAME TEXT"),
        ("msg: b@d hi", "Invalid user name"),
        ("msg: bob a\x1b[31mred", "Control characters"),
        ("msg: bob " + "x" * (MAX_RELAY_CHARS + 1), "Message too long"),
        ("::", "Malformed command"),
        (":: ", "Malformed command"),
        ("", "Empty message"),
        ("   ", "Empty message"),
        ("bell\x07", "Control characters"),
        ("del\x7f", "Control characters"),
        ("c1 csi \u009b2J", "Control characters"),
        ("c1 nel \u0085", "Control characters"),
        ("x" * (MAX_TEXT_CHARS + 1), "Message too long"),
    ],
)
def test_malformed_client_lines(line: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message.replace("[", r"\[")):
        parse_client_line(line)


def test_plain_text_limit_is_the_typing_limit_and_msg_allows_relay_frames() -> None:
    assert parse_client_line("x" * MAX_TEXT_CHARS) == Text("x" * MAX_TEXT_CHARS)
    long = "y" * MAX_RELAY_CHARS
    assert parse_client_line(f"msg: bob {long}") == Msg("bob", long)
    assert MAX_RELAY_CHARS >= MAX_TEXT_CHARS


def test_names() -> None:
    assert check_name("a") == "a"
    assert check_name("A.b_c-9" * 4 + "dddd") == "A.b_c-9" * 4 + "dddd"  # 32 characters
    for bad in ("", "a" * 33, "caf\u00e9", "a b", "a:b", SERVER_ORIGIN, SERVER_ORIGIN.lower()):
        with pytest.raises(RemoteProtocolError):
            check_name(bad)
    # Only the exact server name is reserved, not names that contain it.
    assert check_name("Servidor2") == "Servidor2"


def test_check_text() -> None:
    assert check_text("hi") == "hi"
    assert check_text("tab\tok") == "tab\tok"
    assert check_text("x" * MAX_TEXT_CHARS) == "x" * MAX_TEXT_CHARS
    assert check_text("x" * 50, limit=50) == "x" * 50
    for bad, why in [
        ("", "Empty"),
        (" \t ", "Empty"),
        ("x" * (MAX_TEXT_CHARS + 1), "too long"),
        ("a\nb", "Control"),
        ("a\rb", "Control"),
        ("\x1b[2J", "Control"),
        ("nul\x00", "Control"),
        ("\u009b31m", "Control"),
    ]:
        with pytest.raises(RemoteProtocolError, match=why):
            check_text(bad)
    with pytest.raises(RemoteProtocolError, match="limit is 50 characters"):
        check_text("x" * 51, limit=50)


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (Username("alice"), b"username: alice\n"),
        (Password("pw"), b"password: pw\n"),
        (ListenPort(4000), b"port: 4000\n"),
        (Connect("bob"), b"connect: bob\n"),
        (Msg("bob", "hi there"), b"msg: bob hi there\n"),
        (Command("users"), b"::users\n"),
        (Command("end", "bob"), b"::end bob\n"),
        (Text("caf\u00e9"), "caf\u00e9\n".encode()),
    ],
)
def test_format_client_event(event: ClientEvent, line: bytes) -> None:
    assert format_client_event(event) == line


def test_formatting_refuses_line_breaks() -> None:
    with pytest.raises(ValueError):
        format_client_event(Text("two\nlines"))
    # What the server formats may hold anything a client sent: neutralised, not refused.
    assert format_user_line("bob", "carriage\rreturn") == b"bob: carriage\\rreturn\n"
    assert format_server_line("ERROR", "::us\rers") == b"Servidor[ERROR]: ::us\\rers\n"


# --------------------------------------------------------------------------
# Server lines
# --------------------------------------------------------------------------


def test_server_lines() -> None:
    assert format_server_line("OK", "Welcome") == b"Servidor[OK]: Welcome\n"
    assert parse_server_line("Servidor[OK]: Welcome") == ServerLine("OK", "Welcome")
    assert parse_server_line("Servidor[USERS]:") == ServerLine("USERS", "")
    assert parse_server_line("Servidor[ERROR]:no space") == ServerLine("ERROR", "no space")
    assert format_user_line("alice", "hi: there") == b"alice: hi: there\n"
    assert parse_server_line("alice: hi: there") == UserLine("alice", "hi: there")
    assert parse_server_line("alice:") == UserLine("alice", "")
    with pytest.raises(ValueError):
        format_server_line("lower", "x")
    with pytest.raises(ValueError):
        format_server_line("", "x")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "no colon at all",
        "Servidor: a user line may not claim the server's name",
        "servidor: nor in lower case",
        "Servidor[ok]: flags are upper-case",
        "Servidor[OK] missing colon",
        "bad name: x",
        "a" * 33 + ": too long a name",
    ],
)
def test_malformed_server_lines(line: str) -> None:
    with pytest.raises(RemoteProtocolError, match="Unexpected line"):
        parse_server_line(line)


def test_users_format_and_parse() -> None:
    users = [UserState("alice", True), UserState("bob", False)]
    assert format_users(users) == "alice online, bob offline"
    assert format_users(users, more=3) == "alice online, bob offline, +3 more"
    assert parse_users("alice online, bob offline, +3 more") == users
    assert parse_users("") == []
    # Junk items are skipped, not fatal.
    assert parse_users("alice online, ??? maybe, bob sleeping, carol offline") == [
        UserState("alice", True),
        UserState("carol", False),
    ]


@pytest.mark.parametrize(
    ("peer", "text"),
    [
        (PeerAddress("bob", "203.0.113.7", 4000), "bob 203.0.113.7:4000"),
        (PeerAddress("bob", "2001:db8::1", 4000), "bob [2001:db8::1]:4000"),
        (PeerAddress("bob", "::1", 65535), "bob [::1]:65535"),
        (PeerAddress("bob", None, None), "bob -"),
        (PeerAddress("bob", "198.51.100.2", 1, (("key", "a=b"),)), "bob 198.51.100.2:1 key=a=b"),
    ],
)
def test_peer_address(peer: PeerAddress, text: str) -> None:
    assert format_peer_address(peer) == text
    assert parse_peer_address(text) == peer


def test_peer_address_parsing_is_lenient_about_extras() -> None:
    assert parse_peer_address("bob -  junk x=1") == PeerAddress("bob", None, None, (("x", "1"),))
    assert parse_peer_address("bob ::1:80") == PeerAddress("bob", "::1", 80)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "bob",
        "b@d 1.2.3.4:5",
        "bob 1.2.3.4",
        "bob 1.2.3.4:",
        "bob :80",
        "bob 1.2.3.4:0",
        "bob 1.2.3.4:65536",
        "bob 1.2.3.4:\u00b2",
        "bob [::1]",
    ],
)
def test_malformed_peer_address(text: str) -> None:
    with pytest.raises(RemoteProtocolError, match="Malformed peer address"):
        parse_peer_address(text)


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

names = st.from_regex(NAME_RE, fullmatch=True).filter(lambda n: n.lower() != "servidor")
# Characters a person may type in a message: no control characters (TAB aside).
typed = st.characters(exclude_categories=("Cs", "Cc")) | st.just("\t")
texts = st.text(typed, min_size=1, max_size=60).filter(lambda t: t.strip() == t and t)
words = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"))


def _is_plain_text(t: str) -> bool:
    head, sep, _ = t.partition(":")
    return not t.startswith("::") and not (sep and head in KEYWORDS)


client_events = st.one_of(
    st.builds(Username, names),
    st.builds(Password, texts),
    st.builds(ListenPort, st.integers(1, 65535)),
    st.builds(Connect, names),
    st.builds(Msg, names, texts),
    st.builds(
        Command,
        st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
        st.just("") | texts.filter(lambda a: " " not in a[:1]),
    ),
    st.builds(Text, st.text(typed, min_size=1, max_size=60).filter(lambda t: t.strip())).filter(
        lambda e: _is_plain_text(e.text)
    ),
)


@given(client_events)
def test_client_events_round_trip_through_bytes(event: ClientEvent) -> None:
    assert feed([format_client_event(event)]) == [("line", parse_and_format(event))]
    assert parse_client_line(parse_and_format(event)) == event


def parse_and_format(event: ClientEvent) -> str:
    return format_client_event(event).decode("utf-8")[:-1]


@given(st.from_regex(r"[A-Z_]{1,16}", fullmatch=True), words)
def test_server_lines_round_trip(flag: str, text: str) -> None:
    [(kind, line)] = feed([format_server_line(flag, text)])
    assert kind == "line"
    assert parse_server_line(line) == ServerLine(flag, neutralise(text))


@given(names, words.filter(lambda t: not has_controls(t)))
def test_user_lines_round_trip(origin: str, text: str) -> None:
    """Relayed text is checked text (check_text refused its controls)."""
    [(kind, line)] = feed([format_user_line(origin, text)])
    assert kind == "line"
    assert parse_server_line(line) == UserLine(origin, neutralise(text))


@given(st.lists(st.builds(UserState, names, st.booleans()), max_size=10), st.integers(0, 99))
def test_users_round_trip(users: list[UserState], more: int) -> None:
    assert parse_users(format_users(users, more)) == users


hosts = st.ip_addresses().map(str) | st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
extras = st.lists(
    st.tuples(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.from_regex(r"[!-~]{0,8}", fullmatch=True)
    ),
    max_size=3,
).map(tuple)


@given(names, st.none() | st.tuples(hosts, st.integers(1, 65535)), extras)
def test_peer_address_round_trip(
    name: str, where: tuple[str, int] | None, extra: tuple[tuple[str, str], ...]
) -> None:
    host, port = where if where else (None, None)
    peer = PeerAddress(name, host, port, extra)
    assert parse_peer_address(format_peer_address(peer)) == peer


# Pieces that exercise every path of the line buffer when glued together.
byte_pieces = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from(
            [b"\n", b"\r\n", b"\r", b"\xff", b"\xc3", b"\xc3\xa9", "\U0001f600".encode()]
        ),
    ),
    max_size=40,
).map(b"".join)


def _reference_lines(data: bytes, max_bytes: int) -> list[tuple[str, str]]:
    """What a LineBuffer must produce from ``data`` then EOF, written the obvious way."""
    out: list[tuple[str, str]] = []
    *complete, fragment = data.split(b"\n")
    for raw in complete:
        if len(raw) + 1 > max_bytes:
            out.append(("error", f"Line too long: the limit is {max_bytes} bytes; it was ignored"))
            continue
        raw = raw.removesuffix(b"\r")
        try:
            out.append(("line", raw.decode("utf-8")))
        except UnicodeDecodeError:
            out.append(("error", "Line is not valid UTF-8; it was ignored"))
    if len(fragment) >= max_bytes:
        out.append(("error", f"Line too long: the limit is {max_bytes} bytes; it was ignored"))
    return out


@given(byte_pieces, st.lists(st.integers(0, 500)), st.integers(1, 24))
def test_line_buffer_never_depends_on_chunking(data: bytes, cuts: list[int], limit: int) -> None:
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    # Only RemoteProtocolError may come out (feed() catches just that one).
    assert feed(chunks, limit) == feed([data], limit) == _reference_lines(data, limit)


@given(st.binary(max_size=200), st.integers(1, 64))
def test_line_buffer_on_arbitrary_bytes(data: bytes, limit: int) -> None:
    out = feed([data[i : i + 7] for i in range(0, len(data), 7)], limit)
    for kind, value in out:
        if kind == "line":
            assert "\n" not in value
            assert len(value.encode("utf-8")) < limit


any_line = st.one_of(
    st.text(),
    st.builds(
        str.__add__,
        st.sampled_from([f"{k}:" for k in KEYWORDS] + [f"{k}: " for k in KEYWORDS] + ["::"]),
        st.text(),
    ),
)


@given(any_line)
def test_parse_client_line_raises_only_remote_protocol_error(line: str) -> None:
    try:
        event = parse_client_line(line)
    except RemoteProtocolError:
        return
    assert isinstance(event, ClientEvent)


@given(
    st.text() | st.builds(str.__add__, st.sampled_from(["Servidor[", "bob: ", "bob "]), st.text())
)
def test_server_side_parsers_raise_only_remote_protocol_error(text: str) -> None:
    for parse in (parse_server_line, parse_peer_address):
        with contextlib.suppress(RemoteProtocolError):
            parse(text)
    parse_users(text)  # never raises: junk is skipped


# --------------------------------------------------------------------------
# Across networks: lan: and punch: (issue 3)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("lan: 192.0.2.10:4000", Lan(("192.0.2.10:4000",))),
        ("lan:192.0.2.10:4000", Lan(("192.0.2.10:4000",))),
        (
            "lan: 192.0.2.10:4000   198.51.100.10:4000 ",
            Lan(("192.0.2.10:4000", "198.51.100.10:4000")),
        ),
        ("lan: [2001:db8::1]:4000", Lan(("[2001:db8::1]:4000",))),
        ("lan: ::1:4000", Lan(("::1:4000",))),
        ("lan: 127.0.0.1:1 127.0.0.1:65535", Lan(("127.0.0.1:1", "127.0.0.1:65535"))),
        # "-": a chathack peer that listens nowhere (relay only).
        ("lan: -", Lan(())),
        ("lan:  -  ", Lan(())),
        ("lan: " + " ".join(f"192.0.2.{i}:4000" for i in range(MAX_LAN_ADDRS)), None),
        ("punch: bob", Punch("bob")),
        ("punch:Bob.2", Punch("Bob.2")),
        ("punch:   bob  ", Punch("bob")),
        # Keywords are lower-case: these are chat text.
        ("LAN: 192.0.2.10:4000", Text("LAN: 192.0.2.10:4000")),
        ("Punch: bob", Text("Punch: bob")),
    ],
)
def test_parse_lan_and_punch(line: str, event: ClientEvent | None) -> None:
    if event is None:  # the longest list allowed: every address is kept, in order
        event = Lan(tuple(line.removeprefix("lan: ").split()))
        assert len(event.addrs) == MAX_LAN_ADDRS
    assert parse_client_line(line) == event


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lan:", "lan: HOST:PORT"),
        ("lan:    ", "lan: HOST:PORT"),
        ("lan: 192.0.2.10", "lan: HOST:PORT"),  # no port
        ("lan: 192.0.2.10:", "lan: HOST:PORT"),
        ("lan: :4000", "lan: HOST:PORT"),  # no host
        ("lan: 192.0.2.10:0", "lan: HOST:PORT"),
        ("lan: 192.0.2.10:65536", "lan: HOST:PORT"),
        ("lan: 192.0.2.10:-1", "lan: HOST:PORT"),
        ("lan: 192.0.2.10:\u00b2", "lan: HOST:PORT"),  # a digit to isdigit(), not to int()
        ("lan: 192.0.2.10:\u0661\u0662", "lan: HOST:PORT"),
        ("lan: example.org:4000", "lan: HOST:PORT"),  # numeric addresses only
        ("lan: 192.0.2.10:4000,198.51.100.10:4000", "lan: HOST:PORT"),  # spaces, not commas
        ("lan: 192.0.2.10:4000 junk", "lan: HOST:PORT"),  # one bad word spoils the line
        ("lan: - 192.0.2.10:4000", "lan: HOST:PORT"),  # "-" stands alone
        ("lan: --", "lan: HOST:PORT"),
        ("lan: 192.0.2.1\x1b:4000", "lan: HOST:PORT"),
        (
            "lan: " + " ".join(f"192.0.2.{i}:4000" for i in range(MAX_LAN_ADDRS + 1)),
            f"at most {MAX_LAN_ADDRS}",
        ),
        ("punch:", "punch: NAME"),
        ("punch:   ", "punch: NAME"),
        ("punch: two names", "Invalid user name"),
        ("punch: b@d", "Invalid user name"),
        ("punch: Servidor", "reserved"),
    ],
)
def test_malformed_lan_and_punch(line: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse_client_line(line)


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (Lan(()), b"lan: -\n"),
        (Lan(("192.0.2.10:4000",)), b"lan: 192.0.2.10:4000\n"),
        (
            Lan(("192.0.2.10:4000", "[2001:db8::1]:4000")),
            b"lan: 192.0.2.10:4000 [2001:db8::1]:4000\n",
        ),
        (Punch("bob"), b"punch: bob\n"),
    ],
)
def test_format_lan_and_punch(event: ClientEvent, line: bytes) -> None:
    assert format_client_event(event) == line
    assert parse_client_line(line.decode().rstrip("\n")) == event


def test_peer_address_with_candidates() -> None:
    """What a chathack peer's PEER/CALL line looks like (see rendezvous.hub.address_of)."""
    text = "bob 203.0.113.102:4000 public=203.0.113.102:4000 lan=198.51.100.10:4000,192.0.2.2:4000"
    assert parse_peer_address(text) == PeerAddress(
        "bob",
        "203.0.113.102",
        4000,
        (("public", "203.0.113.102:4000"), ("lan", "198.51.100.10:4000,192.0.2.2:4000")),
    )
    # A relay-only peer: no address, but the extras still say "a chathack peer".
    relay_only = PeerAddress("bob", None, None, (("public", "203.0.113.102:51000"), ("lan", "-")))
    assert format_peer_address(relay_only) == "bob - public=203.0.113.102:51000 lan=-"
    assert parse_peer_address(format_peer_address(relay_only)) == relay_only


ipv4_endpoints = st.builds(
    lambda ip, port: f"{ip}:{port}", st.ip_addresses(v=4).map(str), st.integers(1, 65535)
)
ipv6_endpoints = st.builds(
    lambda ip, port: f"[{ip}]:{port}", st.ip_addresses(v=6).map(str), st.integers(1, 65535)
)
lan_events = st.builds(
    Lan, st.lists(ipv4_endpoints | ipv6_endpoints, max_size=MAX_LAN_ADDRS).map(tuple)
)


@given(lan_events | st.builds(Punch, names))
def test_lan_and_punch_round_trip_through_bytes(event: ClientEvent) -> None:
    assert feed([format_client_event(event)]) == [("line", parse_and_format(event))]
    assert parse_client_line(parse_and_format(event)) == event
