"""File transfers: offers and answers, chunks and their window, resuming,
verifying, and what the user sees (sans-IO: the disk is :mod:`peer.files`).

Theory of operation
-------------------
A transfer rides the conversation: every frame of it (:mod:`chathack.file_frames`)
is sealed for the conversation's current path, exactly like a chat message,
so it is private and authenticated end to end whatever carries it.

1. ``::send PATH``: the driver hashes the file (SHA-256, off the event loop)
   and hands :class:`~peer.core.records.SendFile` here; the partner gets a
   :class:`FileOffer` (name, size, type, hash) and sees it in the conversation.
2. ``::accept [DIR]`` checks the name and the free space, opens a part file
   and answers :class:`FileAccept` with the bytes it already holds (0, or
   what an earlier run kept). ``::reject`` answers :class:`FileCancel`.
3. The sender sends :class:`FileChunk` records from that offset, never more
   than a *window* beyond what the receiver acknowledged (:class:`FileAck`
   for each chunk it wrote). The window keeps the link's queue short, so a
   chat line typed meanwhile waits behind at most a window of file data.
4. The receiver writes each chunk in order, hashing as it goes; with the
   last byte it compares the SHA-256 with the offer's, links the file into
   place under a name that exists nowhere yet, and says :class:`FileDone`.
   A file that does not match is deleted and both sides are told.

Resuming: whenever the conversation's path changes (a link up or down, the
relay's key agreed again, a restart of either peer), the sender goes back to
what was acknowledged and the receiver says again what it holds
(:class:`FileAccept`); a chunk that is not the next one the receiver needs
is dropped, a gap makes it say where it stands. Both sides keep a record of
each unfinished transfer (:class:`peer.files.Record`), so a restarted peer
reconnects to the partner and carries on from the bytes on disk.

Paths: a direct or punched link carries chunks of
:data:`~chathack.link.FILE_CHUNK_BYTES`; the relay carries small chunks
(:data:`RELAY_CHUNK_BYTES`, one relay line each) with a small window, and
only when both users allow it (``--no-file-relay`` says no); otherwise the
transfer waits for a direct path and starts when one is up.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from chathack.file_frames import (
    FileAccept,
    FileAck,
    FileCancel,
    FileChunk,
    FileDone,
    FileFrame,
    FileOffer,
)
from chathack.link import FILE_CHUNK_BYTES
from chathack.protocol import Connect as AskFor
from peer.core.conversations import Conversations
from peer.core.records import Effect, ToServer
from peer.core.talk import Talk
from peer.core.transfer import (
    DIRECT_WINDOW,
    DONE_KEPT,
    FINAL,
    MAX_PENDING_OFFERS,
    OFFER_AGAIN,
    OFFER_TTL,
    PARTNER_POLL,
    PROGRESS_EVERY,
    RELAY_CHUNK_BYTES,
    RELAY_WINDOW,
    STALL_AFTER,
    Transfer,
    progress_line,
    say,
    size_text,
    topic,
)
from peer.files import FREE_SPACE_MARGIN, FileStore, UnsafeName, check_name


class Transfers:
    def __init__(
        self,
        convs: Conversations,
        store: FileStore,
        clock: Callable[[], float],
        relay_files: bool = True,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.convs = convs
        self.store = store
        self.clock = clock
        self.wall = wall
        self.relay_files = relay_files
        self.all: dict[str, Transfer] = {}  # fid -> transfer
        self._numbers = 0
        convs.on_file = self.on_frame
        convs.on_path = self.path_changed

    # ---------------------------------------------------------- records
    def load(self) -> list[str]:
        """Take back what an earlier run left unfinished; the partners to reach."""
        partners: list[str] = []
        for r in self.store.records():
            if r.done_at and self.wall() - r.done_at > DONE_KEPT:
                self.store.forget(r.fid)
                continue
            t = self._new(r.fid, r.partner, r.name, r.size, r.sha256, r.kind, r.incoming)
            t.source, t.other_relay = r.source, r.relay
            if r.done_at:
                t.state, t.done_bytes = "done", r.size
                continue
            if r.incoming:
                t.folder, t.state = Path(r.folder), "moving"
            if r.partner.lower() not in {p.lower() for p in partners}:
                partners.append(r.partner)
        return partners

    def _new(
        self, fid: str, partner: str, name: str, size: int, sha: str, kind: str, incoming: bool
    ) -> Transfer:
        self._numbers += 1
        t = Transfer(self._numbers, fid, partner, name, size, sha, kind, incoming)
        t.since = t.last_progress = self.clock()
        self.all[fid] = t
        return t

    # ------------------------------------------------------ the user's
    def offer(
        self, partner: str | None, source: str, name: str, size: int, sha: str, kind: str,
        out: list[Effect],
    ) -> None:  # fmt: skip
        talk = self.convs.open_talk(partner or self.convs.active or "")
        if talk is None:
            out.append(say('Send a file in a conversation: "connect: NAME" first', "error"))
            return
        if talk.plain:
            out.append(
                say(f"{talk.partner} uses a plain text client: it cannot take files", "error")
            )
            return
        t = self._new(secrets.token_hex(8), talk.partner, name, size, sha, kind, False)
        t.source = source
        self.store.remember(t.record())
        out.append(
            say(
                f"transfer {t.number}: offered {name} ({size_text(size)}) to {talk.partner}; "
                f"waiting for {talk.partner} to ::accept",
                about=talk.partner,
            )
        )
        self._send_offer(talk, t, out)

    def accept(self, folder: str | None, out: list[Effect], partner: str | None = None) -> None:
        t = self._pending_offer(partner)
        if t is None:
            out.append(say("No file offered to you is waiting for an answer", "error"))
            return
        where = Path(folder).expanduser() if folder else self.store.downloads
        try:
            if folder is None:
                where.mkdir(parents=True, exist_ok=True)
            if not where.is_dir():
                raise FileNotFoundError
        except OSError:
            out.append(say(f"{where} is not a folder; nothing accepted", "error", t.partner))
            return
        try:
            free = self.store.free_space(where)
        except OSError as e:
            free = -1
            why = str(e)
        else:
            why = f"{size_text(free)} free"
        if free < t.size + FREE_SPACE_MARGIN:
            out.append(
                say(
                    f"transfer {t.number}: not enough space in {where} for {t.name} "
                    f"({size_text(t.size)}; {why}); nothing accepted. ::accept DIR to "
                    f"save it elsewhere, or ::reject",
                    "error",
                    t.partner,
                )
            )
            return
        t.folder = where
        try:
            self._open_part(t)
        except OSError as e:
            out.append(say(f"cannot write in {where}: {e}; nothing accepted", "error", t.partner))
            return
        t.state, t.since, t.since_bytes = "moving", self.clock(), t.done_bytes
        self.store.remember(t.record())
        out.append(say(f"transfer {t.number}: saving {t.name} in {where}", about=t.partner))
        if t.size == 0:
            self._finish(t, out)
            return
        self._ask_from(t, out)

    def reject(self, out: list[Effect], partner: str | None = None) -> None:
        t = self._pending_offer(partner)
        if t is None:
            out.append(say("No file offered to you is waiting for an answer", "error"))
            return
        self._drop(t, "cancelled", f"transfer {t.number}: you rejected {t.name}", "rejected", out)

    def cancel(self, number: int, out: list[Effect]) -> None:
        t = next((t for t in self.all.values() if t.number == number), None)
        if t is None or t.state in FINAL:
            out.append(say(f"There is no transfer {number} under way (::transfers)", "error"))
            return
        self._drop(t, "cancelled", f"transfer {number}: cancelled {t.name}", "cancelled", out)

    def list(self, out: list[Effect]) -> None:
        if not self.all:
            out.append(say("No transfers yet: ::send PATH offers a file"))
            return
        for t in sorted(self.all.values(), key=lambda t: t.number):
            out.append(say(progress_line(t, self.clock(), self._path_word(t)), about=t.partner))

    def _pending_offer(self, partner: str | None) -> Transfer | None:
        """The oldest unanswered offer of ``partner`` (None: of the active
        conversation, or the only one there is)."""
        offers = [t for t in self.all.values() if t.incoming and t.state == "offered"]
        chosen = (partner or self.convs.active or "").lower()
        mine = [t for t in offers if t.partner.lower() == chosen]
        if mine:
            return min(mine, key=lambda t: t.number)
        return offers[0] if len(offers) == 1 and partner is None else None

    # ---------------------------------------------------- the partner's
    def on_frame(self, talk: Talk, frame: FileFrame, out: list[Effect]) -> None:
        t = self.all.get(frame.fid)
        if t is not None and t.partner.lower() != talk.partner.lower():
            return  # another partner's id: nothing of theirs to touch
        match frame:
            case FileChunk():
                if t is not None and t.incoming:
                    self._on_chunk(talk, t, frame, out)
            case FileAck(_, have):
                if t is not None and not t.incoming and t.state == "moving":
                    self._acked(talk, t, have, out)
            case FileOffer():
                self._on_offer(talk, t, frame, out)
            case FileAccept(_, have, relay):
                self._on_accept(talk, t, frame.fid, have, relay, out)
            case FileDone(_, ok, reason):
                if t is not None and not t.incoming and t.state not in FINAL:
                    self._on_done(t, ok, reason, out)
            case FileCancel(_, reason):
                if t is not None and t.state not in FINAL:
                    text = f"transfer {t.number}: {talk.partner} dropped {t.name} ({reason})"
                    self._drop(t, "cancelled", text, "", out)

    def _on_offer(
        self, talk: Talk, t: Transfer | None, offer: FileOffer, out: list[Effect]
    ) -> None:
        if t is not None:
            if not t.incoming:
                return
            if t.state == "moving":
                self._ask_from(t, out)  # the sender restarted or lost track: resume
            elif t.state == "done":
                self.convs.send_frame(talk, FileDone(t.fid, True, ""), out)
            return
        partner = talk.partner
        try:
            check_name(offer.name)
        except UnsafeName as e:
            self.convs.send_frame(talk, FileCancel(offer.fid, f"refused: {e}"), out)
            out.append(say(f"{partner} offered a file and it was refused: {e}", "warning", partner))
            return
        waiting = sum(
            1
            for x in self.all.values()
            if x.partner.lower() == partner.lower() and x.state == "offered"
        )
        if waiting >= MAX_PENDING_OFFERS:
            self.convs.send_frame(talk, FileCancel(offer.fid, "refused: too many offers"), out)
            return
        t = self._new(offer.fid, partner, offer.name, offer.size, offer.sha256, offer.kind, True)
        t.other_relay = offer.relay
        out.append(
            say(
                f"transfer {t.number}: {partner} offers {offer.name} ({size_text(offer.size)}, "
                f"{offer.kind}): ::accept [DIR] to save it, ::reject to say no",
                about=partner,
            )
        )

    def _on_accept(
        self, talk: Talk, t: Transfer | None, fid: str, have: int, relay: bool, out: list[Effect]
    ) -> None:
        if t is None or t.incoming or t.state in FINAL:
            if t is None:
                self.convs.send_frame(talk, FileCancel(fid, "no such transfer here"), out)
            elif not t.incoming and t.state != "done":  # the receiver missed our cancel
                self.convs.send_frame(talk, FileCancel(fid, t.state), out)
            return
        if have > t.size:
            self._drop(t, "failed", f"transfer {t.number}: {talk.partner} holds too much", "", out)
            return
        t.other_relay = relay
        if t.state == "offered":
            t.since, t.since_bytes = self.clock(), have
            out.append(
                say(f"transfer {t.number}: {talk.partner} accepted {t.name}", about=t.partner)
            )
        t.state = "moving"
        t.done_bytes = t.next = have
        t.last_progress = self.clock()
        self._pump(talk, t, out)

    def _acked(self, talk: Talk, t: Transfer, have: int, out: list[Effect]) -> None:
        if have > t.done_bytes:
            t.done_bytes = min(have, t.size)
            t.last_progress, t.stalls = self.clock(), 0
        t.next = max(t.next, t.done_bytes)
        self._pump(talk, t, out)
        self._progress(t, out)

    def _on_done(self, t: Transfer, ok: bool, reason: str, out: list[Effect]) -> None:
        self.store.close(t.fid)
        self.store.forget(t.fid)
        if ok:
            t.state, t.done_bytes = "done", t.size
            out.append(
                say(
                    f"transfer {t.number}: {t.partner} saved {t.name} "
                    f"({size_text(t.size)}, SHA-256 verified)",
                    about=t.partner,
                    topic=topic(t),
                )
            )
        else:
            t.state = "failed"
            out.append(
                say(
                    f"transfer {t.number}: {t.name} failed at {t.partner}: {reason}",
                    "error",
                    t.partner,
                )
            )

    def _on_chunk(self, talk: Talk, t: Transfer, chunk: FileChunk, out: list[Effect]) -> None:
        if t.state != "moving":
            # The sender missed how it ended (the frame was lost): say it again,
            # once per pass over the file (at its last chunk), or at once if dropped.
            if t.state == "cancelled":
                self.convs.send_frame(talk, FileCancel(t.fid, "cancelled"), out)
            elif t.state in ("done", "failed") and chunk.offset + len(chunk.data) == t.size:
                self.convs.send_frame(talk, FileDone(t.fid, t.state == "done", t.state), out)
            return
        if chunk.offset != t.done_bytes:
            if chunk.offset < t.done_bytes:
                self.convs.send_frame(talk, FileAck(t.fid, t.done_bytes), out)
            elif t.asked != t.done_bytes:
                self._ask_from(t, out)  # a gap: what was in flight on a lost path
            return
        end = chunk.offset + len(chunk.data)
        if end > t.size:
            self._fail(t, f"{t.partner} sent more than offered", "more bytes than offered", out)
            return
        try:
            if not t.part_open:
                self._open_part(t)
            self.store.write(t.fid, chunk.offset, chunk.data)
        except OSError as e:
            self._fail(t, f"cannot write {t.name}: {e}", "the receiver cannot write it", out)
            return
        t.done_bytes = end
        t.last_progress, t.stalls = self.clock(), 0
        if end == t.size:
            self._finish(t, out)
            return
        self.convs.send_frame(talk, FileAck(t.fid, end), out)
        self._progress(t, out)

    def _open_part(self, t: Transfer) -> None:
        assert t.folder is not None
        t.done_bytes = self.store.open_part(t.folder, t.fid, t.size)
        t.part_open = True

    def _finish(self, t: Transfer, out: list[Effect]) -> None:
        """The receiver holds every byte: verify, place, tell."""
        assert t.folder is not None
        try:
            if not t.part_open:
                self._open_part(t)
            digest = self.store.digest(t.fid)
        except OSError as e:
            self._fail(t, f"cannot write {t.name}: {e}", "the receiver cannot write it", out)
            return
        t.part_open = False
        if digest != t.sha256:
            self.store.discard(t.folder, t.fid)
            self.store.forget(t.fid)
            t.state = "failed"
            self._tell(t, FileDone(t.fid, False, "SHA-256 mismatch: the file was deleted"), out)
            out.append(
                say(
                    f"transfer {t.number}: {t.name} from {t.partner} did not match its "
                    f"SHA-256: deleted",
                    "error",
                    t.partner,
                )
            )
            return
        try:
            path = self.store.place(t.folder, t.fid, t.name)
        except OSError as e:
            self._fail(t, f"cannot save {t.name}: {e}", "the receiver cannot save it", out)
            return
        t.state = "done"
        # Kept a while: if the sender missed the news (the frame lost, then this
        # peer restarted), it is told again when the conversation has a path.
        self.store.remember(t.record(done_at=self.wall()))
        self._tell(t, FileDone(t.fid, True, ""), out)
        out.append(
            say(
                f"transfer {t.number}: saved {path} ({size_text(t.size)} from {t.partner}, "
                "SHA-256 verified)",
                about=t.partner,
                topic=topic(t),
            )
        )

    def _fail(self, t: Transfer, what: str, tell: str, out: list[Effect]) -> None:
        """``t`` cannot go on (``what`` went wrong here); the partner is told ``tell``."""
        self._drop(t, "failed", f"transfer {t.number}: {what}", tell, out)

    def _drop(self, t: Transfer, state: str, text: str, tell: str, out: list[Effect]) -> None:
        """End ``t`` here (``tell``: and say why to the partner)."""
        if tell:
            self._tell(t, FileCancel(t.fid, tell), out)
        t.state = state
        if t.incoming and t.folder is not None:
            self.store.discard(t.folder, t.fid)
        else:
            self.store.close(t.fid)
        self.store.forget(t.fid)
        out.append(say(text, "warning", t.partner))

    # ------------------------------------------------------------ paths
    def path_changed(self, talk: Talk, out: list[Effect]) -> None:
        """The conversation has a new path: offers go again, the sender goes
        back to what was acknowledged, the receiver says what it holds."""
        for t in list(self.all.values()):
            if t.partner.lower() != talk.partner.lower():
                continue
            if t.incoming and t.state == "done":
                self.convs.send_frame(talk, FileDone(t.fid, True, ""), out)
            if t.state in FINAL:
                continue
            if t.incoming:
                if t.state == "moving":
                    t.asked = -1
                    self._ask_from(t, out)
            elif t.state == "offered":
                self._send_offer(talk, t, out)
            else:
                t.next = t.done_bytes
                self._pump(talk, t, out)

    def _send_offer(self, talk: Talk, t: Transfer, out: list[Effect]) -> None:
        offer = FileOffer(t.fid, t.name, t.size, t.sha256, t.kind, self.relay_files)
        self.convs.send_frame(talk, offer, out)

    def _ask_from(self, t: Transfer, out: list[Effect]) -> None:
        """Receiver: "send from what I hold"."""
        if not t.part_open:
            try:
                self._open_part(t)
            except OSError as e:
                self._fail(t, f"cannot reopen {t.name}: {e}", "the receiver lost it", out)
                return
        t.asked = t.done_bytes
        self._tell(t, FileAccept(t.fid, t.done_bytes, self.relay_files), out)

    def _tell(self, t: Transfer, frame: FileFrame, out: list[Effect]) -> None:
        talk = self.convs.open_talk(t.partner)
        if talk is not None:
            self.convs.send_frame(talk, frame, out)

    def _path_for(self, talk: Talk, t: Transfer) -> tuple[str, int, int] | str:
        """(path, chunk size, window) to send ``t``'s data on now, or why none."""
        convs = self.convs
        if not talk.framed:
            return f"waiting for {talk.partner} to be online"
        if talk.link is not None:
            link = convs.links.get(talk.link)
            if link is not None and link.sec.session is not None:
                return link.info.path, FILE_CHUNK_BYTES, DIRECT_WINDOW
        if not (self.relay_files and t.other_relay):
            return "waiting for a direct path (the relay is not allowed for files)"
        if talk.relay_sec.session is None or convs.server != "online":
            return "waiting for a path"
        return "relayed", RELAY_CHUNK_BYTES, RELAY_WINDOW

    def _pump(self, talk: Talk, t: Transfer, out: list[Effect]) -> None:
        """Sender: chunks up to the window beyond what was acknowledged."""
        path = self._path_for(talk, t)
        if isinstance(path, str):
            why = path
            if t.waiting != why:
                t.waiting = why
                out.append(say(f"transfer {t.number}: {why}", about=t.partner, topic=topic(t)))
            return
        t.waiting = ""
        _, chunk, window = path
        while t.next < t.size and t.next - t.done_bytes < window:
            n = min(chunk, t.size - t.next)
            try:
                data = self.store.read(t.fid, t.source, t.next, n)
            except OSError as e:
                self._fail(t, f"cannot read {t.source}: {e}", "the sender cannot read it", out)
                return
            if len(data) != n:
                self._fail(
                    t, f"{t.source} changed while sent", "the file changed at the sender", out
                )
                return
            if not self.convs.send_chunk(talk, FileChunk(t.fid, t.next, data), out):
                return
            t.next += n

    # ------------------------------------------------------------- time
    def tick(self, now: float, out: list[Effect]) -> None:
        for t in list(self.all.values()):
            if t.state == "offered" and now - t.since > OFFER_TTL:
                if t.incoming:
                    t.state = "cancelled"
                    out.append(
                        say(
                            f"transfer {t.number}: the offer of {t.name} expired",
                            "warning",
                            t.partner,
                        )
                    )
                else:
                    self._drop(
                        t,
                        "cancelled",
                        f"transfer {t.number}: {t.partner} did not answer; the offer expired",
                        "the offer expired",
                        out,
                    )
            elif t.state == "offered" and not t.incoming and now - t.last_progress > OFFER_AGAIN:
                # The offer (or its answer) may have been lost on the relay.
                t.last_progress = now
                talk = self.convs.open_talk(t.partner)
                if talk is not None:
                    self._send_offer(talk, t, out)
            elif t.state == "moving" and t.incoming and now - t.last_progress > STALL_AFTER:
                # Nothing came for a while: our answer, or what followed, was lost.
                t.last_progress = now
                self._stalled(t, out)
                self._ask_from(t, out)
            elif t.state == "moving" and not t.incoming:
                talk = self.convs.open_talk(t.partner)
                if talk is not None and talk.offline and now - t.polled > PARTNER_POLL:
                    # Only the rendezvous knows when the partner is back: ask
                    # (its answer, "online", reopens the path and resumes this).
                    t.polled = now
                    out.append(ToServer(AskFor(t.partner)))
                stalled = t.next > t.done_bytes and now - t.last_progress > STALL_AFTER
                if talk is not None and stalled:
                    t.next, t.last_progress = t.done_bytes, now
                    self._stalled(t, out)
                    self._pump(talk, t, out)
            if t.state == "moving":
                self._progress(t, out)

    def _stalled(self, t: Transfer, out: list[Effect]) -> None:
        """``t`` made no progress for a while, again: on the relay, whose
        session may be out of step with the partner's (one side restarted and
        a key exchange frame was lost), every second time a new one is agreed
        (as the chat's re-send timer does, chathack/retransmit.py)."""
        t.stalls += 1
        talk = self.convs.open_talk(t.partner)
        # Not while it waits for a direct path: the relay carries none of it.
        relayed = self.relay_files and t.other_relay
        if talk is not None and relayed and t.stalls % 2 == 0:
            self.convs.rekey_relay(talk, out)

    def _progress(self, t: Transfer, out: list[Effect]) -> None:
        now = self.clock()
        if now - t.shown_at < PROGRESS_EVERY or t.waiting:
            return
        t.shown_at = now
        out.append(
            say(progress_line(t, self.clock(), self._path_word(t)), about=t.partner, topic=topic(t))
        )

    def _path_word(self, t: Transfer) -> str:
        talk = self.convs.open_talk(t.partner)
        return talk.path if talk is not None else "no path"
