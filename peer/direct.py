"""Direct links between peers: dial, accept, and the Hello handshake.

The dialer sends ``Hello{name, to, epoch}`` and waits for the acceptor's
Hello; the acceptor checks that the Hello is addressed to it and answers. A
link exists only once both Hellos are through, within
:data:`HANDSHAKE_TIMEOUT`. Stray or silent connections are closed.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from chathack.errors import RemoteProtocolError
from chathack.link import Frame, Hello, encode_frame
from peer.errors import LinkFailed
from peer.transport import FrameReader, StreamWriter

#: Seconds to open a TCP connection to a peer.
DIAL_TIMEOUT = 3.0
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


async def dial(host: str, port: int, me: str, partner: str, epoch: str) -> DirectLink:
    """Open a direct link to ``partner`` at ``host:port`` or raise :class:`LinkFailed`."""
    try:
        with trio.fail_after(DIAL_TIMEOUT):
            stream = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as e:
        raise LinkFailed(f"cannot reach {partner} at {host}:{port} ({_why(e)})") from e
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            await stream.send_all(encode_frame(Hello(me, partner, epoch)))
            reader = FrameReader(stream)
            hello = await _read_hello(reader)
        if hello.name.lower() != partner.lower() or hello.to.lower() != me.lower():
            raise LinkFailed(f"{host}:{port} answered as {hello.name}, not {partner}")
    except (trio.TooSlowError, trio.BrokenResourceError, RemoteProtocolError, LinkFailed) as e:
        await trio.aclose_forcefully(stream)
        if isinstance(e, LinkFailed):
            raise
        raise LinkFailed(f"handshake with {partner} failed ({_why(e)})") from e
    return DirectLink(hello.name, hello.epoch, stream, reader, StreamWriter(stream))


async def accept(stream: trio.abc.Stream, me: str, epoch: str) -> DirectLink:
    """Complete the handshake of an incoming connection or raise :class:`LinkFailed`."""
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT):
            reader = FrameReader(stream)
            hello = await _read_hello(reader)
            if hello.to.lower() != me.lower():
                raise LinkFailed(f"a hello for {hello.to} reached {me}")
            await stream.send_all(encode_frame(Hello(me, hello.name, epoch)))
    except (trio.TooSlowError, trio.BrokenResourceError, RemoteProtocolError) as e:
        raise LinkFailed(f"incoming handshake failed ({_why(e)})") from e
    return DirectLink(hello.name, hello.epoch, stream, reader, StreamWriter(stream))


def _why(e: BaseException) -> str:
    if isinstance(e, trio.TooSlowError):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
