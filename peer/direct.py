"""Direct links between peers: dial, accept, punch, and the Hello handshake.

Both ends send ``Hello{name, to, epoch, via}`` as soon as they have the
connection and read the other's: the dialer first sends then reads, the
acceptor reads then answers, and in a simultaneous open (hole punching) both
send at once — the exchange works in every order. ``via`` says how each end
got the connection; :func:`chathack.link.path_of` turns the pair into the
path word both ends show (``direct`` or ``punched``). A link exists only once
both Hellos are through, within :data:`HANDSHAKE_TIMEOUT`; stray or silent
connections are closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from chathack.errors import RemoteProtocolError
from chathack.link import Frame, Hello, encode_frame, path_of
from peer.errors import LinkFailed
from peer.events import PathName
from peer.sockets import connect_from
from peer.transport import FrameReader, StreamWriter

#: Seconds to open a TCP connection to a peer's listening address.
DIAL_TIMEOUT = 2.5
#: Seconds for both Hellos to cross once connected.
HANDSHAKE_TIMEOUT = 5.0


@dataclass(eq=False)
class DirectLink:
    """An established direct link to ``partner``: frames in, frames out."""

    partner: str
    partner_epoch: str
    stream: trio.abc.Stream
    reader: FrameReader
    writer: StreamWriter
    path: PathName = "direct"
    dialer: str = ""  # who opened it ("" for a simultaneous open)
    last_rx: float = 0.0  # trio clock of the last frame received
    heard: trio.Event = field(default_factory=trio.Event)  # set (and renewed) on each frame

    def received(self) -> None:
        self.last_rx = trio.current_time()
        self.heard.set()
        self.heard = trio.Event()

    def send(self, frame: Frame) -> bool:
        """Queue ``frame``; False if the link is broken."""
        return self.writer.send(encode_frame(frame))

    async def aclose(self) -> None:
        self.writer.finish()
        await trio.aclose_forcefully(self.stream)


async def _read_hello(reader: FrameReader) -> Hello:
    frame = await reader.next_frame()
    if frame is None:
        raise LinkFailed("the other side closed the connection during the handshake")
    if not isinstance(frame, Hello):
        raise LinkFailed("the other side did not start with a hello")
    return frame


async def handshake_out(
    stream: trio.abc.Stream, me: str, partner: str, epoch: str, via: str
) -> DirectLink:
    """Our Hello first, then the partner's; raise :class:`LinkFailed`."""
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await stream.send_all(encode_frame(Hello(me, partner, epoch, via=via)))
            reader = FrameReader(stream)
            hello = await _read_hello(reader)
        if hello.name.lower() != partner.lower() or hello.to.lower() != me.lower():
            raise LinkFailed(f"the other end answered as {hello.name}, not {partner}")
    except (trio.TooSlowError, trio.BrokenResourceError, RemoteProtocolError, LinkFailed) as e:
        await trio.aclose_forcefully(stream)
        if isinstance(e, LinkFailed):
            raise
        raise LinkFailed(f"handshake with {partner} failed ({why(e)})") from e
    path = path_of(via, hello.via)
    dialer = me if via == "dial" else (hello.name if hello.via == "dial" else "")
    return DirectLink(hello.name, hello.epoch, stream, reader, StreamWriter(stream), path, dialer)  # type: ignore[arg-type]


async def dial(
    host: str,
    port: int,
    me: str,
    partner: str,
    epoch: str,
    local: tuple[str, int] | None = None,
    via: str = "dial",
) -> DirectLink:
    """Open a direct link to ``partner`` at ``host:port`` or raise :class:`LinkFailed`.

    With ``local``, the connection leaves from that address (the shared port).
    """
    try:
        with trio.fail_after(DIAL_TIMEOUT):
            if local is None:
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
            else:
                stream = await connect_from(local, (host, port))
    except (OSError, trio.TooSlowError) as e:
        raise LinkFailed(f"cannot reach {partner} at {host}:{port} ({why(e)})") from e
    return await handshake_out(stream, me, partner, epoch, via)


async def accept(stream: trio.abc.Stream, me: str, epoch: str) -> DirectLink:
    """Complete the handshake of an incoming connection or raise :class:`LinkFailed`."""
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            reader = FrameReader(stream)
            hello = await _read_hello(reader)
            if hello.to.lower() != me.lower():
                raise LinkFailed(f"a hello for {hello.to} reached {me}")
            await stream.send_all(encode_frame(Hello(me, hello.name, epoch, via="accept")))
    except (trio.TooSlowError, trio.BrokenResourceError, RemoteProtocolError) as e:
        raise LinkFailed(f"incoming handshake failed ({why(e)})") from e
    path = path_of("accept", hello.via)
    dialer = hello.name if hello.via == "dial" else ""
    return DirectLink(hello.name, hello.epoch, stream, reader, StreamWriter(stream), path, dialer)  # type: ignore[arg-type]


def why(e: BaseException) -> str:
    if isinstance(e, trio.TooSlowError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
