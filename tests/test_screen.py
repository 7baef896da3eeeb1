"""The windowed UI's model (peer/screen.py), without a terminal: windows per
conversation, where typed lines go, unread counts and the bell, your
messages' marks updated on their own line, notices in the window they
concern, the users list, day separators."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from chathack.protocol import UserState
from peer.events import (
    Delivery,
    Incoming,
    Outgoing,
    Recalled,
    ServerNotice,
    Status,
    System,
    UsersList,
)
from peer.screen import Bell, Screen

T = time.mktime((2026, 12, 4, 12, 0, 0, 0, 0, -1))


def test_each_partner_gets_a_window_and_a_message_never_moves_you() -> None:
    s = Screen("alice")
    assert s.feed(Incoming("bob", "hi", T, "direct"), T) == [Bell()]
    assert s.feed(Incoming("carol", "hey alice!", T, "relayed"), T) == [Bell()]
    assert [w.title for w in s.windows] == ["home", "bob", "carol"]
    assert s.active == 0 and s.route() is None  # still home: chat text goes nowhere
    bar = {label: (unread, named) for _, label, unread, named, _ in s.bar()}
    assert bar == {"home": (0, False), "bob direct": (1, False), "carol relayed": (1, True)}
    assert s.terminal_title() == "chathack alice (2)"


def test_typed_lines_go_to_the_window_you_are_in_and_only_there() -> None:
    s = Screen("alice")
    s.feed(Incoming("bob", "one", T, "direct"), T)
    s.feed(Incoming("carol", "two", T, "direct"), T)
    assert s.go_to("BOB") and s.route() == "bob"
    assert s.current.unread == 0 and s.unread_total() == 1
    # carol writes while you are in bob's window: you stay there.
    s.feed(Incoming("carol", "three", T, "direct"), T)
    assert s.route() == "bob" and s.windows[2].unread == 2
    s.step(1)
    assert s.route() == "carol" and s.windows[2].unread == 0
    s.step(1)
    assert s.route() is None  # round the bar to home
    assert not s.go(7) and s.route() is None


def test_the_active_window_takes_messages_without_a_bell() -> None:
    s = Screen("alice")
    s.feed(Incoming("bob", "one", T, "direct"), T)
    s.go(1)
    assert s.feed(Incoming("bob", "two", T, "direct"), T) == []
    assert s.current.unread == 0
    assert Screen("alice", bell=False).feed(Incoming("bob", "x", T, "direct"), T) == []


def test_your_messages_marks_change_on_their_own_line() -> None:
    s = Screen("alice")
    s.feed(Outgoing("bob", "are you there", T, "m1", "waiting"), T)
    s.feed(Outgoing("bob", "hello?", T, "m2", "sent"), T)
    [first, second] = [line for line in s.window_of("bob").lines if line.kind == "out"]
    assert (first.mark, second.mark) == ("…", "✓")
    s.feed(Delivery("bob", "m1", "delivered"), T)
    s.feed(Delivery("bob", "m2", "read"), T)
    assert (first.mark, second.mark) == ("✓✓", "read")
    lines_before = len(s.window_of("bob").lines)
    s.feed(Delivery("bob", "m1", "expired"), T)
    assert first.mark == "not delivered"
    assert len(s.window_of("bob").lines) == lines_before  # no new line: the mark moved


def test_a_receipt_for_a_message_not_on_screen_is_said_once_in_its_window() -> None:
    s = Screen("alice")
    s.feed(Delivery("bob", "old-1", "read"), T)
    [notice] = [line for line in s.window_of("bob").lines if line.kind == "notice"]
    assert notice.text == "your message old-1: read"


def test_notices_go_to_the_window_they_concern_or_home() -> None:
    s = Screen("alice")
    s.feed(System("bob went offline", "warning", "bob"), T)
    s.feed(ServerNotice("ERROR", "There is no user named nobody"), T)
    assert [line.text for line in s.window_of("bob").lines if line.kind == "notice"] == [
        "bob went offline"
    ]
    [home] = [line for line in s.windows[0].lines if line.kind == "notice"]
    assert home.level == "error" and "nobody" in home.text


def test_a_refused_connect_opens_no_window() -> None:
    s = Screen("alice")
    s.feed(System("There is no user named nobody", "error", "nobody"), T)
    assert s.index_of("nobody") is None
    [home] = [line for line in s.windows[0].lines if line.kind == "notice"]
    assert home.text == "There is no user named nobody" and home.level == "error"


def test_a_day_separator_comes_before_the_first_line_of_each_day() -> None:
    s = Screen("alice")
    s.feed(Incoming("bob", "late", T, "direct"), T)
    s.feed(Incoming("bob", "later", T + 60, "direct"), T)
    s.feed(Incoming("bob", "next day", T + 86400, "direct"), T)
    kinds = [line.kind for line in s.window_of("bob").lines]
    assert kinds == ["day", "in", "in", "day", "in"]
    assert s.window_of("bob").lines[3].text.startswith("Saturday 05 December 2026")


def test_history_from_an_older_day_comes_after_a_day_separator_of_its_own() -> None:
    s = Screen("alice")
    s.feed(Incoming("bob", "today", T + 86400, "direct"), T + 86400)
    s.feed(Recalled("bob", "alice", "yesterday's", T, "read"), T + 86400)
    s.feed(Recalled("bob", "bob", "their answer", T + 60, ""), T + 86400)
    s.feed(Incoming("bob", "now", T + 86400 + 5, "direct"), T + 86400)
    bob = s.window_of("bob")
    assert [(line.kind, line.text[:8]) for line in bob.lines] == [
        ("day", "Saturday"),
        ("in", "today"),
        ("day", "Friday 0"),
        ("out", "yesterda"),
        ("in", "their an"),
        ("day", "Saturday"),
        ("in", "now"),
    ]
    assert bob.lines[3].mark == "read"
    assert s.unread_total() == 2  # what was read back is not news: no unread, no bell


def test_the_users_list_is_live_and_its_numbers_work_at_home() -> None:
    s = Screen("alice")
    s.feed(UsersList((UserState("alice", True), UserState("bob", False))), T)
    s.feed(UsersList((UserState("alice", True), UserState("bob", True))), T)
    assert [u.online for u in s.users] == [True, True]
    assert s.menu_pick("2") == "bob" and s.menu_pick("3") is None and s.menu_pick("x") is None
    s.feed(Incoming("bob", "hi", T, "direct"), T)
    s.go(1)
    assert s.menu_pick("2") is None  # in a conversation a number is text


def test_the_bar_follows_the_path_and_the_rendezvous() -> None:
    s = Screen("alice")
    s.feed(Status("alice", "bob", "relayed", "online"), T)
    s.feed(Status("alice", "bob", "punched", "reconnecting"), T)
    assert "bob punched" in [label for _, label, _, _, _ in s.bar()]
    assert s.server == "reconnecting"
    s.feed(Status("alice", "bob", "punched", "reconnecting", retry_in=6.6), T)
    assert s.rendezvous(T) == "reconnecting in 7 s (::reconnect to try now)"
    assert s.rendezvous(T + 3) == "reconnecting in 4 s (::reconnect to try now)"  # counts down
    assert s.rendezvous(T + 60) == "reconnecting in 0 s (::reconnect to try now)"
    s.feed(Status("alice", "bob", "punched", "online"), T)
    assert s.rendezvous(T) == "online"


def test_news_of_the_rendezvous_replace_each_other_in_place() -> None:
    """Lost, reconnecting in 1 s, in 4 s, reconnected: one line, the newest
    (never "offline" left above "online" to contradict it)."""
    s = Screen("alice")
    s.feed(System("hello"), T)
    for text in ("Lost the rendezvous", "Reconnecting in 1 s", "Reconnecting in 4 s"):
        s.feed(System(text, "warning", topic="rendezvous"), T)
    s.feed(System("Reconnected to the rendezvous", topic="rendezvous"), T + 5)
    notices = [(line.text, line.level) for line in s.windows[0].lines if line.kind == "notice"]
    assert notices == [("hello", "info"), ("Reconnected to the rendezvous", "info")]


def test_a_transfers_progress_bar_is_redrawn_where_it_was_while_chat_goes_on() -> None:
    s = Screen("alice")
    bar = "transfer 1 from bob: big.bin [{}] {}%"
    s.feed(System(bar.format("#" * 2 + "-" * 18, 10), about="bob", topic="transfer f1"), T)
    s.feed(Incoming("bob", "sending you the build", T, "direct"), T)
    s.feed(System(bar.format("#" * 9 + "-" * 11, 45), about="bob", topic="transfer f1"), T + 1)
    s.feed(System(bar.format("#" * 4 + "-" * 16, 20), about="bob", topic="transfer f2"), T + 1)
    texts = [line.text for line in s.window_of("bob").lines if line.kind in ("notice", "in")]
    assert texts == [
        bar.format("#" * 9 + "-" * 11, 45),  # the newest figure, in the first one's place
        "sending you the build",
        bar.format("#" * 4 + "-" * 16, 20),  # another transfer: a bar of its own
    ]


def test_hostile_text_is_shown_harmless() -> None:
    s = Screen("alice")
    s.feed(Incoming("bob", "\x1b[2Jgone\u202e", T, "direct"), T)
    [line] = [line for line in s.window_of("bob").lines if line.kind == "in"]
    assert "\x1b" not in line.text and "\u202e" not in line.text


def test_a_window_keeps_a_bounded_number_of_lines() -> None:
    s = Screen("alice", max_lines=50)
    for i in range(200):
        s.feed(Incoming("bob", f"m{i}", T, "direct"), T)
    lines = s.window_of("bob").lines
    assert len(lines) == 50 and lines[-1].text == "m199"


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("msg"), st.sampled_from(["bob", "carol", "dave"])),
            st.tuples(st.just("go"), st.integers(0, 4)),
        ),
        max_size=60,
    )
)
def test_unread_counts_what_arrived_where_you_were_not_since_you_last_looked(
    ops: list[tuple[str, object]],
) -> None:
    s = Screen("alice")
    expected: dict[str, int] = {}
    for op, arg in ops:
        if op == "msg":
            assert isinstance(arg, str)
            s.feed(Incoming(arg, "x", T, "direct"), T)
            if s.current.partner != arg:
                expected[arg] = expected.get(arg, 0) + 1
        else:
            assert isinstance(arg, int)
            if s.go(arg) and s.current.partner is not None:
                expected[s.current.partner] = 0
    for window in s.windows[1:]:
        assert window.partner is not None
        assert window.unread == expected.get(window.partner, 0)
    assert s.current.unread == 0


@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=9000), st.integers(5, 3000))
def test_a_long_paste_splits_into_messages_that_keep_every_word(text: str, limit: int) -> None:
    from peer.screen import split_message

    chunks = split_message(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    assert "".join("".join(c.split()) for c in chunks) == "".join(text.split())
