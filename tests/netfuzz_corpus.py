"""The network fuzz test's corpus (tests/test_netfuzz.py), sans-IO: seed lines
and frames, the operators that mutate them, and the session plans.

Everything here is a pure function of a seed (:data:`FUZZ_SEED`) and of what
the fuzzers aim at (:class:`Target`), so a failure can be replayed, and the
coverage pass -- every operator on every seed at least once -- is checked
without a network (``test_fuzz_corpus_covers_every_operator_on_every_seed``).

* Rendezvous lines: :data:`PRE_LOGIN_SEEDS` and :data:`LOGGED_IN_SEEDS`
  (docs/PROTOCOL.md 1.2), their ``{slots}`` filled by :func:`render`, then
  mutated by :func:`mutate_line` (:data:`LINE_OPS`).
* Link frames (chathack/link.py, chathack/secure.py): :data:`FRAME_SEEDS`,
  mutated at the JSON level by :data:`FRAME_OPS`; the framing of a direct
  stream damaged by :data:`STREAM_OPS`; the contents of sealed mail by
  :data:`MAIL_OPS`; the key exchange itself by :data:`KX_OPS`.
* Plans: :func:`rendezvous_plans` and :func:`direct_plans` yield the coverage
  pass, then random sessions.

:func:`loopback_only` rewrites any ``lan:`` line that would make a peer dial
outside 127.0.0.0/8 (a bit flip turns 127 into 125).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import random
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from nacl.signing import SigningKey

from chathack.errors import RemoteProtocolError
from chathack.link import MAX_FRAME_BYTES
from chathack.protocol import MAX_LINE_BYTES, Lan, parse_client_line
from chathack.secure import b64, seal_mail

#: Seed of the whole run (fixed; ``$CHATHACK_FUZZ_SEED`` replays another).
FUZZ_SEED = int(os.environ.get("CHATHACK_FUZZ_SEED", "1729"))
#: Fuzz connections to the rendezvous at a time (each has an account fzrN).
RV_WORKERS = 24
#: Random sessions after the coverage pass, at most (the time limit comes first).
EXTRA_SESSIONS = 600

#: The lines the issue names: a CR inside a logged-in command killed the rendezvous.
KNOWN_CRASHERS = ("::us\rers", "::he\rlp", "::whois\r alice", "::users\r", "::\r")
#: Operators to leave out, for triage: after a crash, replay without the operator
#: that found it to look for the next ("cr_inside", or "line:cr_inside" for one
#: family: line, frame, mail, stream, kx; "known" drops KNOWN_CRASHERS).
SKIP = frozenset(filter(None, os.environ.get("CHATHACK_FUZZ_SKIP", "").split(",")))


def active(family: str, names: Iterable[str]) -> list[str]:
    """The operators of ``family`` (line, frame, mail, stream, kx) not in :data:`SKIP`."""
    return [n for n in names if n not in SKIP and f"{family}:{n}" not in SKIP]


# --------------------------------------------------------------------------
# What the fuzzers aim at, and who they are
# --------------------------------------------------------------------------


@dataclass
class Target:
    rv_port: int
    peer_ports: dict[str, int]  # name -> direct-link port
    peer_keys: dict[str, bytes]  # name -> identity key (as the rendezvous vouches)

    @property
    def ports(self) -> list[int]:
        """Ports ``port:`` and ``lan:`` lines name: ours, the peers', the server's, odd ones."""
        return [self.rv_port, *self.peer_ports.values(), 1, 9, 65535]


@dataclass
class Fuzzer:
    """One fuzz connection slot: its source address and (for the rendezvous) account."""

    index: int
    ip: str
    name: str
    password: str
    identity: SigningKey
    epoch: str
    token: str | None = None
    lure_port: int = 0  # its listener, which answers the peers' dials with junk


def make_fuzzer(kind: str, index: int, ip: str) -> Fuzzer:
    rng = random.Random(f"{FUZZ_SEED}:{kind}:{index}")
    return Fuzzer(
        index,
        ip,
        name=f"fz{kind}{index}",
        password=f"fuzz-pw-{rng.getrandbits(48):x}",
        identity=SigningKey(rng.randbytes(32)),
        epoch=rng.randbytes(8).hex(),
    )


# --------------------------------------------------------------------------
# Seed lines and line operators (the rendezvous grammar, docs/PROTOCOL.md 1.2)
# --------------------------------------------------------------------------

#: Lines for a connection that has not logged in ({fresh}: a name nobody has).
PRE_LOGIN_SEEDS = tuple(
    """
