"""What rendezvous instances tell each other over the shared store (sans-IO).

Several ``chathack-rendezvous --redis URL`` instances act as one service.
Two kinds of message travel between them, both as JSON text:

* **presence** (one channel every instance reads): :class:`Here` -- NAME is
  online on instance I with fencing ``epoch`` E, at these addresses, with this
  key; :class:`Left` -- NAME's session of epoch E on I ended. The same
  :class:`PresenceRecord` is kept in a Redis hash, so a reader that missed a
  message (Redis pub/sub is at most once) catches up at the next resync.
* **instance operations** (one channel per instance, read by that instance
  only), in batches (a JSON array: one ``PUBLISH`` carries every operation
  queued for that instance since the last one):

  ``Deliver``  a line for a user on that instance (a relayed message, a ``PEER``
               answer, a ``FAILED``...); with ``origin`` for a relayed message,
               so a user gone meanwhile is answered ``FAILED msg NAME offline``
  ``Call``     the callee's half of ``connect:``: make the caller a partner,
               show the ``CALL`` line, answer the caller with ``PEER``
  ``PunchFrom`` the target's half of ``punch:``
  ``Ended``    the partner ended the conversation
  ``Gone``     the partner went offline
  ``Nudge``    mail or a receipt was stored for the user: deliver it
  ``Takeover`` the user logged in on that instance: here are the
               conversations its old session had

Everything read from the store is checked as strictly as a client's line: it
comes from the network, and one malformed message must cost that message,
never an instance (``tests/test_cluster_wire.py`` fuzzes :func:`decode_batch`
and :func:`decode_presence`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from chathack.errors import RemoteProtocolError
from chathack.grammar import KEY_RE, MAX_LINE_BYTES, NAME_RE
from chathack.server_lines import parse_server_line
from chathack.text import is_safe

#: An instance id: what ``--instance-id`` accepts (also part of Redis key names).
INSTANCE_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Most operations one batch may carry (a bigger one is split by the sender).
MAX_BATCH = 4096
#: Most names a Takeover lists (a session's partners are bounded far below this).
MAX_PARTNERS = 10_000
_MAX_LAN = 16


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    """Where NAME is online: instance, fencing epoch and what ``PEER`` tells."""

    name: str
    instance: str
    epoch: int
    ip: str
    port: int | None = None  # where it accepts direct links
    remote_port: int | None = None  # its connection to the rendezvous, after NAT
    lan: tuple[str, ...] | None = None  # None: not a chathack peer
    pubkey: str | None = None


@dataclass(frozen=True, slots=True)
class Here:
    record: PresenceRecord


@dataclass(frozen=True, slots=True)
class Left:
    name: str
    instance: str
    epoch: int


PresenceEvent = Here | Left


@dataclass(frozen=True, slots=True)
class Deliver:
    to: str
    line: str  # one whole server line, "\n" included
    origin: str | None = None  # set for a relayed message: bounced if ``to`` is gone


@dataclass(frozen=True, slots=True)
class Call:
    to: str
    caller: str
    line: str  # the CALL line for ``to``, made where the caller is


@dataclass(frozen=True, slots=True)
class PunchFrom:
    to: str
    caller: str
    ip: str
    port: int


@dataclass(frozen=True, slots=True)
class Ended:
    to: str
    by: str


@dataclass(frozen=True, slots=True)
class Gone:
    to: str
    by: str


@dataclass(frozen=True, slots=True)
class Nudge:
    to: str  # mail or a receipt waits for ``to``: deliver it


@dataclass(frozen=True, slots=True)
class Takeover:
    to: str
    epoch: int  # of the new session: an older takeover is ignored
    partners: tuple[str, ...]
    invited: tuple[str, ...]
    current: str | None


BusOp = Deliver | Call | PunchFrom | Ended | Gone | Nudge | Takeover


# -- checks ---------------------------------------------------------------
def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"Malformed cluster message: {what}")


def _name(v: object) -> str:
    if not isinstance(v, str) or not NAME_RE.fullmatch(v):
        raise _bad("bad name")
    return v


def _opt_name(v: object) -> str | None:
    return None if v is None else _name(v)


def _int(v: object, lo: int, hi: int) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _bad("bad number")
    return v


def _opt_port(v: object) -> int | None:
    return None if v is None else _int(v, 0, 65535)


def _text(v: object, most: int) -> str:
    if not isinstance(v, str) or len(v) > most:
        raise _bad("bad text")
    return v


def _line(v: object) -> str:
    line = _text(v, MAX_LINE_BYTES)
    if not line.endswith("\n") or "\n" in line[:-1] or "\r" in line:
        raise _bad("not one line")
    if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise _bad("line too long")
    if not is_safe(line[:-1]):
        # Every line a server writes is neutralised: one that is not did not
        # come from a chathack instance, and must not reach a terminal.
        raise _bad("unneutralised text")
    parse_server_line(line[:-1])  # a server line or a relayed one, or RemoteProtocolError
    return line


def _call_line(v: object) -> str:
    line = _line(v)
    if not line.startswith("Servidor[CALL]: "):
        raise _bad("a call carries a CALL line")
    return line


def _names(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or len(v) > MAX_PARTNERS:
        raise _bad("bad name list")
    return tuple(_name(x).lower() for x in v)


def _ip(v: object) -> str:
    ip = _text(v, 64)
    if not ip or any(c not in "0123456789abcdefABCDEF.:" for c in ip):
        raise _bad("bad address")
    return ip


def check_instance(v: object) -> str:
    if not isinstance(v, str) or not INSTANCE_RE.fullmatch(v):
        raise _bad("bad instance id")
    return v


# -- presence ---------------------------------------------------------------
def record_fields(r: PresenceRecord) -> list[object]:
    return [
        r.name,
        r.instance,
        r.epoch,
        r.ip,
        r.port,
        r.remote_port,
        None if r.lan is None else list(r.lan),
        r.pubkey,
    ]


def encode_record(r: PresenceRecord) -> str:
    return json.dumps(record_fields(r), separators=(",", ":"))


def _record(v: object) -> PresenceRecord:
    if not isinstance(v, list) or len(v) != 8:
        raise _bad("bad presence record")
    name, inst, epoch, ip, port, rport, lan, key = v
    if lan is not None and (not isinstance(lan, list) or len(lan) > _MAX_LAN):
        raise _bad("bad lan list")
    if key is not None and (not isinstance(key, str) or not KEY_RE.fullmatch(key)):
        raise _bad("bad key")
    return PresenceRecord(
        _name(name),
        check_instance(inst),
        _int(epoch, 1, 2**62),
        _ip(ip),
        _opt_port(port),
        _opt_port(rport),
        None if lan is None else tuple(_text(a, 64) for a in lan),
        key,
    )


def decode_record(text: str | bytes) -> PresenceRecord:
    return _record(_json(text))


def encode_presence(event: PresenceEvent) -> str:
    if isinstance(event, Here):
        return json.dumps(["here", record_fields(event.record)], separators=(",", ":"))
    return json.dumps(["left", event.name, event.instance, event.epoch], separators=(",", ":"))


def decode_presence(text: str | bytes) -> PresenceEvent:
    v = _json(text)
    if isinstance(v, list) and len(v) == 2 and v[0] == "here":
        return Here(_record(v[1]))
    if isinstance(v, list) and len(v) == 4 and v[0] == "left":
        return Left(_name(v[1]), check_instance(v[2]), _int(v[3], 1, 2**62))
    raise _bad("unknown presence event")


# -- operations ------------------------------------------------------------
def _op_fields(op: BusOp) -> list[object]:
    match op:
        case Deliver(to, line, origin):
            return ["D", to, line, origin]
        case Call(to, caller, line):
            return ["C", to, caller, line]
        case PunchFrom(to, caller, ip, port):
            return ["P", to, caller, ip, port]
        case Ended(to, by):
            return ["E", to, by]
        case Gone(to, by):
            return ["G", to, by]
        case Nudge(to):
            return ["N", to]
        case Takeover(to, epoch, partners, invited, current):
            return ["T", to, epoch, list(partners), list(invited), current]
    raise TypeError(f"not a bus operation: {op!r}")


def encode_batch(ops: list[BusOp]) -> str:
    return json.dumps([_op_fields(op) for op in ops], separators=(",", ":"), ensure_ascii=False)


def _op(v: object) -> BusOp:
    if not isinstance(v, list) or not v:
        raise _bad("bad operation")
    match v:
        case ["D", to, line, origin]:
            return Deliver(_name(to), _line(line), _opt_name(origin))
        case ["C", to, caller, line]:
            return Call(_name(to), _name(caller), _call_line(line))
        case ["P", to, caller, ip, port]:
            return PunchFrom(_name(to), _name(caller), _ip(ip), _int(port, 0, 65535))
        case ["E", to, by]:
            return Ended(_name(to), _name(by))
        case ["G", to, by]:
            return Gone(_name(to), _name(by))
        case ["N", to]:
            return Nudge(_name(to))
        case ["T", to, epoch, partners, invited, current]:
            return Takeover(
                _name(to),
                _int(epoch, 1, 2**62),
                _names(partners),
                _names(invited),
                _opt_name(current),
            )
    raise _bad("unknown operation")


def decode_batch(text: str | bytes) -> list[BusOp]:
    """The operations of one batch; raises :class:`RemoteProtocolError` for a
    malformed one (the whole batch is then dropped: its sender is broken)."""
    v = _json(text)
    if not isinstance(v, list) or len(v) > MAX_BATCH:
        raise _bad("a batch is a list")
    return [_op(x) for x in v]


def _json(text: str | bytes) -> object:
    if len(text) > MAX_BATCH * (MAX_LINE_BYTES + 256):
        raise _bad("too big")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _bad("not JSON") from e
