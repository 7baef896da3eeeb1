"""``::netcheck``: what this peer knows about its network, in plain sentences
(the way ``tailscale netcheck`` explains a NAT to its user)."""

from __future__ import annotations

from peer.events import PathName
from peer.server_link import ServerLink


def nat_verdict(local_ip: str | None, local_port: int | None, seen_ip: str, seen_port: int) -> str:
    """One sentence on the NAT between us and the rendezvous."""
    if local_ip == seen_ip and local_port == seen_port:
        return "no NAT: your address is public, peers can dial you directly"
    if local_port == seen_port:
        return (
            "behind a NAT that keeps the port (endpoint-independent mapping): "
            "hole punching should work"
        )
    return (
        "behind a NAT that changes the port (symmetric, or the port was taken): "
        "hole punching will likely fail, so conversations with other NATed peers "
        "use the relay"
    )


def report(
    server: ServerLink,
    listen_port: int | None,
    paths: dict[str, PathName],
    upgrades: list[str],
    rtt: float | None,
) -> list[str]:
    host, port = server.server
    lines = [
        f"rendezvous {host}:{port}: {server.state}"
        + (f", round trip {rtt * 1000:.1f} ms" if rtt is not None else ", no answer")
    ]
    if listen_port is None:
        lines.append("relay only: this peer opens no direct links")
    else:
        lines.append(
            f"local port {listen_port} (direct links, the rendezvous "
            f"connection and hole punching all use it), address {server.local_ip}"
        )
    seen = server.seen
    if seen is None:
        lines.append("public endpoint: not known yet")
    else:
        local_port = server.local_port()
        lines.append(f"public endpoint (as the rendezvous sees you): {seen}")
        lines.append(nat_verdict(server.local_ip, local_port, seen.host, seen.port))
    lines.extend(f"conversation with {partner}: {path}" for partner, path in paths.items())
    if upgrades:
        lines.append("recent path upgrades:")
        lines.extend(f"  {u}" for u in upgrades)
    return [f"netcheck: {line}" if not line.startswith("  ") else line for line in lines]
