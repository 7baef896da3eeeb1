"""The peer's side of the mailbox: messages for partners who are offline,
delivery states, and exactly-once display (docs/MAILBOX.md).

Sending: a message for an offline partner is sealed to the partner's identity
key (:func:`chathack.secure.seal_mail`), written to the local history with
its id *before* ``mail:`` goes out, and re-sent with the same id after any
reconnect or restart until the server answers ``STORED``. Receipts
(``DELIVERED``, ``READ``, ``EXPIRED``) move its state forward and are
acknowledged (``receipt:``).

Receiving: a ``MAIL`` is opened, checked (it must come from the key pinned or
vouched for its origin, and name us, its origin and its id inside the seal),
recorded in the history — whose ``(partner, id)`` is unique, so a copy
delivered again is recognised — shown if new, and only then acknowledged.
Acknowledgements, reads and receipt acks are batched: the driver asks for a
:meth:`Mailroom.flush` once it has fed everything one read of the server
produced, so a backlog is acknowledged in a few lines.
"""

from __future__ import annotations

import json
import secrets

from chathack.protocol import (
    MAX_MAIL_KEYS,
    Mail,
    MailAck,
    MailKey,
    MailRead,
    Receipt,
    ReceiptAck,
    has_controls,
)
from chathack.secure import MAIL_PREFIX, BadIdentityKey, TamperedFrame, open_mail, seal_mail
from chathack.server_events import MailIn, MailReceipt, MailRefused, MailStored
from peer.core.records import Effect, Show, ToServer
from peer.core.security import Keys
from peer.events import Delivery, Incoming, System
from peer.history import History
from peer.identity import judge

#: Refusal codes worth trying again later (the others never succeed as they are).
RETRY_CODES = ("full", "unavailable")

MailEvent = MailIn | MailStored | MailReceipt | MailRefused