username: {fresh}
username: {peer}
password: {pw}
resume: {me} {token}
::quit
::users
connect: {peer}
{text}
""".strip().splitlines()
)
#: Lines for a logged-in connection ({peer}: mostly alice or bob).
LOGGED_IN_SEEDS = tuple(
    """
::users
::help
::ping {word}
::mailbox
::end {peer}
::end
::passwd
::whois {peer}
::{word} {text}
::quit
connect: {peer}
punch: {peer}
msg: {peer} {text}
msg: {peer} {frame}
mail: {peer} {mid} {text}
mail: {peer} {mid} {sealed}
ack: {peer} {mid}
read: {peer} {mid}
receipt: DELIVERED {peer} {mid}
port: {port}
lan: {lan}
lan: -
key: {key}
{text}
username: {me}
password: {pw}
resume: {me} {token}
""".strip().splitlines()
)

ODD_NAMES = (
    "",
    "a" * 33,
    "a" * 2000,
    "x" * 15000,
    "Servidor",
    "SERVIDOR",
    "ALICE",
    "alice ",
    " bob",
    "ñandú",
    "al\u200bice",
    "bob\u202e",
    "..",
    "-",
    "a b",
    "alice\tbob",
    "0",
    "nobody",
    "\U0001f600",
    "\uff41\uff4c\uff49\uff43\uff45",  # fullwidth alice
)
ODD_UNICODE = (
    "\u202e",
    "\u200b",
    "\u2028",
    "\u2029",
    "\u0085",
    "\ufeff",
    "\U0001f600",
    "e\u0301\u0301\u0301",
    "\u00a0",
    "\ufffd",
    "\U000e0041",
    "\u061c",
)
ESCAPES = (
    b"\x1b[2J",
    b"\x1b]0;owned\x07",
    b"\x1b]8;;http://127.0.0.1/\x1b\\link\x1b]8;;\x1b\\",
    b"\x1b[31m",
    b"\xc2\x9b31m",  # U+009B: a one-character CSI
    b"\x1bP+q\x1b\\",
    b"\x07",
)
BAD_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    b"\x80",
)
CONTROLS = bytes([*range(0, 9), 11, 12, *range(14, 32), 127])


def _text(rng: random.Random) -> str:
    words = [
        "hi",
        "hola",
        "ça",
        "va",
        "漢字",
        "\U0001f44b",
        "#ch1:",
        "#cm1:",
        "Servidor[OK]:",
        "::",
    ]
    words += ["x" * rng.randint(1, 12)]
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))


def _relay_frame(rng: random.Random, me: str, to: str, epoch: str, sub: tuple | None) -> str:
    seed, op = sub if sub else (rng.choice(FRAME_SEEDS), rng.choice(active("frame", FRAME_OPS)))
    body = mutate_frame(rng, seed, op, me, to, epoch)
    return "#ch1:" + base64.urlsafe_b64encode(body).rstrip(b"=").decode("ascii")


def _sealed_mail(
    rng: random.Random, w: Fuzzer, t: Target, peer: str, mid: str, sub: str | None
) -> str:
    key = t.peer_keys.get(peer.lower()) or rng.choice(list(t.peer_keys.values()))
    inner = mutate_mail(rng, sub or rng.choice(active("mail", MAIL_OPS)), w.name, peer, mid)
    return seal_mail(w.identity, key, inner)


def render(template: str, rng: random.Random, w: Fuzzer, t: Target, sub: object = None) -> str:
    """``template`` with its {slots} filled for fuzzer ``w``."""
    peers = [*t.peer_keys, *t.peer_keys, "nobody", f"fzr{rng.randrange(RV_WORKERS)}"]
    peer = rng.choice(peers)
    if "{sealed}" in template and isinstance(sub, tuple):  # (addressee, mail operator)
        peer, sub = sub
    mid = f"m{rng.randrange(10**6)}"
    port = rng.choice([w.lure_port or 1, w.lure_port or 2, *t.ports])
    values = {
        "fresh": f"fzn{rng.getrandbits(40):x}",
        "peer": peer,
        "me": w.name,
        "pw": rng.choice(["x", "pw", "not-the-password", "  spaced  ", "p" * 200]),
        "token": w.token or "A" * 22,
        "text": _text(rng),
        "word": rng.choice(["x", "users", "frobnicate", "PING", "123"]),
        "mid": mid,
        "port": str(port),
        "lan": " ".join(f"{w.ip}:{rng.choice([port, *t.ports])}" for _ in range(rng.randint(1, 9))),
        "key": b64(bytes(w.identity.verify_key)),
    }
    if "{frame}" in template:
        values["frame"] = _relay_frame(rng, w.name, peer, w.epoch, sub)  # type: ignore[arg-type]
    if "{sealed}" in template:
        values["sealed"] = _sealed_mail(rng, w, t, peer, mid, sub)  # type: ignore[arg-type]
    return template.format(**values)


def _interior(rng: random.Random, data: bytes) -> int:
    return rng.randint(1, len(data) - 1) if len(data) > 1 else len(data)


def _insert(rng: random.Random, data: bytes, what: bytes) -> bytes:
    at = _interior(rng, data)
    return data[:at] + what + data[at:]


def bitflip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data or b"?")
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _odd_name(rng: random.Random, template: str, w: Fuzzer, t: Target) -> str:
    odd = rng.choice(ODD_NAMES)
    for slot in ("{peer}", "{me}", "{fresh}"):
        if slot in template:
            return render(template.replace(slot, odd.replace("{", "(")), rng, w, t)
    head, _, _ = render(template, rng, w, t).partition(" ")
    return f"{head} {odd}"


def _mangle_keyword(rng: random.Random, line: str) -> str:
    head, sep, rest = line.partition(":") if not line.startswith("::") else ("::", "", line[2:])
    variants = [f"{head.upper()}{sep}{rest}", f"{head} {sep}{rest}", f"{head}{sep}{sep}{rest}"]
    variants += [f" {line}", f"{head}{sep}\t{rest.lstrip()}", f"{head}{sep}{rest.lstrip()}"]
    variants += [f"::{line}", f":{line}", f"{line}:", line.replace(" ", "  ", 1), line.upper()]
    return rng.choice(variants)


# Delivery of one piece: "whole" (one write), "drip" (1-3 bytes a write, paced),
# "runaway" (4 KiB writes, paced: the server must skip a line it never sees whole),
# "end" (nothing may follow it: a half line then EOF), "reset" (then an abrupt reset).
Piece = tuple[bytes, str]


def _filler(rng: random.Random, size: int) -> bytes:
    return rng.choice([b"A", b"\xc3\xa9", b"x y ", b"#ch1:"]) * (size // 2) + rng.randbytes(
        size // 2
    ).replace(b"\n", b" ")


#: Line operators: each turns a seed line into the bytes of one mutated line.
LINE_OPS = tuple(
    [
        "bitflip",
        "control",
        "cr_inside",
        "escape",
        "bad_utf8",
        "odd_unicode",
        "odd_name",
        "keyword",
        "line_ending",
        "oversize",
        "runaway",
        "split",
        "cut_short",
        "half_line",
        "reset_inside",
    ]
)


def mutate_line(rng: random.Random, op: str, template: str, w: Fuzzer, t: Target) -> Piece:
    """Seed line ``template`` (rendered for ``w``) after line operator ``op``."""
    if op == "odd_name":
        return _odd_name(rng, template, w, t).encode() + b"\n", "whole"
    if op == "keyword":
        return _mangle_keyword(rng, render(template, rng, w, t)).encode() + b"\n", "whole"
    line = render(template, rng, w, t).encode("utf-8", "surrogateescape")
    match op:
        case "bitflip":
            return bitflip(rng, line) + b"\n", "whole"
        case "control":
            return _insert(rng, line, bytes([rng.choice(CONTROLS)])) + b"\n", "whole"
        case "cr_inside":
            return _insert(rng, line, b"\r") + b"\n", "whole"
        case "escape":
            return _insert(rng, line, rng.choice(ESCAPES)) + b"\n", "whole"
        case "bad_utf8":
            return _insert(rng, line, rng.choice(BAD_UTF8)) + b"\n", "whole"
        case "odd_unicode":
            return _insert(rng, line, rng.choice(ODD_UNICODE).encode()) + b"\n", "whole"
        case "line_ending":
            return line + rng.choice([b"\r\n", b"\r\r\n", b" \r\n", b"\r \n", b"\n\n"]), "whole"
        case "oversize":
            return line + _filler(rng, MAX_LINE_BYTES + rng.randint(1, 100_000)) + b"\n", "whole"
        case "runaway":
            return line + _filler(rng, MAX_LINE_BYTES + rng.randint(1, 40_000)) + b"\n", "runaway"
        case "split":
            return line + b"\n", "drip"
        case "cut_short":
            return line[: _interior(rng, line)] + b"\n", "whole"
        case "half_line":
            return line[: _interior(rng, line)], "end"
        case "reset_inside":
            return line[: _interior(rng, line)], "reset"
    raise ValueError(f"no line operator {op!r}")


#: Operators after which the session must end (they leave a line unfinished).
ENDING_OPS = frozenset({"half_line", "reset_inside"})


def loopback_only(data: bytes) -> bytes:
    """``data`` with every ``lan:`` line that names an address outside 127.0.0.0/8
    replaced: the peers dial what ``lan:`` announces, and this test must never
    make anybody send a packet off loopback (a bit flip turns 127 into 125)."""
    out = []
    for line in data.split(b"\n"):
        text = line[:-1] if line.endswith(b"\r") else line  # as LineBuffer frames it
        if text.startswith(b"lan:"):  # the only lines that parse as Lan
            try:
                event = parse_client_line(text.decode("utf-8"))
                safe = not isinstance(event, Lan) or all(_is_loopback(a) for a in event.addrs)
            except RemoteProtocolError:
                safe = True  # refused by the server too: it announces nothing
            except Exception:
                safe = False  # not sure: never send it
            if not safe:
                line = b"lan: -"
        out.append(line)
    return b"\n".join(out)


def _is_loopback(endpoint: str) -> bool:
    host = endpoint.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.IPv4Address(host) in ipaddress.IPv4Network("127.0.0.0/8")
    except ValueError:
        return False


# --------------------------------------------------------------------------
# Seed frames and frame operators (chathack/link.py, chathack/secure.py)
# --------------------------------------------------------------------------

FRAME_SEEDS = tuple(
    ["hello", "kinit", "kreply", "kconfirm", "ping", "pong", "chat", "ack", "bye", "sealed"]
)
_RAW = "\x00RAW\x00"  # a placeholder replaced by raw JSON text


def frame_dict(rng: random.Random, seed: str, me: str, to: str, epoch: str) -> dict:
    def key(n: int) -> str:
        return b64(rng.randbytes(n))

    sid = rng.randbytes(8).hex()
    seq = rng.randint(1, 50)
    return {
        "hello": {"t": "hello", "name": me, "to": to, "epoch": epoch, "version": 1, "via": "dial"},
        "kinit": {"t": "kinit", "sid": sid, "e": key(32)},
        "kreply": {"t": "kreply", "sid": sid, "e": key(32), "id": key(32), "sig": key(64)},
        "kconfirm": {"t": "kconfirm", "sid": sid, "id": key(32), "sig": key(64)},
        "ping": {"t": "ping", "nonce": rng.randint(0, 1000)},
        "pong": {"t": "pong", "nonce": rng.randint(0, 1000)},
        "chat": {
            "t": "chat",
            "epoch": epoch,
            "seq": seq,
            "base": rng.randint(1, seq),
            "text": _text(rng),
            "sent_at": 1.7e9 + rng.random(),
        },
        "ack": {"t": "ack", "epoch": epoch, "seq": seq},
        "bye": {"t": "bye", "reason": "quit"},
    }[seed]


def _dumps(d: dict, raw: str = "") -> bytes:
    # ensure_ascii: a lone surrogate becomes the JSON escape \ud800, which a
    # decoder turns back into a str no UTF-8 encoder accepts.
    return json.dumps(d, ensure_ascii=True).replace(json.dumps(_RAW), raw).encode()


def _some_field(rng: random.Random, d: dict, kind: type | None = None) -> str:
    names = [k for k, v in d.items() if k != "t" and (kind is None or type(v) is kind)]
    return rng.choice(names or [k for k in d if k != "t"] or ["t"])


def _json_op(
    change: Callable[[random.Random, dict], str],
) -> Callable[[random.Random, dict], bytes]:
    def op(rng: random.Random, d: dict) -> bytes:
        raw = change(rng, d)
        return _dumps(d, raw)

    return op


def _set(rng: random.Random, d: dict, value: object, kind: type | None = None) -> str:
    d[_some_field(rng, d, kind)] = value
    return ""


def _set_raw(rng: random.Random, d: dict, raw: str, kind: type | None = None) -> str:
    d[_some_field(rng, d, kind)] = _RAW
    return raw


FrameOp = Callable[[random.Random, dict], bytes]
#: Frame operators: each turns a seed frame (a dict) into the bytes of a frame.
FRAME_OPS: dict[str, FrameOp] = {
    "valid": _json_op(lambda rng, d: ""),
    "surrogate": _json_op(
        lambda rng, d: _set(rng, d, rng.choice(["\ud800", "a\udfff", "\udcff"]), str)
    ),
    "control": _json_op(
        lambda rng, d: _set(
            rng, d, rng.choice(["\x1b[2J", "a\rb", "\x00", "\x9b1m", "\u202e"]), str
        )
    ),
    "wrong_type": _json_op(
        lambda rng, d: _set(rng, d, rng.choice([None, True, 1.5, [], {}, "1", -1, 2**70]))
    ),
    "missing": _json_op(lambda rng, d: str(d.pop(_some_field(rng, d), "")) and ""),
    "extra": _json_op(lambda rng, d: str(d.update({"zz": [1] * 50, "t2": "chat"})) and ""),
    "big_number": _json_op(
        lambda rng, d: _set_raw(
            rng, d, rng.choice(["1" + "0" * 5000, "1e999", "-1e999", "NaN", "-0"])
        )
    ),
    "deep_nest": _json_op(lambda rng, d: _set_raw(rng, d, "[" * 3000 + "]" * 3000)),
    "bad_type": _json_op(
        lambda rng, d: str(d.update(t=rng.choice(["", "HELLO", "hellø", 7, None, "sealed"]))) and ""
    ),
    "odd_name": _json_op(lambda rng, d: _set(rng, d, rng.choice(ODD_NAMES), str)),
    "long_string": _json_op(
        lambda rng, d: _set(rng, d, "x" * rng.choice([3000, 60_000, MAX_FRAME_BYTES + 10]), str)
    ),
    "bitflip": lambda rng, d: bitflip(rng, _dumps(d)),
    "bad_utf8": lambda rng, d: _insert(rng, _dumps(d), rng.choice(BAD_UTF8)),
    "cut_short": lambda rng, d: (lambda b: b[: _interior(rng, b)])(_dumps(d)),
    "not_an_object": lambda rng, d: rng.choice([b"", b"{}", b"null", b"[]", b'"hello"', b"{" * 40]),
}


def mutate_frame(rng: random.Random, seed: str, op: str, me: str, to: str, epoch: str) -> bytes:
    """The bytes of one frame: seed frame ``seed`` after frame operator ``op``."""
    if seed == "sealed":  # binary, not JSON: only the byte-level operators apply
        body = b"\x01" + rng.randbytes(rng.choice([0, 8, 24, 48, 120]))
        match op:
            case "bitflip":
                return bitflip(rng, body)
            case "bad_utf8":
                return _insert(rng, body, rng.choice(BAD_UTF8))
            case "cut_short":
                return body[: _interior(rng, body)]
            case "long_string":
                return b"\x01" + rng.randbytes(rng.choice([3000, 60_000]))
            case "not_an_object":
                return FRAME_OPS[op](rng, {})
        return body
    return FRAME_OPS[op](rng, frame_dict(rng, seed, me, to, epoch))


#: What goes inside sealed mail (peer/mail.py reads {"f","t","i","x","a"}).
MailOp = Callable[[random.Random, dict], bytes]
MAIL_OPS: dict[str, MailOp] = {
    "valid": lambda rng, d: _dumps(d),
    "escape_text": lambda rng, d: _dumps({**d, "x": "\x1b[2J\x1b]0;owned\x07 look"}),
    "cr_text": lambda rng, d: _dumps({**d, "x": "hi\r\nbob: a forged line"}),
    "c1_text": lambda rng, d: _dumps({**d, "x": "\x9b31m red \x85 next"}),
    "surrogate_text": lambda rng, d: _dumps({**d, "x": "\ud800 lone"}),
    "bidi_text": lambda rng, d: _dumps({**d, "x": "\u202eevil\u2066"}),
    "huge_text": lambda rng, d: _dumps({**d, "x": "M" * 7000}),
    "deep_nest": lambda rng, d: b"[" * 3000 + b"]" * 3000,
    "not_json": lambda rng, d: rng.randbytes(64),
    "not_object": lambda rng, d: rng.choice([b"[1,2]", b'"x"', b"null", b"1e999"]),
    "text_type": lambda rng, d: _dumps({**d, "x": rng.choice([5, None, ["a"], {"a": 1}])}),
    "wrong_header": lambda rng, d: _dumps({**d, rng.choice("fti"): rng.choice(["bob", "", 1])}),
}


def mutate_mail(rng: random.Random, op: str, me: str, to: str, mid: str) -> bytes:
    return MAIL_OPS[op](
        rng, {"f": me, "t": to, "i": mid, "x": _text(rng), "a": 1.7e9 + rng.random()}
    )


#: Stream operators for a direct port: they damage the framing itself.
STREAM_OPS = tuple(
    [
        "huge_length",
        "over_max_length",
        "short_length",
        "long_length",
        "zero_length",
        "junk_first",
        "line_protocol",
        "http",
        "tls_hello",
        "drip",
        "half_frame",
        "reset_inside",
        "silent",
        "repeated",
    ]
)


def stream_bytes(rng: random.Random, op: str, body: bytes) -> list[Piece]:
    """A raw direct-link stream: frame ``body`` with its framing damaged by ``op``."""
    pack = struct.Struct(">I").pack
    whole = pack(len(body)) + body
    match op:
        case "huge_length":
            return [(pack(0xFFFFFFFF) + body, "whole")]
        case "over_max_length":
            return [(pack(MAX_FRAME_BYTES + 1) + body, "whole")]
        case "short_length":
            return [(pack(len(body) // 2) + body, "whole")]
        case "long_length":
            return [(pack(len(body) + rng.randint(1, 5000)) + body, "whole")]
        case "zero_length":
            return [(pack(0) + whole, "whole")]
        case "junk_first":
            return [(rng.randbytes(rng.randint(1, 64)) + whole, "whole")]
        case "line_protocol":
            return [(b"username: alice\npassword: x\n::users\n", "whole")]
        case "http":
            return [(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "whole")]
        case "tls_hello":
            return [(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + rng.randbytes(160), "whole")]
        case "drip":
            return [(whole, "drip")]
        case "half_frame":
            return [(whole[: _interior(rng, whole)], "end")]
        case "reset_inside":
            return [(whole[: _interior(rng, whole)], "reset")]
        case "silent":
            return [(b"", "end")]
        case _:  # "repeated"
            return [(whole * rng.randint(2, 40), "whole")]


# --------------------------------------------------------------------------
# Session plans: the coverage pass, then random sessions
# --------------------------------------------------------------------------


@dataclass
class LinePlan:
    template: str
    op: str
    salt: int
    sub: object = None  # (frame seed, frame op) or a mail op, for {frame}/{sealed}


@dataclass
class RvPlan:
    """One connection to the rendezvous."""

    logged_in: bool  # log in (as the fuzzer's account) before the lines
    lines: list[LinePlan]
    end: str  # "eof", "reset", "idle" or "close"
    lure: bool = False  # first announce a listener and call alice or bob
    coverage: bool = False


@dataclass
class DirectPlan:
    """One connection to a peer's direct port."""

    target: str  # alice or bob
    # "raw" (no handshake), "hello" (after a valid hello), "sealed" (after a key exchange)
    stage: str
    frames: list[tuple[str, str, int]]  # (seed, frame op, salt)
    stream_op: str | None  # for "raw"
    end: str
    coverage: bool = False
    kx: str = "honest"  # for "sealed": how the fuzzer runs the key exchange (KX_OPS)


