"""Harness for the receiving side of file transfers (:mod:`peer.core.transfers`
with a real :class:`peer.files.FileStore` on a scratch folder).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from chathack.delivery import Conversation
from chathack.file_frames import FileAccept, FileAck, FileCancel, FileChunk, FileDone, FileOffer
from chathack.link import Frame
from chathack.retransmit import Timing
from peer.core.records import Effect
from peer.core.talk import Talk
from peer.core.transfers import Transfers
from peer.files import FileStore, check_name
from tests.fuzz.contract import Cursor

MAX_STEPS = 64
#: Names an offer may carry: honest ones, and what a hostile sender tries.
NAMES = ("a.txt", "b", "../up.txt", "/etc/x", ".", "..", "d\x1bq", "r\u202eexe", "a/b", "ok.bin")
MINE = b"the receiver's own file"


class _Conversations:
    """What :class:`Transfers` uses of the conversations: one open talk with alice."""

    def __init__(self) -> None:
        self.talk = Talk("alice", Conversation("bob", "alice", "e"), Timing())
        self.active: str | None = "alice"
        self.links: dict = {}
        self.server = "online"
        self.sent: list[Frame | FileChunk] = []
        self.rekeys = 0

    def open_talk(self, name: str) -> Talk | None:
        return self.talk if name.lower() == "alice" else None

    def send_frame(self, talk: Talk, frame: Frame, out: list[Effect]) -> None:
        self.sent.append(frame)

    def send_chunk(self, talk: Talk, chunk: FileChunk, out: list[Effect]) -> bool:
        self.sent.append(chunk)
        return True

    def rekey_relay(self, talk: Talk, out: list[Effect]) -> None:
        self.rekeys += 1


def file_transfer(data: bytes) -> None:
    """bob's peer receives whatever alice's (hostile) peer sends about files.

    Operations: offers (any of :data:`NAMES`, sizes, and a hash that is the
    true one of a content the harness knows, or not), bob's ``::accept`` /
    ``::reject``, chunks of the true content or of garbage at any offset,
    acknowledgements, done and cancel frames, and time passing. Contract:
    nothing raises; nothing is ever written outside bob's folder; bob's own
    file there is never touched; every file placed there has a safe name and
    exactly the SHA-256 its offer announced; what the receiver acknowledges
    never runs past the offer's size.
    """
    cur = Cursor(data)
    root = Path(tempfile.mkdtemp(prefix="chathack-fuzz-"))
    try:
        folder = root / "inbox"
        folder.mkdir()
        (folder / "a.txt").write_bytes(MINE)
        _run(cur, root, folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(cur: Cursor, root: Path, folder: Path) -> None:
    convs = _Conversations()
    now = [0.0]
    transfers = Transfers(convs, FileStore(None, folder), lambda: now[0])  # type: ignore[arg-type]
    offers: dict[str, tuple[FileOffer, bytes]] = {}  # fid -> offer, the content it hashes
    talk = convs.talk
    for _ in range(MAX_STEPS):
        if not cur.left():
            break
        out: list[Effect] = []
        match cur.below(7):
            case 0:
                content = cur.block()[:2000]
                fid = f"{cur.below(4):016x}"
                honest = cur.flag()
                sha = hashlib.sha256(content if honest else b"x" + content).hexdigest()
                size = len(content) if cur.flag() else cur.below(5000)
                offer = FileOffer(fid, cur.pick(NAMES), size, sha, "x/y", cur.flag())
                offers[fid] = (offer, content)
                transfers.on_frame(talk, offer, out)
            case 1:
                transfers.accept(str(folder) if cur.flag() else None, out)
            case 2:
                transfers.reject(out)
            case 3 if offers:
                offer, content = cur.pick(list(offers.values()))
                at = cur.below(len(content) + 2)
                piece = content[at : at + 1 + cur.below(700)] if cur.flag() else cur.chunk()
                transfers.on_frame(talk, FileChunk(offer.fid, at, piece), out)
            case 4 if offers:
                fid = cur.pick(list(offers))
                frame = cur.pick(
                    [
                        FileAck(fid, cur.below(9000)),
                        FileDone(fid, cur.flag(), "r"),
                        FileCancel(fid, "c"),
                        FileAccept(fid, cur.below(9000), True),
                    ]
                )
                transfers.on_frame(talk, frame, out)
            case 5:
                now[0] += cur.below(700)
                transfers.tick(now[0], out)
            case _:
                transfers.path_changed(talk, out)
        _check(root, folder, transfers, convs)


def _check(
    root: Path,
    folder: Path,
    transfers: Transfers,
    convs: _Conversations,
) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["inbox"], "wrote outside the folder"
    assert (folder / "a.txt").read_bytes() == MINE, "overwrote a file of the receiver's"
    placed = {t.fid: t for t in transfers.all.values() if t.state == "done"}
    for path in folder.iterdir():
        if path.name == "a.txt" or (path.name.startswith(".chathack-") and path.suffix == ".part"):
            continue
        check_name(path.name)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert any(t.sha256 == digest for t in placed.values()), f"{path.name} unverified"
    for frame in convs.sent:
        # Against the offer the receiver took (a second offer under the same
        # id is a resume, not a new file).
        taken = transfers.all.get(frame.fid) if isinstance(frame, FileAck | FileAccept) else None
        if taken is not None:
            assert frame.have <= taken.size, "acknowledged past the offer"
