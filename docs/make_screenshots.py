"""Screenshots of the terminal UIs for the README, made from the real program.

    python docs/make_screenshots.py        # writes docs/img/*.svg

The windowed UI runs (tests/windows_harness.py: ``run_windows`` over a fake
node that a script drives) in a tmux pane of its own, 80x20; the pane is
captured with its colours (``capture-pane -e``) and rich turns the ANSI into
an SVG, so the picture is what a terminal shows, not a drawing of it.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from tests.tmux import Tmux  # noqa: E402

OUT = ROOT / "docs" / "img"


def control(folder: Path, line: str) -> None:
    with (folder / "control").open("w", encoding="utf-8") as f:
        f.write(line + "\n")


def svg(ansi: str, title: str, path: Path) -> None:
    console = Console(
        file=io.StringIO(), record=True, width=80, force_terminal=True, color_system="truecolor"
    )
    console.print(Text.from_ansi(ansi.rstrip("\n")))
    path.write_text(console.export_svg(title=title), encoding="utf-8")
    print(f"wrote {path}")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="chathack-shots-"))
    os.mkfifo(folder / "control")
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    harness = [sys.executable, str(ROOT / "tests" / "windows_harness.py"), str(folder)]
    term = Tmux(folder, harness, width=80, height=20)
    try:
        term.wait_for("1:home")
        control(folder, "users")
        term.wait_for("2. bob")
        control(folder, "say bob made it home, the train was late")
        term.wait_for("2:bob")
        control(folder, "say carol alice: lunch at 1?")
        term.wait_for("3:carol")
        term.keys("M-2")
        term.wait_for("[bob]")
        term.type("glad you're back! how was the talk?")
        term.keys("Enter")
        term.wait_for("how was the talk?  ✓")
        control(folder, "deliver bob m1 read")
        term.wait_for("how was the talk?  read")
        term.type("and did you see the slides I sent")
        term.keys("Enter")
        term.wait_for("slides I sent  ✓")
        control(folder, "say bob yes! great talk, slides next week")
        term.wait_for("slides next week")
        shot = term.screen_with_colours()
        svg(shot, "chathack-peer alice", OUT / "windows.svg")
        transfer(folder, term)
    finally:
        term.close()
    return 0


def seen(term: Tmux, text: str) -> None:
    """Wait for ``text`` on the screen, wherever the pane wrapped it."""
    term.wait_until(lambda screen: text in screen.replace("\n", ""), repr(text), 10.0)


def transfer(folder: Path, term: Tmux) -> None:
    """bob sends alice a file: the offer, her answer, the progress bar redrawn
    in place while they go on talking. The lines are the peer's own wording
    (peer/core/transfers.py)."""
    name = "build-2026-12-04.tar.gz"
    bar = "transfer 1 from bob: " + name + " [{}] {}% {} MB/48.2 MB 11.3 MB/s ETA {} s punched"
    control(folder, f"say bob here is the build with the logs, {name}")
    control(
        folder,
        f"info bob - transfer 1: bob offers {name} (48.2 MB, application/x-tar): "
        "::accept [DIR] to save it, ::reject to say no",
    )
    seen(term, "::reject to say no")
    control(folder, f"info bob - transfer 1: saving {name} in /home/alice/Downloads")
    control(folder, "info bob t1 " + bar.format("#" * 4 + "-" * 16, 21, "10.1", 3))
    seen(term, "21% 10.1 MB")
    control(folder, "say bob the interesting part is in logs/rdv-2.txt")
    seen(term, "rdv-2.txt")
    control(folder, "info bob t1 " + bar.format("#" * 13 + "-" * 7, 67, "32.3", 1))
    seen(term, "67% 32.3 MB")
    svg(term.screen_with_colours(), "chathack-peer alice: a file from bob", OUT / "transfer.svg")


if __name__ == "__main__":
    sys.exit(main())