def _chunks(items: list, size: int, rng: random.Random) -> list[list]:
    """Items in chunks of at most ``size``; an item that ends its session goes last."""
    rng.shuffle(items)
    enders = [i for i in items if ends_session(i)]
    others = [i for i in items if not ends_session(i)]
    chunks = [others[k : k + size - 1] for k in range(0, len(others), size - 1)]
    for k, ender in enumerate(enders):
        if k < len(chunks):
            chunks[k].append(ender)
        else:
            chunks.append([ender])
    return chunks


def ends_session(item: object) -> bool:
    if isinstance(item, LinePlan):
        valid_quit = ("as_is", "split", "line_ending", "keyword")
        return item.op in ENDING_OPS or (item.template == "::quit" and item.op in valid_quit)
    return False


def rendezvous_plans(rng: random.Random, peers: tuple[str, ...]) -> Iterator[RvPlan]:
    """The coverage pass (every line operator on every seed line, before and
    after login; every frame and mail operator through the relay; the known
    crashers), then random sessions."""
    salt = rng.getrandbits
    known = [LinePlan(line, "as_is", salt(32)) for line in KNOWN_CRASHERS if "known" not in SKIP]
    yield RvPlan(True, known, "close", coverage=True)
    line_ops, frame_ops, mail_ops = (
        active("line", LINE_OPS),
        active("frame", FRAME_OPS),
        active("mail", MAIL_OPS),
    )
    post = [LinePlan(s, op, salt(32)) for s in LOGGED_IN_SEEDS for op in line_ops]
    post += [
        LinePlan("msg: {peer} {frame}", "as_is", salt(32), (seed, op))
        for seed in FRAME_SEEDS
        for op in frame_ops
    ]
    post += [
        LinePlan("mail: {peer} {mid} {sealed}", "as_is", salt(32), (peer, op))
        for peer in peers
        for op in mail_ops
    ]
    pre = [LinePlan(s, op, salt(32)) for s in PRE_LOGIN_SEEDS for op in line_ops]
    plans = [RvPlan(True, c, rng.choice(ENDS), coverage=True) for c in _chunks(post, 8, rng)]
    # At most 4 lines before login: the fifth failed attempt closes the connection.
    plans += [RvPlan(False, c, rng.choice(ENDS), coverage=True) for c in _chunks(pre, 4, rng)]
    # Logins: a fresh name, then the password line under every operator (half
    # finished, reset, oversized ...); and logins abandoned after the name.
    plans += [
        RvPlan(
            False,
            [
                LinePlan("username: {fresh}", "as_is", salt(32)),
                LinePlan("password: {pw}", op, salt(32)),
            ],
            rng.choice(ENDS),
            coverage=True,
        )
        for op in line_ops
    ]
    plans += [
        RvPlan(False, [LinePlan(name, "as_is", salt(32))], end, coverage=True)
        for name in ("username: {fresh}", "username: {peer}")
        for end in ENDS
    ]
    plans += [RvPlan(True, [], "close", lure=True, coverage=True) for _ in range(4)]
    rng.shuffle(plans)
    yield from plans
    for _ in range(EXTRA_SESSIONS):
        logged_in = rng.random() < 0.6
        seeds = LOGGED_IN_SEEDS if logged_in else PRE_LOGIN_SEEDS
        n = rng.randint(1, 10 if logged_in else 4)
        lines = [
            LinePlan(rng.choice(seeds), rng.choice([*line_ops, "as_is"]), salt(32))
            for _ in range(n)
        ]
        lines = _chunks(lines, n + 1, rng)[0] if lines else lines
        yield RvPlan(logged_in, lines, rng.choice(ENDS), lure=rng.random() < 0.05)


