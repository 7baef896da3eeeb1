"""Hypothesis strategies shaped like each harness's input: protocol lines,
frames, and the decisions a :class:`~tests.fuzz.contract.Cursor` reads.

Arbitrary bytes reach the grammar's surface only; these reach its depth
(a keyword and then a hostile argument, a frame with one wrong field).
"""

from __future__ import annotations

import base64
import json

from hypothesis import strategies as st

from chathack.link import RELAY_PREFIX
from chathack.protocol import CLIENT_KEYWORDS, RECEIPT_FLAGS

#: Characters that have broken a parser or a terminal somewhere.
NASTY = (
    "\r\n\t\x00\x1b\x07\x7f\x85\x9b"
    "\u00a0\u200b\u200f\u2028\u2029\u202e\u2066\ufeff\U0001f600 :[]=,+-"
)
names = st.sampled_from(["alice", "bob", "BOB", "carol", "d" * 32, "Servidor", "b@d", ""])
words = st.text(st.sampled_from(NASTY) | st.characters(max_codepoint=0x2FF), max_size=24)
numbers = st.sampled_from(["0", "1", "65535", "65536", "007", "\u00b2", "-1", "9" * 40])
endpoints = st.builds(
    "{}:{}".format, st.sampled_from(["1.2.3.4", "[::1]", "::1", "", "x"]), numbers
)


