"""Plain mode's lines, for scripts: every line about a conversation names it
where a bot finds it, and no text can make a line pass for another's."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chathack.grammar import NAME_RE
from chathack.protocol import UserState
from peer.events import (
    Delivery,
    Incoming,
    Recalled,
    ServerNotice,
    System,
    UIEvent,
    UsersList,
)
from peer.plain import conversation_of, plain_line

names = st.from_regex(NAME_RE, fullmatch=True)
texts = st.text(max_size=80)
times = st.floats(0, 4e9, allow_nan=False)
levels = st.sampled_from(["info", "warning", "error"])
states = st.sampled_from(["stored", "delivered", "read", "expired"])

about_someone = st.one_of(
    st.builds(Incoming, names, texts, times, st.sampled_from(["direct", "relayed"])),
    st.builds(Delivery, names, st.text("0123456789abcdef:", min_size=1), states),
    st.builds(System, texts, levels, names),
    st.builds(Recalled, names, names, texts, times, st.sampled_from(["", "read"])),
)
about_nobody = st.one_of(
    st.builds(System, texts, levels, st.none()),
    st.builds(ServerNotice, st.sampled_from(["OK", "ERROR", "INFO"]), texts),
    st.builds(UsersList, st.lists(st.builds(UserState, names, st.booleans()), max_size=3)),
)


def _partner(event: UIEvent) -> str:
    match event:
        case Incoming(origin):
            return origin
        case Delivery(partner) | Recalled(partner):
            return partner
        case System(about=about) if about is not None:
            return about
    raise AssertionError(event)


@given(about_someone)
def test_every_line_about_a_conversation_names_it(event: UIEvent) -> None:
    line = plain_line(event)
    assert line is not None and "\n" not in line
    assert conversation_of(line) == _partner(event)


@given(about_nobody)
def test_no_text_makes_a_line_about_nobody_read_as_somebodys(event: UIEvent) -> None:
    line = plain_line(event)
    assert line is not None
    assert conversation_of(line) is None


def test_the_formats_a_script_reads() -> None:
    assert plain_line(Incoming("bob", "hi", 0, "direct")) == "bob: hi"
    assert plain_line(System("Talking to bob (direct)", "info", "bob")) == (
        "* [bob] Talking to bob (direct)"
    )
    assert plain_line(System("Reconnected to the rendezvous")) == "* Reconnected to the rendezvous"
    assert plain_line(System("no path", "warning", "bob")) == "* [bob] warning: no path"
    assert plain_line(Delivery("bob", "e1:7", "read")) == "* [bob] read: message e1:7"
    assert plain_line(Delivery("bob", "e1:7", "read", live=True)) is None
    assert plain_line(System("[eve] hi")) == "*  [eve] hi"
    recalled = plain_line(Recalled("bob", "alice", "hi\nthere", 0, "read", "history"))
    assert recalled is not None and recalled.startswith("* [bob] history: ")
    assert recalled.endswith(" alice: hi\\nthere [read]")