class Mailroom:
    def __init__(self, keys: Keys, history: History, epoch: str) -> None:
        self.keys = keys
        self.history = history
        self.epoch = epoch
        self._acks: list[MailKey] = []
        self._reads: list[MailKey] = []
        self._receipts: list[Receipt] = []
        self._unread: dict[str, list[MailKey]] = {}  # folded origin -> shown elsewhere

    # ------------------------------------------------------------ batching
    @property
    def wants_flush(self) -> bool:
        return bool(self._acks or self._reads or self._receipts)

    def flush(self, out: list[Effect]) -> None:
        for keys, make in ((self._acks, MailAck), (self._reads, MailRead)):
            for i in range(0, len(keys), MAX_MAIL_KEYS):
                out.append(ToServer(make(tuple(keys[i : i + MAX_MAIL_KEYS]))))
        for i in range(0, len(self._receipts), MAX_MAIL_KEYS):
            out.append(ToServer(ReceiptAck(tuple(self._receipts[i : i + MAX_MAIL_KEYS]))))
        self._acks, self._reads, self._receipts = [], [], []

    # ------------------------------------------------------------- sending
    def new_id(self) -> str:
        """A random id: the mailbox cannot link one sender's messages by it."""
        return secrets.token_hex(12)

    def send(
        self, name: str, text: str, now: float, out: list[Effect], msg_id: str | None = None
    ) -> bool:
        """Keep ``text`` for ``name`` on the server; False if impossible (said why)."""
        keys = self.keys
        if name.lower() in keys.blocked:
            out.append(
                _say(
                    f"{name}'s key changed: check it with ::whois {name}, then ::trust {name}", name
                )
            )
            return False
        key = keys.known_key(name)
        if key is None:
            out.append(
                _say(
                    f"{name} has no identity key yet (never used chathack-peer): "
                    "cannot keep an encrypted message for them",
                    name,
                )
            )
            return False
        msg_id = msg_id or self.new_id()
        inner = json.dumps(
            {"f": keys.me, "t": name, "i": msg_id, "x": text, "a": now}, ensure_ascii=False
        ).encode()
        try:
            payload = seal_mail(keys.identity, key, inner)
        except BadIdentityKey:
            out.append(
                _say(
                    f"Cannot keep a message for {name}: the identity key the rendezvous "
                    f"vouches for {name} is not a valid key, so nothing can be sealed to it",
                    name,
                )
            )
            return False
        self.history.add_outgoing(name, text, now, msg_id, payload)
        out.append(ToServer(Mail(name, msg_id, payload)))
        return True

    def resend_pending(self, out: list[Effect]) -> None:
        """After a (re)login: every mail the server has not confirmed, again."""
        for p in self.history.pending_mail():
            out.append(ToServer(Mail(p.partner, p.msg_id, p.payload)))

    # ----------------------------------------------------------- receiving
    def on_event(self, event: MailEvent, active: str | None, out: list[Effect]) -> None:
        match event:
            case MailIn(item):
                key = MailKey(item.origin, item.msg_id)
                stamp = float(item.stamp)
                shown = self._open(item.origin, item.msg_id, item.text, out)
                if shown is not None and self.history.add_incoming(
                    item.origin, shown, stamp, item.msg_id
                ):
                    out.append(Show(Incoming(item.origin, shown, stamp, "relayed")))
                    if active is None or active.lower() == item.origin.lower():
                        self._reads.append(key)
                    else:
                        self._unread.setdefault(item.origin.lower(), []).append(key)
                self._acks.append(key)  # recorded (or refused for good) before acknowledged
            case MailStored(key):
                self._advance(key.name, key.msg_id, "stored", out)
            case MailReceipt(flag, key):
                if flag == "EXPIRED":
                    out.append(Show(Delivery(key.name, key.msg_id, "expired")))
                else:
                    state = "read" if flag == "READ" else "delivered"
                    self._advance(key.name, key.msg_id, state, out)
                self._receipts.append(Receipt(flag, key.name, key.msg_id))
            case MailRefused(r):
                if r.code not in RETRY_CODES:
                    self.history.give_up(r.key.name, r.key.msg_id)  # stop resending
                out.append(
                    _say(f"The server refused a message for {r.key.name}: {r.reason}", r.key.name)
                )

    def _advance(self, partner: str, msg_id: str, state: str, out: list[Effect]) -> None:
        if self.history.advance(partner, msg_id, state):
            out.append(Show(Delivery(partner, msg_id, state)))

    def _open(self, origin: str, msg_id: str, text: str, out: list[Effect]) -> str | None:
        """The message text, or None (dropped and said why)."""
        keys = self.keys
        if not text.startswith(MAIL_PREFIX):
            if keys.is_peer(origin):
                out.append(_warn(f"Dropped unencrypted mail claiming to be from {origin}", origin))
                return None
            return text  # from a plain text client (nc): shown as it is
        try:
            sender, plain = open_mail(keys.identity, text)
            inner = json.loads(plain)
        except (TamperedFrame, ValueError) as e:
            out.append(_warn(f"Dropped mail from {origin}: {e}", origin))
            return None
        except RecursionError:  # "[[[[...": anyone can seal mail to anyone
            out.append(_warn(f"Dropped mail from {origin}: nested too deep", origin))
            return None
        verdict = judge(origin, sender, keys.pins.get(origin), keys.vouched.get(origin.lower()))
        if verdict.verdict not in ("trusted", "first-use"):
            out.append(_say(f"Dropped mail claiming to be from {origin}: {verdict.reason}", origin))
            return None
        if not _header_matches(inner, origin, keys.me, msg_id):
            out.append(
                _warn(f"Dropped mail from {origin}: its sealed header does not match", origin)
            )
            return None
        if verdict.verdict == "first-use":
            keys.pins.pin(origin, sender)
        return str(inner["x"])

    def mark_read(self, partner: str) -> None:
        """The conversation with ``partner`` is on screen: what waited is read."""
        self._reads.extend(self._unread.pop(partner.lower(), []))


def _header_matches(inner: object, origin: str, me: str, msg_id: str) -> bool:
    return (
        isinstance(inner, dict)
        and str(inner.get("f", "")).lower() == origin.lower()
        and str(inner.get("t", "")).lower() == me.lower()
        and inner.get("i") == msg_id
        and isinstance(inner.get("x"), str)
        and _is_text(inner["x"])
        and not has_controls(inner["x"])
    )


def _say(text: str, about: str) -> Effect:
    return Show(System(text, "error", about))


def _warn(text: str, about: str) -> Effect:
    return Show(System(text, "warning", about))


def _is_text(text: str) -> bool:
    """False for a string JSON decoded with a lone surrogate ("\\ud800"): it is
    not text, and neither the history nor a terminal could take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
