"""Weakness 9 of the trust issue: offline mail had no forward secrecy. It was
sealed to the recipient's identity key alone, so that key, stolen later,
opened every message the mailbox (or anyone who copied it) still held.

Mail is now sealed to signed prekeys (chathack/prekeys.py, the X3DH idea):
the recipient deletes a one-time prekey as soon as the mail sealed to it is
recorded, and a signed prekey weeks after replacing it. These tests take
the attacker's side: one who copied the stored mail and later stole the
identity key (and the peer's whole data folder), a lying rendezvous that
hands out prekeys its owner never signed or none at all, a rendezvous that
delivers the same mail twice, and any bytes in the new lines.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from chathack.errors import RemoteProtocolError
from chathack.prekeys import (
    MAX_OPKS_HELD,
    Bundle,
    MailUnopenable,
    OneTimePrekey,
    format_bundle,
    new_prekey,
    open_mail_fs,
    parse_bundle,
    seal_mail_fs,
    sign_prekey,
)
from chathack.protocol import (
    AskPrekeys,
    Mail,
    MailItem,
    PublishPrekeys,
    ServerLine,
    format_client_event,
    format_mail,
    parse_client_line,
    parse_server_line,
)
from chathack.secure import TamperedFrame, open_mail
from chathack.server_events import PrekeyBundle, format_server_event, parse_server_event
from peer.core import records as rec
from peer.events import Incoming
from peer.prekeys import SIGNED_KEEP, SIGNED_ROTATE, PrekeyVault
from tests.core_world import World


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


def mail_lines(effects: list[rec.Effect]) -> list[Mail]:
    return [e.event for e in effects if isinstance(e, rec.ToServer) and isinstance(e.event, Mail)]


def stored_texts(world: World, recipient: str) -> list[str]:
    """What the rendezvous keeps for ``recipient``: what an attacker copies."""
    return [m.body for m in world.store.mail.waiting(recipient, 0, 100)]


def alice_mails_bob_offline(world: World, *texts: str) -> list[str]:
    """alice and bob talked once; bob leaves; alice leaves ``texts`` for him.
    Returns the sealed texts as the mailbox stored them."""
    world.add("alice"), world.add("bob")
    world.connect("alice", "bob")
    world.logout(world.peers["bob"])
    world.pump()
    world.connect("alice", "bob")
    for text in texts:
        world.type("alice", rec.Send(None, text))
    world.pump()
    stored = stored_texts(world, "bob")
    assert len(stored) == len(texts)
    return stored


# ------------------------------------------------------- a stolen key, later


def test_mail_already_read_stays_closed_to_a_stolen_identity_key(world: World) -> None:
    """The attacker copied the mailbox while bob was away, and after bob read
    his mail stole bob's identity key and his whole data folder: nothing
    opens. (With the old seal, open_mail(bob's key, copy) gave every text.)"""
    copies = alice_mails_bob_offline(world, "the plan", "the place", "the time")
    bob_key = world.peers["bob"].state.keys.identity
    bob = world.start("bob", bob_key)  # bob comes back and reads
    world.pump()
    world.advance(2.0)
    assert bob.shown_texts("alice") == ["the plan", "the place", "the time"]
    stolen_vault = PrekeyVault(world.tmp / "bob", bob_key)  # his files, as they are now
    try:
        for copy in copies:
            with pytest.raises(TamperedFrame):
                open_mail(bob_key, copy)  # the identity key alone opens nothing
            with pytest.raises(MailUnopenable):
                open_mail_fs(bob_key, copy, stolen_vault.private)
    finally:
        stolen_vault.close()


def test_each_message_of_a_batch_has_its_own_one_time_prekey(world: World) -> None:
    copies = alice_mails_bob_offline(world, "one", "two", "three")
    ephemeral = {raw_of(copy)[64:96] for copy in copies}
    assert len(ephemeral) == 3  # a fresh ephemeral key each
    assert len(set(opk_ids(copies))) == 3  # and a one-time prekey each
    bob = world.peers["bob"]
    before = bob.state.mail.vault.count("opk")
    bob = world.start("bob", bob.state.keys.identity)
    world.pump()
    world.advance(2.0)
    # Three one-time prekeys were used and deleted (and the stock topped up).
    assert bob.shown_texts("alice") == ["one", "two", "three"]
    assert all(bob.state.mail.vault.private("opk", i) is None for i in opk_ids(copies))
    assert bob.state.mail.vault.count("opk") >= before - 3


def raw_of(sealed: str) -> bytes:
    """The bytes of sealed mail: sender key, recipient key, ephemeral key,
    signed prekey id, one-time prekey id, then the box."""
    token = sealed[len("#cm2:") :]
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def opk_ids(copies: list[str]) -> list[int]:
    ids = [struct.unpack(">I", raw_of(copy)[100:104])[0] for copy in copies]
    assert all(ids)
    return ids


def test_without_one_time_prekeys_secrecy_comes_when_the_signed_prekey_goes() -> None:
    """The stock ran out (or was drained by someone asking for bundles): the
    mail is sealed to the signed prekey alone, and opens until the peer
    deletes that key, SIGNED_KEEP after replacing it; never after."""
    alice, bob = SigningKey.generate(), SigningKey.generate()
    vault = PrekeyVault(None, bob)
    spk = vault.signed(now=0.0)
    sealed = seal_mail_fs(alice, bytes(bob.verify_key), spk, None, b"no one-time key")
    assert open_mail_fs(bob, sealed, vault.private).plaintext == b"no one-time key"
    vault.signed(now=SIGNED_ROTATE + 1)  # a new signed prekey; the old one kept
    assert open_mail_fs(bob, sealed, vault.private).plaintext == b"no one-time key"
    vault.signed(now=SIGNED_KEEP + 1)  # past keeping: deleted
    with pytest.raises(MailUnopenable) as gone:
        open_mail_fs(bob, sealed, vault.private)
    assert gone.value.missing


# ------------------------------------------------------------ the seal itself


def keys_for_bob() -> tuple[SigningKey, dict[tuple[str, int], bytes], Bundle]:
    bob = SigningKey.generate()
    spk_private, spk_public = new_prekey()
    opk_private, opk_public = new_prekey()
    private = {("spk", 7): spk_private, ("opk", 9): opk_private}
    bundle = Bundle("bob", sign_prekey(bob, 7, spk_public), (OneTimePrekey(9, opk_public),))
    return bob, private, bundle


def test_the_seal_opens_only_for_its_recipient_and_says_who_sent_it() -> None:
    alice, mallory = SigningKey.generate(), SigningKey.generate()
    bob, private, bundle = keys_for_bob()
    assert bundle.spk is not None
    sealed = seal_mail_fs(alice, bytes(bob.verify_key), bundle.spk, bundle.opks[0], b"hi bob")
    opened = open_mail_fs(bob, sealed, lambda kind, i: private.get((kind, i)))
    assert (opened.sender, opened.plaintext, opened.opk_id) == (
        bytes(alice.verify_key),
        b"hi bob",
        9,
    )
    with pytest.raises(MailUnopenable):  # sealed for bob, not mallory
        open_mail_fs(mallory, sealed, lambda kind, i: private.get((kind, i)))


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_byte_changed_in_sealed_mail_is_refused(position: int, flip: int) -> None:
    alice = SigningKey.generate()
    bob, private, bundle = keys_for_bob()
    assert bundle.spk is not None
    sealed = seal_mail_fs(alice, bytes(bob.verify_key), bundle.spk, bundle.opks[0], b"x" * 20)
    token = sealed[len("#cm2:") :]
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[position % len(raw)] ^= flip or 1
    forged = "#cm2:" + base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(MailUnopenable):
        open_mail_fs(bob, forged, lambda kind, i: private.get((kind, i)))


# ------------------------------------------------------ a lying rendezvous


def test_a_prekey_its_owner_did_not_sign_seals_nothing(world: World) -> None:
    """The rendezvous hands out a signed prekey of its own making: alice
    seals nothing to it, says so, and the message waits."""
    world.add("alice"), world.add("bob")
    world.connect("alice", "bob")
    world.logout(world.peers["bob"])
    world.pump()
    world.connect("alice", "bob")
    _, fake_public = new_prekey()
    server_key = SigningKey.generate()

    def forged(line: ServerLine | object) -> list[object]:
        if isinstance(line, ServerLine) and line.flag == "PREKEY":
            bundle = Bundle("bob", sign_prekey(server_key, 1, fake_public))
            return [parse_server_line_of(format_server_event(PrekeyBundle(bundle)))]
        return [line]

    world.tamper = forged  # type: ignore[assignment]
    sent = world.type("alice", rec.Send(None, "for bob only"))
    world.pump()
    alice = world.peers["alice"]
    assert any("did not sign" in n for n in alice.notices())
    assert stored_texts(world, "bob") == []
    assert mail_lines(sent) == []


def test_a_one_time_prekey_no_agreement_can_use_seals_nothing(world: World) -> None:
    """The rendezvous hands out bob's real signed prekey with a one-time
    prekey of all zeros (a low-order point): nothing is sealed, the core
    meets no error (the world raises on one), and the message waits."""
    world.add("alice"), world.add("bob")
    world.connect("alice", "bob")
    world.logout(world.peers["bob"])
    world.pump()
    world.connect("alice", "bob")

    def zeroed(line: ServerLine | object) -> list[object]:
        if isinstance(line, ServerLine) and line.flag == "PREKEY":
            bundle = parse_bundle(line.text)
            junk = Bundle(bundle.name, bundle.spk, (OneTimePrekey(1, bytes(32)),))
            return [parse_server_line_of(format_server_event(PrekeyBundle(junk)))]
        return [line]

    world.tamper = zeroed  # type: ignore[assignment]
    world.type("alice", rec.Send(None, "still for bob"))
    world.pump()
    assert stored_texts(world, "bob") == []
    assert any("not a usable key" in n for n in world.peers["alice"].notices())


def test_no_prekeys_is_no_reason_to_seal_without_them(world: World) -> None:
    """``PREKEY: bob -`` (none published, or a rendezvous pretending so) does
    not make alice fall back to the old seal: the message waits, said so."""
    world.add("alice"), world.add("bob")
    world.connect("alice", "bob")
    world.logout(world.peers["bob"])
    world.pump()
    world.connect("alice", "bob")

    def withheld(line: ServerLine | object) -> list[object]:
        if isinstance(line, ServerLine) and line.flag == "PREKEY":
            return [ServerLine("PREKEY", "bob -")]
        return [line]

    world.tamper = withheld  # type: ignore[assignment]
    world.type("alice", rec.Send(None, "wait for it"))
    world.pump()
    assert stored_texts(world, "bob") == []
    assert any("published no prekeys" in n for n in world.peers["alice"].notices())
    world.tamper = lambda line: [line]  # type: ignore[assignment]
    bob = world.start("bob", world.peers["bob"].state.keys.identity)
    world.pump()
    world.login(world.peers["alice"], relogin=True)  # alice's next login asks again
    world.pump()
    world.advance(2.0)
    assert bob.shown_texts("alice") == ["wait for it"]


def test_mail_delivered_twice_is_shown_once_though_its_prekey_is_gone(world: World) -> None:
    """The rendezvous delivers a mail again (bob stopped before acknowledging,
    or it replays): recognised by its id before opening, shown once."""
    alice_mails_bob_offline(world, "once")
    bob = world.start("bob", world.peers["bob"].state.keys.identity, online=False)
    [stored] = world.store.mail.waiting("bob", 0, 10)
    assert stored.body is not None
    item = MailItem("alice", stored.msg_id, stored.stamp, stored.body)
    line = ServerLine("MAIL", format_mail(item))
    for _ in range(2):
        world.feed(bob, rec.FromServer(line))
    shown = [e for e in bob.ui if isinstance(e, Incoming)]
    assert [e.text for e in shown] == ["once"]
    assert not any("Dropped" in n for n in bob.notices())


# ------------------------------------------------------------ the rendezvous


def test_a_one_time_prekey_goes_to_one_sender_only(world: World) -> None:
    world.add("bob")
    world.pump()  # bob's peer publishes, hears how many are held, tops up
    hub = world.hub
    bob_held = world.store.add_one_time_prekeys("bob", [], MAX_OPKS_HELD)
    assert bob_held >= 20  # bob's peer published a stock at login
    world.logout(world.peers["bob"])
    world.pump()
    handed: list[int] = []
    for asker in ("carol", "dave"):
        world.add(asker)
        session = world.peers[asker].session
        assert session is not None
        session.outbox.lines.clear()
        hub.handle(session, AskPrekeys("bob", 5), world.now)
        [line] = [parse_client_text(x) for x in session.outbox.lines]
        handed += [o.id for o in line.bundle.opks]
    assert len(handed) == 10 and len(set(handed)) == 10


def test_a_user_who_runs_low_is_asked_for_more_and_tops_up(world: World) -> None:
    world.add("alice"), world.add("bob")
    bob = world.peers["bob"]
    published = bob.state.mail.vault.count("opk")
    session = world.peers["alice"].session
    assert session is not None
    for _ in range(4):  # 4 x 16 one-time prekeys handed out while bob is online
        world.hub.handle(session, AskPrekeys("bob", 16), world.now)
        world.pump()
    assert world.store.add_one_time_prekeys("bob", [], MAX_OPKS_HELD) >= 20  # topped up
    assert bob.state.mail.vault.count("opk") > published


def test_prekeys_with_a_signature_not_of_the_users_key_are_refused(world: World) -> None:
    world.add("alice")
    session = world.peers["alice"].session
    assert session is not None
    _, public = new_prekey()
    session.outbox.lines.clear()
    world.hub.handle(
        session, PublishPrekeys(sign_prekey(SigningKey.generate(), 5, public)), world.now
    )
    assert any("does not carry your identity key" in x for x in session.outbox.lines)


# ---------------------------------------------------------- hostile lines


@given(st.text(max_size=300))
def test_any_prekey_line_parses_or_is_refused_cleanly(text: str) -> None:
    for line in (f"prekeys: {text}", f"prekey: {text}"):
        try:
            event = parse_client_line(line)
        except RemoteProtocolError:
            continue
        if isinstance(event, PublishPrekeys | AskPrekeys):
            again = format_client_event(event).decode().rstrip("\n")
            assert parse_client_line(again) == event
    try:
        bundle = parse_bundle(text)
    except RemoteProtocolError:
        return
    assert parse_bundle(format_bundle(bundle)) == bundle


def parse_server_line_of(data: bytes | str) -> ServerLine:
    text = data.decode() if isinstance(data, bytes) else data
    parsed = parse_server_line(text.rstrip("\n"))
    assert isinstance(parsed, ServerLine)
    return parsed


def parse_client_text(data: str) -> PrekeyBundle:
    event = parse_server_event(parse_server_line_of(data))
    assert isinstance(event, PrekeyBundle)
    return event


def test_the_inner_header_still_names_both_and_the_id(world: World) -> None:
    """Inside the seal, as before: from, to, id; a mail moved to another id
    or recipient is refused (tests/test_mail_peer.py covers the checks)."""
    [copy] = alice_mails_bob_offline(world, "inside")
    bob = world.peers["bob"]
    vault = PrekeyVault(world.tmp / "bob", bob.state.keys.identity)
    try:
        opened = open_mail_fs(bob.state.keys.identity, copy, vault.private)
    finally:
        vault.close()
    inner = json.loads(opened.plaintext)
    assert (inner["f"], inner["t"], inner["x"]) == ("alice", "bob", "inside")