def _line(*parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map(lambda p: "".join(p))


client_line_text = st.one_of(
    _line(st.sampled_from([f"{k}: " for k in CLIENT_KEYWORDS] + ["::", ":: "]), words),
    _line(st.sampled_from(["msg: ", "mail: ", "resume: "]), names, st.just(" "), words),
    _line(st.just("mail: "), names, st.just(" "), words, st.just(" "), words),
    _line(st.sampled_from(["ack: ", "read: "]), names, st.just(" "), words),
    _line(st.just("receipt: "), st.sampled_from(RECEIPT_FLAGS), st.just(" "), names, st.just(" x")),
    _line(st.sampled_from(["port: ", "lan: "]), numbers | endpoints),
    words,
)
server_line_text = st.one_of(
    _line(
        st.sampled_from(
            ["MAIL", "USERS", "PEER", "CALL", "STORED", "READ", "REFUSED", "SEEN", "PUNCH", "OK"]
        ).map("Servidor[{}]: ".format),
        st.lists(names | words | numbers | endpoints, max_size=5).map(" ".join),
    ),
    _line(names, st.sampled_from([": ", ":"]), words),
    words,
)


def _lines(line: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    ends = st.sampled_from(["\n", "\r\n", "\r", ""])
    return st.lists(st.tuples(line, ends), max_size=6).map(
        lambda ls: _utf8("".join(a + b for a, b in ls))
    )


client_bytes = _lines(client_line_text)
server_bytes = _lines(server_line_text)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | words,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=6,
)
_FIELDS = ["t", "name", "to", "epoch", "version", "via", "seq", "base", "text", "sent_at"]
_FIELDS += ["reason", "nonce", "sid", "e", "id", "sig"]
_FIELDS += ["fid", "size", "sha256", "kind", "relay", "have", "ok"]
_TYPES = ["hello", "chat", "ack", "bye", "ping", "pong", "kinit", "kreply"]
_TYPES += ["foffer", "faccept", "fack", "fdone", "fcancel"]
_file_values = st.sampled_from(
    ["0123456789abcdef", "0" * 64, "a" * 64, "x", "", "ABCDEF0123456789"]
)
frame_dicts = st.fixed_dictionaries(
    {"t": st.sampled_from(_TYPES)},
    optional={f: json_values | _file_values | st.integers(-1, 2**41) for f in _FIELDS[1:]},
)


def _frame_bytes(d: dict, how: int) -> bytes:
    body = _utf8(json.dumps(d, ensure_ascii=how % 2 == 0))
    if how == 2:
        return len(body).to_bytes(4, "big") + body
    if how == 3:
        return (RELAY_PREFIX + base64.urlsafe_b64encode(body).decode()).encode()
    return body


frame_bytes = st.builds(_frame_bytes, frame_dicts, st.integers(0, 3))


def _chunks(*parts: bytes) -> bytes:
    """Cursor chunks: a length byte, then the bytes (cut at 255)."""
    return b"".join(bytes([len(p[:255])]) + p[:255] for p in parts)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


conversation_bytes = st.builds(
    lambda lead, ops: bytes([lead]) + bytes(ops),
    st.integers(0, 1),
    st.lists(st.integers(0, 255), max_size=60),
)
handshake_bytes = st.builds(
    lambda choices, frames: bytes(choices) + _chunks(*frames),
    st.lists(st.integers(0, 3), max_size=6),
    st.lists(frame_bytes, max_size=3),
)
_sealed_ops = st.one_of(
    st.builds(lambda f: b"\0" + _chunks(f), frame_bytes),
    st.builds(lambda i: bytes([1, i]), st.integers(0, 9)),
    st.builds(lambda i, x: bytes([2, i, x, x]), st.integers(0, 9), st.integers(0, 255)),
    st.builds(
        lambda c, f: b"\4" + c.to_bytes(8, "big") + _chunks(f) + c.to_bytes(24, "big"),
        st.integers(0, 2**64 - 1) | st.integers(0, 5000),
        frame_bytes,
    ),
)
sealed_bytes = st.lists(_sealed_ops, max_size=10).map(b"".join)
_relayed = st.builds(
    lambda origin, d, how: _utf8(f"{origin}: ") + _frame_bytes(d, 3 if how else 0) + b"\n",
    st.sampled_from(["bob", "carol"]),
    frame_dicts,
    st.booleans(),
)
peer_bytes = st.lists(_relayed | server_bytes, max_size=5).map(b"".join)
_partner_ops = st.one_of(
    st.builds(lambda f: b"\0" + _chunks(f), frame_bytes),
    st.builds(
        lambda seq, epoch, base, text: (
            bytes([1, 2])  # a chat, its seq on 8 bytes
            + seq.to_bytes(8, "big")
            + bytes([epoch])
            + base.to_bytes(2, "big")
            + _chunks(_utf8(text))
        ),
        st.integers(0, 2**64 - 1) | st.integers(0, 10),
        st.integers(0, 1),
        st.integers(0, 2**16 - 1),
        words,
    ),
    st.builds(lambda i: bytes([2, i]), st.integers(0, 9)),
    st.builds(lambda f: b"\3" + _chunks(f), frame_bytes),
)
partner_bytes = st.lists(_partner_ops, max_size=10).map(b"".join)
mail_bytes = st.builds(
    lambda mode, trust, rest: bytes([mode, trust]) + rest,
    st.integers(0, 2),
    st.integers(0, 3),
    st.binary(max_size=40) | server_line_text.map(_utf8),
)
hub_bytes = st.lists(
    st.builds(
        lambda op, who, line: bytes([op, who]) + _chunks(_utf8(line)),
        st.integers(0, 7),
        st.integers(0, 3),
        client_line_text,
    ),
    max_size=10,
).map(b"".join)
stored_bytes = st.builds(
    lambda mails, rows: (
        bytes([len(mails)])
        + b"".join(_chunks(_utf8(i), _utf8(t)) + bytes([to]) for i, t, to in mails)
        + rows
    ),
    st.lists(st.tuples(words, words, st.integers(0, 2)), max_size=5),
    st.binary(max_size=60),
)

_cluster_names = st.sampled_from(["alice", "bob", "carol", "dave", "x" * 33, "", "b d"])
_cluster_lines = st.sampled_from(
    ["Servidor[OK]: hi\n", "carol: #ch1:abc\n", "bob: \x1b[2Jhi\n", "two\nlines\n", "no end"]
)
_cluster_ops = st.one_of(
    st.tuples(st.just("D"), _cluster_names, _cluster_lines, st.none() | _cluster_names),
    st.tuples(st.just("C"), _cluster_names, _cluster_names, _cluster_lines),
    st.tuples(st.just("P"), _cluster_names, _cluster_names, st.just("203.0.113.5"), numbers),
    st.tuples(st.sampled_from(["E", "G"]), _cluster_names, _cluster_names),
    st.tuples(
        st.just("T"),
        _cluster_names,
        st.integers(-1, 9),
        st.lists(_cluster_names, max_size=3),
        st.lists(_cluster_names, max_size=3),
        st.none() | _cluster_names,
    ),
).map(list)
_cluster_record = st.tuples(
    _cluster_names,
    st.sampled_from(["there", "here", "", "x/y"]),
    st.integers(-1, 9),
    st.sampled_from(["203.0.113.5", "::1", "evil host"]),
    st.none() | st.integers(-1, 70000),
    st.none() | st.integers(0, 65535),
    st.none() | st.lists(words, max_size=2),
    st.none() | st.just("mSOZnc9v2fqURD+yaLj6K3Xkz0JoPK4vP6hsu1dxMhM="),
).map(list)
_cluster_message = st.one_of(
    st.builds(
        lambda ops: bytes([0]) + _chunks(json.dumps(ops).encode()),
        st.lists(_cluster_ops, max_size=4),
    ),
    st.builds(lambda r: bytes([1]) + _chunks(json.dumps(["here", r]).encode()), _cluster_record),
    st.builds(
        lambda n, i, e: bytes([1]) + _chunks(json.dumps(["left", n, i, e]).encode()),
        _cluster_names,
        st.sampled_from(["there", "here"]),
        st.integers(0, 9),
    ),
    st.builds(lambda j: bytes([2]) + _chunks(json.dumps(j).encode()), json_values),
)
cluster_bytes = st.lists(_cluster_message, max_size=8).map(b"".join)

_chunk_ops = st.one_of(
    st.builds(
        lambda fid, off, data: (
            b"\0" + fid.to_bytes(8, "big") + off.to_bytes(8, "big") + _chunks(data)
        ),
        st.integers(0, 3),
        st.integers(0, 2**64 - 1),
        st.binary(max_size=64),
    ),
    st.builds(lambda i: bytes([1, i]), st.integers(0, 9)),
    st.builds(
        lambda i, at, x: bytes([2, i, at, x]),
        st.integers(0, 9),
        st.integers(0, 255),
        st.integers(0, 255),
    ),
    st.builds(
        lambda raw, skip: b"\3" + len(raw).to_bytes(2, "big") + raw + bytes([skip]),
        st.binary(max_size=90),
        st.integers(0, 1),
    ),
)
file_chunk_bytes = st.lists(_chunk_ops, max_size=10).map(b"".join)
_transfer_ops = st.one_of(
    st.builds(
        lambda content, fid, honest, whole, size, name, relay: (
            b"\0"
            + len(content).to_bytes(2, "big")
            + content
            + bytes([fid, honest, whole])
            + size.to_bytes(4, "big")
            + bytes([name, relay])
        ),
        st.binary(max_size=300),
        st.integers(0, 3),
        st.integers(0, 1),
        st.integers(0, 1),
        st.integers(0, 5000),
        st.integers(0, 9),
        st.integers(0, 1),
    ),
    st.builds(lambda f: bytes([1, f]), st.integers(0, 1)),
    st.just(b"\2"),
    st.builds(
        lambda i, at, honest, n: (
            bytes([3, i]) + at.to_bytes(4, "big") + bytes([honest]) + n.to_bytes(4, "big")
        ),
        st.integers(0, 3),
        st.integers(0, 302),
        st.integers(0, 1),
        st.integers(0, 699),
    ),
    st.builds(lambda i, k: bytes([4, i, k, 0, 0, 0, 9, 1]), st.integers(0, 3), st.integers(0, 3)),
    st.builds(lambda t: bytes([5]) + t.to_bytes(4, "big"), st.integers(0, 699)),
    st.just(b"\6"),
)
file_transfer_bytes = st.lists(_transfer_ops, max_size=24).map(b"".join)

#: For each harness, the grammar-shaped strategy (arbitrary bytes are tried besides).
SHAPED: dict[str, st.SearchStrategy[bytes]] = {
    "client_line": client_bytes,
    "server_line": server_bytes,
    "link_frame": frame_bytes,
    "conversation": conversation_bytes,
    "handshake": handshake_bytes,
    "sealed": sealed_bytes,
    "file_chunks": file_chunk_bytes,
    "file_transfer": file_transfer_bytes,
    "peer_server_events": peer_bytes,
    "partner_frames": partner_bytes,
    "mail_payload": mail_bytes,
    "hub_lines": hub_bytes,
    "stored_rows": stored_bytes,
    "cluster_messages": cluster_bytes,
}
