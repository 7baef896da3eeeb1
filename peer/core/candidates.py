"""Where a partner may be reached, as the rendezvous tells it."""

from __future__ import annotations

from dataclasses import dataclass

from chathack.protocol import PeerAddress, parse_endpoint


@dataclass(frozen=True, slots=True)
class Candidates:
    """Where a partner may be reached, from a ``Servidor[PEER]``/``[CALL]`` line."""

    name: str
    addrs: tuple[tuple[str, int], ...]  # where it listens
    public: tuple[str, int] | None  # its rendezvous connection, as the server sees it
    frames: bool  # a chathack peer (speaks link frames), not a plain text client
    #: From a ``CALL``: the partner asked to talk to us, so we may ask the
    #: rendezvous for a punch toward it (it gives each side's address only to
    #: those it called; docs/PROTOCOL.md 3.3).
    called: bool = False


def candidates_of(addr: PeerAddress, called: bool = False) -> Candidates:
    extra = dict(addr.extra)
    addrs: list[tuple[str, int]] = []
    for item in extra.get("lan", "").split(","):
        ep = parse_endpoint(item)
        if ep is not None and ep not in addrs:
            addrs.append(ep)
    if addr.host is not None and addr.port is not None and (addr.host, addr.port) not in addrs:
        addrs.append((addr.host, addr.port))
    public = parse_endpoint(extra.get("public", ""))
    return Candidates(addr.name, tuple(addrs), public, "lan" in extra, called)
