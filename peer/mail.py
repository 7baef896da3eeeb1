"""The peer's side of the mailbox: messages for partners who are offline,
delivery states, and exactly-once display (docs/MAILBOX.md).

Sending: a message for an offline partner is sealed to the partner's identity
key (:func:`chathack.secure.seal_mail`), written to the local history with
its id *before* ``mail:`` goes out, and re-sent with the same id after any
reconnect or restart until the server answers ``STORED``. Receipts
(``DELIVERED``, ``READ``, ``EXPIRED``) move its state forward and are
acknowledged (``receipt:``).

Receiving: a ``MAIL`` is opened, checked (it must come from the key pinned or
vouched for its origin, and name us, its origin and its id inside the
seal), recorded in the history — whose ``(partner, id)`` is unique, so a copy
delivered again is recognised — shown if new, and only then acknowledged.
Acknowledgements, reads and receipt acks are batched into few lines.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import trio

from chathack.errors import RemoteProtocolError
from chathack.protocol import (
    MAX_MAIL_KEYS,
    Mail,
    MailAck,
    MailKey,
    MailRead,
    Receipt,
    ReceiptAck,
    ServerLine,
    format_client_event,
    has_controls,
    parse_mail,
    parse_mail_key,
    parse_refusal,
)
from chathack.secure import MAIL_PREFIX, BadIdentityKey, TamperedFrame, open_mail, seal_mail
from peer.events import Delivery, Incoming, System
from peer.history import History
from peer.identity import judge

if TYPE_CHECKING:
    from peer.node import PeerNode, Talk

#: Refusal codes worth trying again later (the others never succeed as they are).
RETRY_CODES = ("full", "unavailable")


class Mailroom:
    def __init__(self, node: PeerNode) -> None:
        self.node = node
        self.history = History(node.config.data_dir)
        self._acks: list[MailKey] = []
        self._reads: list[MailKey] = []
        self._receipts: list[Receipt] = []
        self._unread: dict[str, list[MailKey]] = {}  # lower origin -> shown elsewhere
        self._wake = trio.Event()
        self._counter = 0

    # ------------------------------------------------------------ batching
    async def run(self) -> None:
        """Send acknowledgements in batches: all that one read of the server
        produced (the server's handlers run without a pause) in one line."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.flush()

    def flush(self) -> None:
        send = self.node._send_server
        while self._acks:
            batch, self._acks = self._acks[:MAX_MAIL_KEYS], self._acks[MAX_MAIL_KEYS:]
            send(format_client_event(MailAck(tuple(batch))))
        while self._reads:
            batch, self._reads = self._reads[:MAX_MAIL_KEYS], self._reads[MAX_MAIL_KEYS:]
            send(format_client_event(MailRead(tuple(batch))))
        while self._receipts:
            batch = self._receipts[:MAX_MAIL_KEYS]
            self._receipts = self._receipts[MAX_MAIL_KEYS:]
            send(format_client_event(ReceiptAck(tuple(batch))))

    # ------------------------------------------------------------- sending
    def new_id(self) -> str:
        self._counter += 1
        return f"{self.node.epoch}-m{self._counter}"

    def send(self, talk: Talk, text: str, now: float, msg_id: str | None = None) -> bool:
        """Keep ``text`` for ``talk.partner`` on the server; False if impossible."""
        node = self.node
        name = talk.partner
        key = node.pins.get(name) or node.vouched.get(name.lower())
        if name.lower() in node.blocked:
            node.emit(
                System(
                    f"{name}'s key changed: check it with ::whois {name}, then ::trust {name}",
                    "error",
                )
            )
            return False
        if key is None:
            node.emit(
                System(
                    f"{name} has no identity key yet (never used chathack-peer): "
                    "cannot keep an encrypted message for them",
                    "error",
                )
            )
            return False
        msg_id = msg_id or self.new_id()
        inner = json.dumps(
            {"f": node.me, "t": name, "i": msg_id, "x": text, "a": now}, ensure_ascii=False
        ).encode()
        try:
            payload = seal_mail(node.identity, key, inner)
        except BadIdentityKey:
            node.emit(
                System(
                    f"Cannot keep a message for {name}: the identity key the rendezvous "
                    f"vouches for {name} is not a valid key, so nothing can be sealed to it",
                    "error",
                )
            )
            return False
        self.history.add_outgoing(name, text, now, msg_id, payload)
        node._send_server(format_client_event(Mail(name, msg_id, payload)))
        return True

    def resend_pending(self) -> None:
        """After a (re)login: every mail the server has not confirmed, again."""
        for p in self.history.pending_mail():
            self.node._send_server(format_client_event(Mail(p.partner, p.msg_id, p.payload)))

    # ----------------------------------------------------------- receiving
    def on_line(self, line: ServerLine) -> bool:
        """Handle a mailbox line from the server; False if it is not one."""
        try:
            match line.flag:
                case "MAIL":
                    self._on_mail(line.text)
                case "STORED":
                    key = parse_mail_key(line.text)
                    self._advance(key.name, key.msg_id, "stored")
                case "DELIVERED" | "READ" | "EXPIRED":
                    key = parse_mail_key(line.text)
                    state = "read" if line.flag == "READ" else "delivered"
                    if line.flag == "EXPIRED":
                        self.node.emit(Delivery(key.name, key.msg_id, "expired"))
                    else:
                        self._advance(key.name, key.msg_id, state)
                    self._receipts.append(Receipt(line.flag, key.name, key.msg_id))
                    self._wake.set()
                case "REFUSED":
                    r = parse_refusal(line.text)
                    if r.code not in RETRY_CODES:
                        self.history.give_up(r.key.name, r.key.msg_id)  # stop resending
                    self.node.emit(
                        System(
                            f"The server refused a message for {r.key.name}: {r.reason}", "error"
                        )
                    )
                case _:
                    return False
        except RemoteProtocolError as e:
            self.node.emit(System(f"Ignored a malformed {line.flag} line: {e}", "warning"))
        return True

    def _advance(self, partner: str, msg_id: str, state: str) -> None:
        if self.history.advance(partner, msg_id, state):
            self.node.emit(Delivery(partner, msg_id, state))

    def _on_mail(self, text: str) -> None:
        node = self.node
        item = parse_mail(text)
        key = MailKey(item.origin, item.msg_id)
        shown = self._open(item.origin, item.msg_id, item.text, float(item.stamp))
        stamp = float(item.stamp)
        if shown is not None and self.history.add_incoming(item.origin, shown, stamp, item.msg_id):
            node.emit(Incoming(item.origin, shown, stamp, "relayed"))
            if node.active is None or node.active.lower() == item.origin.lower():
                self._reads.append(key)
            else:
                self._unread.setdefault(item.origin.lower(), []).append(key)
        self._acks.append(key)  # recorded (or refused for good) before it is acknowledged
        self._wake.set()

    def _open(self, origin: str, msg_id: str, text: str, stamp: float) -> str | None:
        """The message text, or None (dropped and said why)."""
        node = self.node
        if not text.startswith(MAIL_PREFIX):
            if origin.lower() in node.vouched or node.pins.get(origin) is not None:
                node.emit(
                    System(f"Dropped unencrypted mail claiming to be from {origin}", "warning")
                )
                return None
            return text  # from a plain text client (nc): shown as it is
        try:
            sender, plain = open_mail(node.identity, text)
            inner = json.loads(plain)
        except (TamperedFrame, ValueError) as e:
            node.emit(System(f"Dropped mail from {origin}: {e}", "warning"))
            return None
        except RecursionError:  # "[[[[...": anyone can seal mail to anyone
            node.emit(System(f"Dropped mail from {origin}: nested too deep", "warning"))
            return None
        verdict = judge(origin, sender, node.pins.get(origin), node.vouched.get(origin.lower()))
        if verdict.verdict not in ("trusted", "first-use"):
            node.emit(
                System(f"Dropped mail claiming to be from {origin}: {verdict.reason}", "error")
            )
            return None
        if (
            not isinstance(inner, dict)
            or str(inner.get("f", "")).lower() != origin.lower()
            or str(inner.get("t", "")).lower() != node.me.lower()
            or inner.get("i") != msg_id
            or not isinstance(inner.get("x"), str)
            or not _is_text(inner["x"])
            or has_controls(inner["x"])
        ):
            node.emit(
                System(f"Dropped mail from {origin}: its sealed header does not match", "warning")
            )
            return None
        if verdict.verdict == "first-use":
            node.pins.pin(origin, sender)
        return inner["x"]

    def mark_read(self, partner: str) -> None:
        """The conversation with ``partner`` is on screen: what waited is read."""
        keys = self._unread.pop(partner.lower(), [])
        if keys:
            self._reads.extend(keys)
            self._wake.set()

    def close(self) -> None:
        self.history.close()


def _is_text(text: str) -> bool:
    """False for a string JSON decoded with a lone surrogate ("\\ud800"): it is
    not text, and neither the history nor a terminal could take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
