"""A conversation's delivery state: sequence numbers, cumulative acks,
de-duplication and what to re-send (sans-IO; see :mod:`chathack.link` for the
frames and the theory of operation)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from chathack.link import MAX_OUT_OF_ORDER, Ack, Chat
from chathack.protocol import check_text


@dataclass(slots=True)
class Received:
    """What :meth:`Conversation.receive_chat` hands back."""

    deliver: list[Chat]
    ack: Ack
    duplicate: bool = False


@dataclass(slots=True)
class Conversation:
    """Sequencing, acknowledgement and de-duplication for one partner."""

    me: str
    partner: str
    epoch: str
    next_seq: int = 1
    unacked: dict[int, Chat] = field(default_factory=dict)
    peer_epoch: str | None = None
    delivered: int = 0
    early: dict[int, Chat] = field(default_factory=dict)

    # sending --------------------------------------------------------------
    def send_text(self, text: str, now: float = 0.0) -> Chat:
        """Number ``text`` and keep it until acknowledged; return the frame to send."""
        check_text(text)
        base = min(self.unacked, default=self.next_seq)
        chat = Chat(self.epoch, self.next_seq, base, text, now)
        self.unacked[chat.seq] = chat
        self.next_seq += 1
        return chat

    def receive_ack(self, ack: Ack) -> list[Chat]:
        """Forget every frame ``ack`` covers; return them (now known delivered)."""
        if ack.epoch != self.epoch:
            return []
        done = [c for s, c in self.unacked.items() if s <= ack.seq]
        for c in done:
            del self.unacked[c.seq]
        return done

    def to_resend(self) -> list[Chat]:
        """Everything not yet acknowledged, oldest first (after a path change).

        Each frame carries the *current* base: the one it was first sent with
        may be older, and a receiver that restarted since would wait forever
        for frames below the current base, which nobody holds any more.
        """
        base = min(self.unacked, default=self.next_seq)
        return [replace(self.unacked[s], base=base) for s in sorted(self.unacked)]

    # receiving ------------------------------------------------------------
    def receive_chat(self, chat: Chat) -> Received:
        deliver: list[Chat] = []
        if chat.epoch != self.peer_epoch:
            # A new run of the partner's program (or the first frame we see).
            self.peer_epoch = chat.epoch
            self.delivered = chat.base - 1
            self.early.clear()
        elif chat.base - 1 > self.delivered:
            # The sender knows we got everything below base: skip the gap.
            self.delivered = chat.base - 1
            for s in [s for s in self.early if s <= self.delivered]:
                del self.early[s]
            # Frames buffered behind the gap may now be next in line.
            self._deliver_early(deliver)
        if chat.seq <= self.delivered or chat.seq in self.early:
            return Received(deliver, Ack(chat.epoch, self.delivered), duplicate=not deliver)
        if chat.seq == self.delivered + 1:
            deliver.append(chat)
            self.delivered = chat.seq
            self._deliver_early(deliver)
        elif len(self.early) < MAX_OUT_OF_ORDER:
            self.early[chat.seq] = chat
        return Received(deliver, Ack(chat.epoch, self.delivered))

    def _deliver_early(self, deliver: list[Chat]) -> None:
        while self.delivered + 1 in self.early:
            self.delivered += 1
            deliver.append(self.early.pop(self.delivered))