ENDS = ("eof", "reset", "idle", "close")


def direct_plans(rng: random.Random, peers: tuple[str, ...]) -> Iterator[DirectPlan]:
    """The coverage pass (every frame operator on every seed frame, after a
    hello and inside a sealed session; every stream operator on every seed
    frame before any hello), then random sessions."""
    salt = rng.getrandbits
    frame_ops, stream_ops = active("frame", FRAME_OPS), active("stream", STREAM_OPS)
    plans: list[DirectPlan] = []
    for stage in ("hello", "sealed"):
        items = [(seed, op, salt(32)) for seed in FRAME_SEEDS for op in frame_ops]
        rng.shuffle(items)
        for k in range(0, len(items), 6):
            plans.append(
                DirectPlan(rng.choice(peers), stage, items[k : k + 6], None, rng.choice(ENDS), True)
            )
    for seed in FRAME_SEEDS:
        for op in stream_ops:
            plans.append(
                DirectPlan(rng.choice(peers), "raw", [(seed, "valid", salt(32))], op, "close", True)
            )
    for peer in peers:
        for kx in active("kx", KX_OPS):
            frames = [("chat", "valid", salt(32)), ("ping", "valid", salt(32))]
            plans.append(DirectPlan(peer, "sealed", frames, None, "close", True, kx))
    rng.shuffle(plans)
    yield from plans
    for _ in range(EXTRA_SESSIONS):
        stage = rng.choice(["raw", "hello", "sealed", "sealed"])
        n = 1 if stage == "raw" else rng.randint(1, 8)
        frames = [(rng.choice(FRAME_SEEDS), rng.choice(frame_ops), salt(32)) for _ in range(n)]
        op = rng.choice(stream_ops) if stage == "raw" else None
        yield DirectPlan(rng.choice(peers), stage, frames, op, rng.choice(ENDS))


def render_session(plan: RvPlan, w: Fuzzer, t: Target) -> list[Piece]:
    pieces: list[Piece] = []
    for item in plan.lines:
        rng = random.Random(item.salt)
        if item.op == "as_is":
            line = render(item.template, rng, w, t, item.sub).encode("utf-8", "surrogateescape")
            pieces.append((line + b"\n", "whole"))
        else:
            pieces.append(mutate_line(rng, item.op, item.template, w, t))
    joined = b"".join(p for p, _ in pieces)
    if loopback_only(joined) != joined:  # rare: keep the rewrite, lose the pacing
        return [(loopback_only(joined), "whole")]
    return pieces


#: How a fuzzer runs the key exchange: honestly, or offering an X25519
#: "public key" of small order (all zeros, or the point 1), which every check
#: before the key agreement accepts: it is 32 bytes, and the fuzzer signs it.
KX_OPS = ("honest", "low_order_zero", "low_order_one")
