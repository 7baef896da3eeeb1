"""Finding a direct path to a partner: candidates, the direct race, hole punching.

A conversation starts on the relay at once; these run in the background to
upgrade it (the way Tailscale and libp2p's DCUtR do):

1. **direct race** — dial every address the partner listens on (its LAN
   addresses, and its listening port at the address the rendezvous sees) all
   at once; the first Hello exchange wins and the others are closed. Both
   sides race, so whichever side is reachable gets reached (connection
   reversal comes for free).
2. **hole punching** — if no race won, the side whose name sorts first asks
   the rendezvous (``punch: NAME``) to send both sides each other's public
   endpoint at the same moment (``Servidor[PUNCH]``); each then dials it from
   its shared local port, retrying for :data:`PUNCH_WINDOW` seconds, so the
   two SYNs cross and the NATs let them through (TCP simultaneous open).

When both fail (a symmetric NAT picks a new port per connection), the
conversation stays ``relayed``.
"""

from __future__ import annotations

import trio

from peer import direct
from peer.core.candidates import Candidates
from peer.errors import LinkFailed

#: Seconds both sides keep trying to punch through after Servidor[PUNCH].
PUNCH_WINDOW = 6.0
#: Seconds between punch attempts that failed at once (refused, unreachable).
PUNCH_RETRY = 0.2


async def race_direct(cands: Candidates, me: str, epoch: str) -> direct.DirectLink:
    """Dial every listening address of ``cands`` at once; the first link wins."""
    if not cands.addrs:
        raise LinkFailed(f"{cands.name} accepts no direct links")
    winner: list[direct.DirectLink] = []
    errors: list[str] = []

    async def attempt(host: str, port: int, nursery: trio.Nursery) -> None:
        try:
            link = await direct.dial(host, port, me, cands.name, epoch)
        except LinkFailed as e:
            errors.append(str(e))
            return
        if winner:
            await link.aclose()
            return
        winner.append(link)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for host, port in cands.addrs:
            nursery.start_soon(attempt, host, port, nursery)
    if winner:
        return winner[0]
    raise LinkFailed("; ".join(errors))


async def punch(
    remote: tuple[str, int], local: tuple[str, int], me: str, partner: str, epoch: str
) -> direct.DirectLink:
    """Dial ``remote`` from the shared port ``local`` until it works or the window ends."""
    last: LinkFailed | None = None
    with trio.move_on_after(PUNCH_WINDOW):
        while True:
            try:
                return await direct.dial(*remote, me, partner, epoch, local=local, via="punch")
            except LinkFailed as e:
                last = e
            await trio.sleep(PUNCH_RETRY)  # pace retries of attempts that failed at once
    raise LinkFailed(f"hole punching to {partner} failed ({last or 'timed out'})")
