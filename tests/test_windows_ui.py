"""The windowed UI (peer/windows_ui.py) in a real terminal, as a person uses
it: tests/windows_harness.py (``run_windows`` over a fake node) in a tmux
pane of the test's own, 80x24; keys typed with ``send-keys``, the screen read
with ``capture-pane``, the bell found in the bytes the program wrote.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Lab, Peer, Rendezvous
from tests.tmux import Tmux

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "windows_harness.py"
BAR_HOME = "1:home"


class UI:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        os.mkfifo(tmp / "control")
        os.environ.setdefault("PYTHONPATH", str(ROOT))
        self.term = Tmux(tmp, [sys.executable, str(HARNESS), str(tmp)])

    def control(self, line: str) -> None:
        with (self.dir / "control").open("w", encoding="utf-8") as f:
            f.write(line + "\n")

    def record(self) -> list[str]:
        path = self.dir / "record"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def bar(self) -> str:
        return next(line for line in self.term.lines() if BAR_HOME in line)


def in_bobs_window(ui: UI) -> None:
    """bob says hi; his window (number 2) becomes the one we look at."""
    ui.control("say bob hi")
    ui.term.wait_for("2:bob")  # the window exists before the key that goes there
    ui.term.keys("M-2")
    ui.term.wait_for("[bob]")


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[UI]:
    the_ui = UI(tmp_path)
    try:
        the_ui.term.wait_for(BAR_HOME)
        yield the_ui
    finally:
        the_ui.term.close()


def test_a_message_elsewhere_rings_and_counts_unread_without_moving_you(ui: UI) -> None:
    ui.control("say bob hello alice")
    ui.term.wait_for("2:bob direct(1)")
    assert "[home]" in ui.term.screen()  # still in the home window
    assert b"\a" in ui.term.written()
    ui.term.keys("M-2")
    screen = ui.term.wait_for("[bob]")
    assert "<bob> hello alice" in screen
    assert "(1)" not in ui.bar()


def test_typed_lines_go_to_the_window_they_are_typed_in(ui: UI) -> None:
    ui.control("say bob one")
    ui.term.wait_for("2:bob")
    ui.control("say carol two")
    ui.term.wait_for("3:carol")
    ui.term.keys("M-2")
    ui.term.wait_for("[bob]")
    ui.term.type("for bob")
    ui.term.keys("Enter")
    ui.term.wait_for("<alice> for bob")
    ui.term.keys("C-n")
    ui.term.wait_for("[carol]")
    ui.term.type("for carol")
    ui.term.keys("Enter")
    ui.term.wait_for("<alice> for carol")
    assert ui.record() == ["send bob 'for bob'", "send carol 'for carol'"]
    # At home chat text goes nowhere, and says why.
    ui.term.keys("M-1")
    ui.term.wait_for("[home]")
    ui.term.type("lost?")
    ui.term.keys("Enter")
    ui.term.wait_for("This is the home window")
    assert len(ui.record()) == 2


def test_a_messages_mark_changes_on_its_own_line(ui: UI) -> None:
    in_bobs_window(ui)
    ui.term.type("how are you")
    ui.term.keys("Enter")
    screen = ui.term.wait_for("<alice> how are you  ✓")
    before = len([line for line in screen.splitlines() if line.strip()])
    ui.control("deliver bob m1 delivered")
    screen = ui.term.wait_for("<alice> how are you  ✓✓")
    assert len([line for line in screen.splitlines() if line.strip()]) == before
    ui.control("deliver bob m1 read")
    ui.term.wait_for("<alice> how are you  read")


def test_the_users_menu_numbers_and_completion(ui: UI) -> None:
    ui.control("users")
    ui.term.wait_for("2. bob (online)")
    ui.term.type("3")
    ui.term.keys("Enter")
    ui.term.wait_for("[carol]")  # connect: carol, and her window comes up
    assert ui.record() == ["input 'connect: carol'"]
    ui.term.type("::whois b")
    ui.term.keys("Tab")
    ui.term.wait_for("::whois bob")
    ui.term.keys("C-u")
    ui.term.type("thanks b")
    ui.term.keys("Tab")
    ui.term.wait_for("thanks bob")


def test_connect_to_someone_not_on_the_list_brings_their_window_up(ui: UI) -> None:
    ui.term.type("connect: zoe")  # no users list on screen: nobody is known yet
    ui.term.keys("Enter")
    screen = ui.term.wait_for("[zoe]")  # the conversation opened: its window, active
    assert "2:zoe" in ui.bar()
    assert "Talking to zoe" in screen


def test_a_narrow_terminal_and_back_keeps_the_screen_whole(ui: UI) -> None:
    ui.control("say bob " + "a long line that has to wrap " * 4)
    ui.term.wait_for("2:bob")
    ui.term.keys("M-2")
    ui.term.wait_for("[bob]")
    ui.term.resize(60)
    screen = ui.term.wait_until(
        lambda s: all(len(line) <= 60 for line in s.splitlines()) and "[bob]" in s,
        "the screen redrawn at 60 columns",
    )
    assert BAR_HOME in screen
    ui.term.resize(80)
    ui.term.wait_until(lambda s: "[bob]" in s and BAR_HOME in s, "the screen back at 80")


def test_passwd_never_echoes_and_ctrl_c_leaves(ui: UI) -> None:
    ui.term.type("::passwd")
    ui.term.keys("Enter")
    ui.term.wait_for("Current password:")
    ui.term.type("old-secret")
    ui.term.keys("Enter")
    ui.term.wait_for("New password:")
    ui.term.type("new-secret")
    ui.term.keys("Enter")
    ui.term.type("new-secret")
    ui.term.keys("Enter")
    ui.term.wait_for("Password changed")
    # Nothing of them was ever drawn: not the text, not even stars.
    written = ui.term.written()
    assert b"secret" not in written and b"***" not in written
    # Nor kept in the input history (a file in the data folder): Up recalls ::passwd.
    ui.term.keys("Up")
    ui.term.wait_until(
        lambda s: any(line.startswith("[home] ::passwd") for line in s.splitlines()),
        "the last line typed that was not a password",
    )
    assert b"secret" not in ui.term.written()
    ui.term.keys("C-u")
    assert ui.record() == ["passwd old-secret new-secret"]
    ui.term.keys("C-c")
    ui.term.wait_until(lambda s: "EXIT 0" in s, "the program gone")
    assert "quit" in ui.record()[-1] or "input '::quit'" in ui.record()


def real_alice(tmp_path: Path, server: str) -> Tmux:
    """The real ``chathack-peer alice`` in a tmux pane, as a person starts it."""
    from tests.procs import command

    return Tmux(
        tmp_path,
        [
            command("chathack-peer"), "alice",
            "--server", server, "--listen", "127.0.0.1:0",
            "--data-dir", str(tmp_path / "peer-alice"),
        ],
        env={"CHATHACK_PASSWORD": "pw-alice-secret"},
    )  # fmt: skip


def test_the_real_peer_opens_in_windows_and_talks_with_a_partner(tmp_path: Path) -> None:
    from tests.procs import lab

    with lab(tmp_path) as world:
        server = world.rendezvous()
        bob = world.peer("bob", server).logged_in()
        bob.send("::quit")  # registered, with a key
        bob.wait()
        term = real_alice(tmp_path, server.address)  # the windowed UI is the default
        try:
            term.wait_for("rendezvous: online")
            bob = world.peer("bob", server).logged_in()
            bob.send("connect: alice")
            bob.expect(r"Talking to alice")
            bob.send("hello from bob")
            term.wait_for("2:bob")
            term.keys("M-2")
            term.wait_for("<bob> hello from bob")
            term.type("hi bob, from the windows")
            term.keys("Enter")
            bob.expect_line("alice: hi bob, from the windows")
            # bob's machine acknowledged it: the mark on the line says so.
            term.wait_until(
                lambda s: "hi bob, from the windows  ✓✓" in s, "alice's message marked delivered"
            )
        finally:
            term.close()


def bob_and_carol_call(world: Lab, server: Rendezvous, term: Tmux) -> tuple[Peer, Peer]:
    """Once alice is online, bob then carol open a conversation with her:
    windows 2 and 3."""
    term.wait_for("rendezvous: online")
    callers = []
    for name, window in (("bob", "2:bob"), ("carol", "3:carol")):
        peer = world.peer(name, server).logged_in()
        peer.send("connect: alice")
        peer.expect_line("* [alice] Talking to alice (relayed)")
        term.wait_for(window)
        callers.append(peer)
    return callers[0], callers[1]


def test_the_real_peer_keeps_two_partners_apart(tmp_path: Path) -> None:
    """bob and carol write to alice at once: two windows, each unread, the
    bell rung, and what alice types in one goes to that partner only."""
    import re

    from tests.procs import lab

    with lab(tmp_path) as world:
        server = world.rendezvous()
        term = real_alice(tmp_path, server.address)
        try:
            bob, carol = bob_and_carol_call(world, server, term)
            bob.send("hello from bob")
            carol.send("alice, lunch?")

            def both_unread(screen: str) -> bool:
                bar = next((line for line in screen.splitlines() if BAR_HOME in line), "")
                return bool(re.search(r"2:bob \w+\(1\)", bar)) and bool(
                    re.search(r"3:carol \w+\(1\)", bar)
                )

            term.wait_until(both_unread, "one unread line in each window")
            assert "[home]" in term.screen()  # nothing moved alice
            assert term.written().count(b"\a") >= 2
            term.keys("M-3")
            term.wait_for("<carol> alice, lunch?")
            term.type("yes carol, at one")
            term.keys("Enter")
            carol.expect_line("alice: yes carol, at one")
            term.keys("M-2")
            term.wait_for("<bob> hello from bob")
            term.type("only for bob")
            term.keys("Enter")
            bob.expect_line("alice: only for bob")
            assert "yes carol" not in bob.output
            carol.send("::quit")
            carol.wait()
            assert "only for bob" not in carol.output
        finally:
            term.close()


def test_the_real_peer_answers_in_its_own_words_and_counts_down_to_reconnect(
    tmp_path: Path,
) -> None:
    """Issue 14's list, typed into the real program: every command answers in
    the program's words, a refused connect opens no window, and a lost
    rendezvous shows a countdown that ::reconnect cuts short."""
    import re

    from tests.procs import lab

    with lab(tmp_path) as world:
        server = world.rendezvous()
        dave = world.peer("dave", server).logged_in()  # registered, then gone
        dave.send("::quit")
        dave.wait()
        term = real_alice(tmp_path, server.address)
        try:
            term.wait_for("rendezvous: online")

            def typed(line: str, answer: str) -> str:
                term.type(line)
                term.keys("Enter")
                return term.wait_for(answer)

            typed("::switch dave", "No open conversation with dave: connect: dave opens one")
            typed("::history dave", "No messages with dave yet")  # in dave's window
            assert "[dave]" in term.screen()
            term.keys("M-1")
            term.wait_for("[home]")
            typed("::history nobody", "There is no user named nobody: ::users")
            screen = typed("::whois nobody", "no user named nobody in the users list")
            assert "connect: nobody" not in screen
            screen = typed(
                "connect: nobody", "There is no user named nobody: ::users lists who is r"
            )
            assert "nobody" not in next(line for line in screen.splitlines() if BAR_HOME in line)
            assert "[home]" in screen and "Servidor[" not in screen
            server.stop()
            countdown = re.compile(r"reconnecting in (\d+) s \(::reconnect to try now\)")

            def left(screen: str) -> int:
                m = countdown.search(screen)
                return -1 if m is None else int(m.group(1))

            # The first tries come quickly; the pauses grow (backoff). Once one
            # is 3 s or more, the bar must show less before the next try: a
            # later pause only starts longer (it doubles, jitter at most halves).
            first = left(term.wait_until(lambda s: left(s) >= 3, "a countdown of 3 s or more"))
            term.wait_until(lambda s: 0 <= left(s) < first, "the countdown going down")
            again = world.rendezvous(db=tmp_path / "rendezvous.sqlite3", port=server.port)
            assert again.port == server.port
            term.type("::reconnect")
            term.keys("Enter")
            term.wait_for("rendezvous: online")
        finally:
            term.close()


def test_files_go_to_and_come_from_the_window_they_are_typed_in(tmp_path: Path) -> None:
    """bob and carol each offer alice a file; alice, in carol's window, takes
    carol's (not bob's), and in bob's window sends bob one (not carol)."""
    from tests.procs import lab

    outbox, inbox = tmp_path / "outbox", tmp_path / "inbox"
    outbox.mkdir(), inbox.mkdir()
    for name in ("from-bob.txt", "from-carol.txt", "for-bob.txt"):
        (outbox / name).write_text(f"this is {name}\n")
    with lab(tmp_path) as world:
        server = world.rendezvous()
        term = real_alice(tmp_path, server.address)
        try:
            bob, carol = bob_and_carol_call(world, server, term)
            bob.send(f"::send {outbox / 'from-bob.txt'}")
            carol.send(f"::send {outbox / 'from-carol.txt'}")
            term.keys("M-3")
            term.wait_for("carol offers from-carol.txt")
            term.type(f"::accept {inbox}")
            term.keys("Enter")
            carol.expect(r"transfer 1: alice saved from-carol\.txt")
            term.keys("M-2")
            term.wait_for("bob offers from-bob.txt")
            term.type(f"::send {outbox / 'for-bob.txt'}")
            term.keys("Enter")
            bob.expect(r"transfer 2: alice offers for-bob\.txt")
            assert sorted(p.name for p in inbox.iterdir()) == ["from-carol.txt"]
            assert "alice saved" not in bob.output  # bob's offer still waits
            carol.send("::transfers")
            carol.expect(r"transfer 1 to alice: from-carol\.txt done")
            assert "for-bob" not in carol.output
        finally:
            term.close()


def test_up_recalls_the_lines_typed_before(ui: UI) -> None:
    in_bobs_window(ui)
    ui.term.type("a line worth repeating")
    ui.term.keys("Enter")
    ui.term.wait_for("<alice> a line worth repeating")
    ui.term.keys("Up")
    ui.term.wait_until(
        lambda s: any(line.startswith("[bob] a line worth repeating") for line in s.splitlines()),
        "the line back in the input",
    )


def test_a_paste_too_long_for_one_message_is_offered_as_several(ui: UI) -> None:
    in_bobs_window(ui)
    words = " ".join(f"word{i:05d}" for i in range(900))  # ~9,000 characters
    ui.term.type(words)
    ui.term.keys("Enter")
    ui.term.wait_for("send it as 5 messages? (y/n)")
    assert ui.record() == []  # nothing sent before the answer
    ui.term.type("y")
    ui.term.keys("Enter")
    ui.term.wait_until(lambda s: len(ui.record()) == 5, "five messages sent")
    sent = [line.split(" ", 2)[2] for line in ui.record()]
    assert " ".join(text.strip("'") for text in sent) == words
