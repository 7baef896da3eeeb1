"""The rendezvous's side of mail with forward secrecy: it keeps the prekeys
users publish (``prekeys:``) and hands them to senders (``prekey: NAME N``),
each one-time prekey to one sender only (:mod:`chathack.prekeys`).

It checks what it can: a signed prekey must carry the signature of the
identity key the user registered (junk would only make senders fail), and
it keeps at most :data:`~chathack.prekeys.MAX_OPKS_HELD` one-time prekeys
per user. It cannot read what is sealed with them: it never sees a private
half.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Protocol

from chathack.errors import RemoteProtocolError
from chathack.prekeys import (
    LOW_OPKS,
    MAX_OPKS_HELD,
    BadPrekey,
    Bundle,
    OneTimePrekey,
    SignedPrekey,
    check_signed_prekey,
    format_opk,
    format_spk,
    parse_opks,
    parse_spk,
)
from chathack.replies import Failed
from chathack.server_events import PrekeyBundle, PrekeyStock
from rendezvous.session import Session
from rendezvous.store import Store


class PrekeyFailed(Exception):
    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.reason)
        self.failed = failed


class PrekeyService(Protocol):
    """What the hub asks of a prekey desk: :class:`PrekeyDesk` (one instance) or
    :class:`~rendezvous.shared_prekeys.SharedPrekeys` (a cluster). Answers go to
    the asking session; a refusal raises :class:`PrekeyFailed` or
    :class:`~chathack.errors.RemoteProtocolError` (then, or later as a line)."""

    def publish_for(
        self, session: Session, spk: SignedPrekey, opks: tuple[OneTimePrekey, ...]
    ) -> None: ...
    def hand_out_to(self, session: Session, name: str, count: int) -> None: ...
    def identity_changed(self, name: str) -> None: ...


def check_publisher(pubkey: str | None, spk: SignedPrekey) -> None:
    """Raise :class:`RemoteProtocolError` unless ``spk`` carries the signature of
    ``pubkey``, the publisher's registered identity key."""
    if pubkey is None:
        raise RemoteProtocolError("Send your identity key (key: BASE64) before prekeys")
    try:
        check_signed_prekey(base64.b64decode(pubkey, validate=True), spk)
    except (BadPrekey, ValueError, binascii.Error):
        raise RemoteProtocolError(
            "Prekeys refused: the signed prekey does not carry your identity key's signature"
        ) from None


def unknown_user(name: str) -> PrekeyFailed:
    return PrekeyFailed(
        Failed(
            "prekey",
            name,
            "unknown",
            f"There is no user named {name}: ::users lists who is registered",
        )
    )


class PrekeyDesk:
    def __init__(self, store: Store, tell_owner: Callable[[str, PrekeyStock], None]) -> None:
        self.store = store
        self.tell_owner = tell_owner  # to the owner's session, if online

    def publish_for(
        self, session: Session, spk: SignedPrekey, opks: tuple[OneTimePrekey, ...]
    ) -> None:
        assert session.name is not None
        session.tell(self.publish(session.name, session.pubkey, spk, opks))

    def hand_out_to(self, session: Session, name: str, count: int) -> None:
        session.tell(self.hand_out(name, count))

    def identity_changed(self, name: str) -> None:
        """A new identity key: prekeys signed by the old one are worthless."""
        self.store.drop_prekeys(name)

    def publish(
        self, name: str, pubkey: str | None, spk: SignedPrekey, opks: tuple[OneTimePrekey, ...]
    ) -> PrekeyStock:
        """``name`` (logged in, identity key ``pubkey``) publishes prekeys;
        the answer says how many one-time prekeys are held for it now."""
        check_publisher(pubkey, spk)
        self.store.set_signed_prekey(name, format_spk(spk))
        held = self.store.add_one_time_prekeys(
            name, [(o.id, format_opk(o)) for o in opks], MAX_OPKS_HELD
        )
        return PrekeyStock(held)

    def hand_out(self, name: str, count: int) -> PrekeyBundle:
        """A bundle for sealing ``count`` messages to ``name``."""
        account = self.store.get_account(name)
        if account is None:
            raise unknown_user(name)
        spk = self.store.signed_prekey(account.name)
        if spk is None:
            return PrekeyBundle(Bundle(account.name, None))
        words, left = self.store.take_one_time_prekeys(account.name, count)
        if words and left < LOW_OPKS:
            self.tell_owner(account.name, PrekeyStock(left))  # time to top up
        return PrekeyBundle(Bundle(account.name, parse_spk(spk), parse_opks(words, len(words))))
