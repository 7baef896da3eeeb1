"""File transfers in the sans-IO core: two real cores and a real hub
(:class:`tests.core_world.World`), over the relay and over a direct link,
against a lying relay, hostile names, a full disk and a restart.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chathack.file_frames import FileChunk, FileOffer
from chathack.link import (
    FILE_CHUNK_BYTES,
    Sealed,
    SealedChunk,
    frame_to_relay_text,
    relay_text_to_frame,
)
from chathack.protocol import UserLine
from peer.core import records as rec
from peer.core.transfers import DIRECT_WINDOW, OFFER_TTL, RELAY_CHUNK_BYTES
from peer.events import Incoming, System
from tests.core_world import DirectLinks, Peer, World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def talking(world: World, a: str, b: str) -> tuple[Peer, Peer]:
    pa, pb = world.add(a), world.add(b)
    world.connect(a, b)
    world.type(a, rec.Send(None, f"hello {b}"))
    world.pump()
    assert pb.shown_texts(a) == [f"hello {b}"]
    world.type(b, rec.Switch(a))
    return pa, pb


def a_file(world: World, name: str, size: int, seed: int = 1) -> Path:
    path = world.tmp / f"source-{seed}" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size) if seed else b"")
    return path


def offer(world: World, sender: str, path: Path, name: str | None = None) -> rec.SendFile:
    data = path.read_bytes()
    command = rec.SendFile(
        None, str(path), name or path.name, len(data), hashlib.sha256(data).hexdigest(), "x/y"
    )
    world.type(sender, command)
    return command


def said(peer: Peer, *words: str) -> list[str]:
    return [e.text for e in peer.ui if isinstance(e, System) and all(w in e.text for w in words)]


def downloads(peer: Peer) -> list[Path]:
    folder = peer.state.transfers.store.downloads
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.endswith(".part"))


def test_a_file_goes_through_the_relay_verified(world: World) -> None:
    alice, bob = talking(world, "alice", "bob")
    src = a_file(world, "notes.txt", 5 * RELAY_CHUNK_BYTES + 123)
    offer(world, "alice", src)
    world.pump()
    assert said(bob, "alice offers notes.txt", "::accept")
    world.type("bob", rec.AcceptFile())
    world.pump()
    [saved] = downloads(bob)
    assert saved.name == "notes.txt" and saved.read_bytes() == src.read_bytes()
    assert said(alice, "bob saved notes.txt", "SHA-256 verified")
    assert said(bob, "saved", "SHA-256 verified")
    assert alice.state.transfers.all and all(
        t.state == "done" for t in alice.state.transfers.all.values()
    )
    assert not list((world.tmp / "alice" / "transfers").glob("*.json"))  # the sender's: gone
    # The receiver's says it is done (for a day: a sender that missed the news hears it again).
    assert [r.done_at for r in bob.state.transfers.store.records()] == [world.now]


def test_a_file_goes_on_the_direct_link_in_large_chunks(world: World) -> None:
    links = DirectLinks(world)
    alice, bob = talking(world, "alice", "bob")
    links.up(alice, 1, bob, 2, "alice")
    assert alice.state.talks["bob"].link == 1
    src = a_file(world, "big.bin", 3 * 1024 * 1024 + 5)
    relayed_before = len([u for u in bob.ui])
    offer(world, "alice", src)
    links.pump()
    world.type("bob", rec.AcceptFile())
    links.pump(limit=10_000)
    [saved] = downloads(bob)
    assert saved.read_bytes() == src.read_bytes()
    assert relayed_before < len(bob.ui)
    assert said(alice, "bob saved big.bin")


def test_a_chat_line_waits_behind_at_most_one_window_of_file_data(world: World) -> None:
    links = DirectLinks(world)
    alice, bob = talking(world, "alice", "bob")
    links.up(alice, 1, bob, 2, "alice")
    src = a_file(world, "big.bin", 40 * FILE_CHUNK_BYTES)
    offer(world, "alice", src)
    links.pump()
    world.type("bob", rec.AcceptFile())
    # bob's answer reaches alice, who fills the window; then she types.
    peer, link_id, frame = links.queue.pop(0)
    world.feed(peer, rec.LinkFrame(link_id, frame))
    world.type("alice", rec.Send(None, "typed during the transfer"))
    to_bob = [f for p, _, f in links.queue if p is bob]
    chunks_before = [
        f for f in to_bob[: to_bob.index(_last_sealed(to_bob))] if isinstance(f, SealedChunk)
    ]
    assert len(chunks_before) * FILE_CHUNK_BYTES <= DIRECT_WINDOW
    links.pump(limit=10_000)
    shown = [i for i, e in enumerate(bob.ui) if isinstance(e, Incoming)]
    saved = [i for i, e in enumerate(bob.ui) if isinstance(e, System) and "saved" in e.text]
    assert bob.shown_texts("alice")[-1] == "typed during the transfer"
    assert shown[-1] < saved[0]  # shown long before the file (40 chunks) was in


def _last_sealed(frames: list) -> object:
    """The last chat-carrying frame queued (what alice typed)."""
    return [f for f in frames if isinstance(f, Sealed)][-1]


def test_waiting_for_a_direct_path_does_not_renew_the_relays_keys(world: World) -> None:
    alice, bob = talking(world, "alice", "bob")
    alice.state.transfers.relay_files = False  # alice: --no-file-relay
    offer(world, "alice", a_file(world, "private.bin", 3 * RELAY_CHUNK_BYTES))
    world.pump()
    world.type("bob", rec.AcceptFile())
    world.pump()
    assert said(alice, "waiting for a direct path")
    sessions = {
        p.name: p.state.talks[q].relay_sec.session for p, q in ((alice, "bob"), (bob, "alice"))
    }
    world.advance(120.0)
    assert downloads(bob) == []  # nothing went through the relay
    after = {
        p.name: p.state.talks[q].relay_sec.session for p, q in ((alice, "bob"), (bob, "alice"))
    }
    assert after == sessions  # the same sessions: no key exchange every 20 s meanwhile


def test_a_name_already_there_is_never_overwritten(world: World) -> None:
    _, bob = talking(world, "alice", "bob")
    folder = bob.state.transfers.store.downloads
    folder.mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"mine")
    (folder / "a (1).txt").write_bytes(b"mine too")
    offer(world, "alice", a_file(world, "a.txt", 1000))
    world.pump()
    world.type("bob", rec.AcceptFile())
    world.pump()
    assert (folder / "a.txt").read_bytes() == b"mine"
    assert (folder / "a (1).txt").read_bytes() == b"mine too"
    assert len((folder / "a (2).txt").read_bytes()) == 1000


@pytest.mark.parametrize(
    "name",
    ["../evil.sh", "/etc/passwd", "dir/x", "a\\b", "..", "", "bell\x07", "esc\x1b[31m",
     "rtl\u202etxt.exe", "nl\nname", "x" * 300],
)  # fmt: skip
def test_a_hostile_file_name_is_refused_before_anything_is_written(world: World, name: str) -> None:
    alice, bob = talking(world, "alice", "bob")
    src = a_file(world, "innocent.bin", 2000)
    offer(world, "alice", src, name=name or " ")
    world.pump()
    assert said(bob, "offered a file and it was refused")
    assert said(alice, "dropped")
    world.type("bob", rec.AcceptFile())
    assert said(bob, "No file offered to you")
    assert downloads(bob) == []
    assert not (world.tmp / "evil.sh").exists()


def test_a_full_disk_refuses_before_starting(world: World) -> None:
    alice, bob = talking(world, "alice", "bob")
    offer(world, "alice", a_file(world, "huge.bin", 50_000))
    world.pump()
    world.free_bytes = 10_000
    world.type("bob", rec.AcceptFile())
    world.pump()
    assert said(bob, "not enough space", "nothing accepted")
    assert downloads(bob) == []  # not even a part file
    assert not said(alice, "accepted")
    world.free_bytes = 1 << 40  # space made: the same offer can still be taken
    world.type("bob", rec.AcceptFile())
    world.pump()
    assert said(alice, "bob saved huge.bin")


def test_a_tampered_chunk_is_dropped_and_the_file_still_arrives_intact(world: World) -> None:
    _alice, bob = talking(world, "alice", "bob")
    src = a_file(world, "data.bin", 4 * RELAY_CHUNK_BYTES)
    flipped: list[int] = []

    def flip_one(line: UserLine) -> list:
        if not flipped and isinstance(line, UserLine) and line.origin == "alice":
            frame = relay_text_to_frame(line.text)
            if isinstance(frame, SealedChunk):
                body = bytearray(frame.body)
                body[500] ^= 1
                flipped.append(1)
                return [UserLine("alice", frame_to_relay_text(SealedChunk(body)))]
        return [line]

    world.tamper = flip_one
    offer(world, "alice", src)
    world.pump()
    world.type("bob", rec.AcceptFile())
    world.pump()
    assert flipped
    assert said(bob, "Dropped a message from alice", "a file chunk failed authentication")
    assert downloads(bob) == []  # the rest waits behind the hole
    world.advance(30.0)  # the sender's stall timer sends from what was acknowledged
    [saved] = downloads(bob)
    assert saved.read_bytes() == src.read_bytes()


def test_a_file_that_does_not_match_its_hash_is_deleted(world: World) -> None:
    alice, bob = talking(world, "alice", "bob")
    src = a_file(world, "x.bin", 3000)
    world.type(
        "alice",
        rec.SendFile(None, str(src), "x.bin", 3000, hashlib.sha256(b"other").hexdigest(), ""),
    )
    world.pump()
    world.type("bob", rec.AcceptFile())
    world.pump()
    assert said(bob, "did not match its SHA-256: deleted")
    assert said(alice, "failed at bob", "SHA-256 mismatch")
    assert downloads(bob) == []


def test_reject_cancel_and_expiry(world: World) -> None:
    alice, bob = talking(world, "alice", "bob")
    offer(world, "alice", a_file(world, "one.bin", 10, seed=1))
    world.pump()
    world.type("bob", rec.RejectFile())
    world.pump()
    assert said(alice, "bob dropped one.bin", "rejected")
    offer(world, "alice", a_file(world, "two.bin", 10, seed=2))
    world.pump()
    [two] = [t for t in alice.state.transfers.all.values() if t.name == "two.bin"]
    world.type("alice", rec.CancelTransfer(two.number))
    world.pump()
    assert said(bob, "alice dropped two.bin", "cancelled")
    world.type("bob", rec.AcceptFile())
    assert said(bob, "No file offered to you")
    offer(world, "alice", a_file(world, "three.bin", 10, seed=3))
    world.pump()
    world.advance(OFFER_TTL + 5, step=5.0)
    assert said(alice, "did not answer; the offer expired")
    world.type("bob", rec.AcceptFile())
    assert len(said(bob, "No file offered to you")) == 2


def test_a_restarted_receiver_resumes_from_what_it_holds(world: World) -> None:
    alice, bob = talking(world, "alice", "bob")
    size = 40 * RELAY_CHUNK_BYTES
    src = a_file(world, "movie.bin", size)
    offer(world, "alice", src)
    world.pump()
    world.type("bob", rec.AcceptFile())
    chunks_to_bob: list[int] = []

    def count_then_stop(line: object) -> tuple[int, bool]:
        if isinstance(line, UserLine) and line.origin == "alice":
            chunks_to_bob.append(1)
            return (1, False) if len(chunks_to_bob) <= 12 else (0, False)
        return 1, False

    world.fate = count_then_stop
    world.pump()
    held = [p for p in (bob.state.transfers.store.downloads).iterdir()]
    assert len(held) == 1 and held[0].name.endswith(".part")
    got_before = held[0].stat().st_size
    assert 0 < got_before < size
    # bob's program is killed; it starts again with the same data folder.
    world.logout(bob)
    world.fate = lambda line: (1, False)
    world.pump()
    bob = world.start("bob", bob.state.keys.identity, online=False)
    written: list[tuple[int, int]] = []
    store = bob.state.transfers.store
    real_write = store.write
    store.write = lambda fid, at, data: (written.append((at, len(data))), real_write(fid, at, data))  # type: ignore[method-assign]
    world.login(bob)
    world.settle(40.0)
    [saved] = downloads(bob)
    assert saved.read_bytes() == src.read_bytes()
    # From what it held: nothing before it written again, and nothing twice.
    assert min(at for at, _ in written) == got_before
    assert sum(n for _, n in written) == size - got_before
    assert said(alice, "bob saved movie.bin")


def test_a_stranger_cannot_touch_a_transfer_by_its_id(world: World) -> None:
    _alice, bob = talking(world, "alice", "bob")
    world.add("mallory")
    world.connect("mallory", "bob")
    offer(world, "alice", a_file(world, "p.bin", 5000))
    world.pump()
    [t] = bob.state.transfers.all.values()
    # mallory learns the id (say) and sends a chunk for it, sealed for its own path.
    talk = world.peers["mallory"].state.convs.open_talk("bob")
    assert talk is not None
    out: list[rec.Effect] = []
    world.peers["mallory"].state.convs.send_chunk(talk, FileChunk(t.fid, 0, b"x" * 5000), out)
    world.peers["mallory"].state.convs.send_frame(
        talk, FileOffer(t.fid, "q.bin", 1, "0" * 64, "", True), out
    )
    for e in out:
        if isinstance(e, rec.ToServer):
            world._to_hub(world.peers["mallory"], e.event)
    world.pump()
    assert t.partner == "alice" and t.done_bytes == 0 and t.name == "p.bin"
    world.type("bob", rec.Switch("alice"))
    world.type("bob", rec.AcceptFile())
    world.pump()
    [saved] = downloads(bob)
    assert saved.read_bytes() == (world.tmp / "source-1" / "p.bin").read_bytes()
