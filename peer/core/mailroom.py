"""The peer's side of the mailbox: messages for partners who are offline,
delivery states, and exactly-once display (docs/MAILBOX.md).

Sending: a message for an offline partner is written to the local history
with its id, unsealed, and the rendezvous is asked for the partner's prekeys
(``prekey: NAME N``, one per message of the batch). With them it is sealed
(:func:`chathack.prekeys.seal_mail_fs`: forward secrecy), the sealed text is
recorded *before* ``mail:`` goes out, and re-sent with the same id after any
reconnect or restart until the server answers ``STORED``. A partner whose
peer published no prekeys, or a signed prekey the partner did not sign,
leaves the message waiting (said so), never sealed without them.
This user's own prekeys are published at each login and topped up when the
rendezvous says it runs low (``PREKEYS``). Receipts
(``DELIVERED``, ``READ``, ``EXPIRED``) move its state forward and are
acknowledged (``receipt:``).

Receiving: a ``MAIL`` is opened, checked (it must come from the key pinned or
vouched for its origin, and name us, its origin and its id inside the seal),
recorded in the history — whose ``(partner, id)`` is unique, so a copy
delivered again is recognised (before opening: its one-time prekey is gone)
— shown if new, and only then acknowledged; then its one-time prekey is
deleted.
Acknowledgements, reads and receipt acks are batched: the driver asks for a
:meth:`Mailroom.flush` once it has fed everything one read of the server
produced, so a backlog is acknowledged in a few lines.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from chathack.prekeys import (
    LOW_OPKS,
    MAIL_FS_PREFIX,
    MAX_OPKS_PER_BUNDLE,
    MAX_OPKS_PER_LINE,
    BadPrekey,
    Bundle,
    MailUnopenable,
    check_signed_prekey,
    open_mail_fs,
    seal_mail_fs,
)
from chathack.protocol import (
    MAX_MAIL_KEYS,
    AskPrekeys,
    Mail,
    MailAck,
    MailItem,
    MailKey,
    MailRead,
    PublishPrekeys,
    Receipt,
    ReceiptAck,
    has_controls,
)
from chathack.secure import MAIL_PREFIX, TamperedFrame, open_mail
from chathack.server_events import (
    MailIn,
    MailReceipt,
    MailRefused,
    MailStored,
    PrekeyBundle,
    PrekeyStock,
)
from peer.core.records import Effect, Show, ToServer
from peer.core.security import Keys
from peer.events import Delivery, Incoming, System
from peer.history import UNSEALED, History
from peer.identity import judge
from peer.prekeys import PrekeyVault

#: Refusal codes worth trying again later (the others never succeed as they are).
RETRY_CODES = ("full", "unavailable")

MailEvent = MailIn | MailStored | MailReceipt | MailRefused | PrekeyBundle | PrekeyStock
#: One-time prekeys this peer keeps at the rendezvous after a top-up.
OPK_STOCK = MAX_OPKS_PER_LINE


@dataclass(frozen=True, slots=True)
class Unsealed:
    """A message for ``name``'s mailbox, waiting for ``name``'s prekeys."""

    name: str
    msg_id: str
    text: str
    at: float


class Mailroom:
    def __init__(self, keys: Keys, history: History, epoch: str, vault: PrekeyVault) -> None:
        self.keys = keys
        self.history = history
        self.epoch = epoch
        self.vault = vault
        self._unsealed: dict[str, list[Unsealed]] = {}  # folded name -> waiting, in order
        self._asked: dict[str, int] = {}  # folded name -> prekeys asked for, answer due
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
    ) -> str | None:
        """Keep ``text`` for ``name`` on the server: its id; None if impossible (said why)."""
        keys = self.keys
        if name.lower() in keys.blocked:
            out.append(
                _say(
                    f"{name}'s key changed: check it with ::whois {name}, then ::trust {name}", name
                )
            )
            return None
        key = keys.known_key(name)
        if key is None:
            out.append(
                _say(
                    f"{name} has no identity key yet (never used chathack-peer): "
                    "cannot keep an encrypted message for them",
                    name,
                )
            )
            return None
        msg_id = msg_id or self.new_id()
        self.history.add_outgoing(name, text, now, msg_id, UNSEALED)
        self._queue(Unsealed(name, msg_id, text, now), out)
        return msg_id

    def _queue(self, mail: Unsealed, out: list[Effect]) -> None:
        self._unsealed.setdefault(mail.name.lower(), []).append(mail)
        self._ask(mail.name, out)

    def _ask(self, name: str, out: list[Effect]) -> None:
        """Ask for ``name``'s prekeys for what waits, unless an answer is due."""
        key = name.lower()
        waiting = self._unsealed.get(key)
        if waiting and key not in self._asked:
            self._asked[key] = min(len(waiting), MAX_OPKS_PER_BUNDLE)
            out.append(ToServer(AskPrekeys(waiting[0].name, self._asked[key])))

    def _sealed_batch(self, bundle: Bundle, out: list[Effect]) -> None:
        """``bundle`` came: seal as many waiting messages as were asked for."""
        key = bundle.name.lower()
        asked = self._asked.pop(key, 0)
        waiting = self._unsealed.get(key, [])
        if not waiting:
            return
        name = waiting[0].name
        recipient = self.keys.known_key(name)
        if key in self.keys.blocked or recipient is None:
            return  # said when it was queued; sealed after ::trust (retry)
        if bundle.spk is None:
            out.append(
                _warn(
                    f"{name}'s peer has published no prekeys yet: {_n(len(waiting))} "
                    f"for {name} wait, and go once {name} has logged in with chathack-peer",
                    name,
                )
            )
            return
        try:
            check_signed_prekey(recipient, bundle.spk)
        except BadPrekey:
            out.append(
                _say(
                    f"The rendezvous gave a prekey for {name} that {name} did not sign: "
                    f"nothing was sealed to it; {_n(len(waiting))} for {name} wait",
                    name,
                )
            )
            return
        one_time = list(bundle.opks)
        sealed: list[tuple[Unsealed, str]] = []
        try:
            for mail in waiting[:asked]:
                inner = json.dumps(
                    {"f": self.keys.me, "t": name, "i": mail.msg_id, "x": mail.text, "a": mail.at},
                    ensure_ascii=False,
                ).encode()
                opk = one_time.pop(0) if one_time else None
                sealed.append(
                    (mail, seal_mail_fs(self.keys.identity, recipient, bundle.spk, opk, inner))
                )
        except BadPrekey:
            # A key no agreement can use (a low-order point, say): the whole
            # batch waits, as for a prekey its owner did not sign.
            out.append(
                _say(
                    f"The rendezvous gave a prekey for {name} that is not a usable key: "
                    f"nothing was sealed to it; {_n(len(waiting))} for {name} wait",
                    name,
                )
            )
            return
        self._unsealed[key] = waiting[len(sealed) :]
        for mail, payload in sealed:
            self.history.set_payload(name, mail.msg_id, payload)
            out.append(ToServer(Mail(name, mail.msg_id, payload)))
        self._ask(name, out)  # typed meanwhile

    def prekeys_refused(self, name: str, reason: str, out: list[Effect]) -> None:
        """``prekey: NAME`` failed (no such user): what waits for NAME stays."""
        self._asked.pop(name.lower(), None)
        waiting = len(self._unsealed.get(name.lower(), []))
        out.append(_say(f"Cannot seal mail for {name}: {reason} ({_n(waiting)} wait)", name))

    def retry(self, name: str, out: list[Effect]) -> None:
        """Ask again for ``name``'s prekeys (its key was just trusted)."""
        self._asked.pop(name.lower(), None)
        self._ask(name, out)

    def publish(self, now: float, out: list[Effect]) -> None:
        """At login: the signed prekey (a new one when due); the answer says
        whether one-time prekeys need topping up."""
        out.append(ToServer(PublishPrekeys(self.vault.signed(now))))

    def _top_up(self, held: int, now: float, out: list[Effect]) -> None:
        if held < LOW_OPKS:
            fresh = self.vault.fresh_one_time(OPK_STOCK - held, now)
            out.append(ToServer(PublishPrekeys(self.vault.signed(now), fresh)))

    def resend_pending(self, out: list[Effect]) -> None:
        """After a (re)login: every mail the server has not confirmed, again;
        what waits for prekeys asks for them again (an answer due may have
        been lost with the old connection)."""
        self._asked.clear()
        queued = {(m.name.lower(), m.msg_id) for ms in self._unsealed.values() for m in ms}
        for p in self.history.pending_mail():
            if p.payload != UNSEALED:
                out.append(ToServer(Mail(p.partner, p.msg_id, p.payload)))
            elif (p.partner.lower(), p.msg_id) not in queued:
                unsealed = Unsealed(p.partner, p.msg_id, p.text, p.at)
                self._unsealed.setdefault(p.partner.lower(), []).append(unsealed)
        for waiting in list(self._unsealed.values()):
            if waiting:
                self._ask(waiting[0].name, out)

    # ----------------------------------------------------------- receiving
    def on_event(self, event: MailEvent, active: str | None, now: float, out: list[Effect]) -> None:
        match event:
            case MailIn(item):
                self._mail_in(item, active, out)
            case PrekeyBundle(bundle):
                self._sealed_batch(bundle, out)
            case PrekeyStock(held):
                self._top_up(held, now, out)
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

    def _mail_in(self, item: MailItem, active: str | None, out: list[Effect]) -> None:
        key = MailKey(item.origin, item.msg_id)
        stamp = float(item.stamp)
        if self.history.knows_incoming(item.origin, item.msg_id):
            # Delivered again (we stopped before acknowledging): shown already,
            # and its one-time prekey is gone, as it should be.
            self._acks.append(key)
            return
        opened = self._open(item.origin, item.msg_id, item.text, out)
        if opened is not None:
            shown, one_time = opened
            if self.history.add_incoming(item.origin, shown, stamp, item.msg_id):
                out.append(Show(Incoming(item.origin, shown, stamp, "relayed")))
                if active is None or active.lower() == item.origin.lower():
                    self._reads.append(key)
                else:
                    self._unread.setdefault(item.origin.lower(), []).append(key)
            if one_time:
                self.vault.used(one_time)  # recorded: nobody opens it again
        self._acks.append(key)  # recorded (or refused for good) before acknowledged

    def _advance(self, partner: str, msg_id: str, state: str, out: list[Effect]) -> None:
        if self.history.advance(partner, msg_id, state):
            out.append(Show(Delivery(partner, msg_id, state)))

    def _open(
        self, origin: str, msg_id: str, text: str, out: list[Effect]
    ) -> tuple[str, int] | None:
        """The message text and the one-time prekey it used (0: none), or
        None (dropped and said why)."""
        keys = self.keys
        one_time = 0
        if not text.startswith((MAIL_PREFIX, MAIL_FS_PREFIX)):
            if keys.is_peer(origin):
                out.append(_warn(f"Dropped unencrypted mail claiming to be from {origin}", origin))
                return None
            return text, 0  # from a plain text client (nc): shown as it is
        try:
            if text.startswith(MAIL_FS_PREFIX):
                opened = open_mail_fs(keys.identity, text, self.vault.private)
                sender, plain, one_time = opened.sender, opened.plaintext, opened.opk_id
            else:  # sealed to the identity key alone, by an older version
                sender, plain = open_mail(keys.identity, text)
            inner = json.loads(plain)
        except MailUnopenable as e:
            why = (
                "it was sealed to a prekey this peer no longer has (used once already, "
                "or expired): nobody can open it"
                if e.missing
                else str(e)
            )
            out.append(_warn(f"Dropped mail from {origin}: {why}", origin))
            return None
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
        return str(inner["x"]), one_time

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


def _n(count: int) -> str:
    return f"{count} message" if count == 1 else f"{count} messages"


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
