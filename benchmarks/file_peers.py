"""The two ends of the file benchmark, each in its own process.

    python -m benchmarks.file_peers receive MODE SPEC  # {"port": N} or {"ready": 1}, the result
    python -m benchmarks.file_peers send    MODE SPEC  # the result

MODE is one of

* ``raw``  — the baseline: a plain TCP copy of the file, as ``nc`` would do
  it (blocking sockets, 256 KiB reads from the file and from the socket,
  written to a file on the receiver), no encryption, no hash;
* ``node`` — two full :class:`peer.node.PeerNode` logged in to a rendezvous,
  over the direct link they set up themselves: ``::send`` on one side,
  ``::accept DIR`` on the other (sealed chunks, acknowledgements, SHA-256,
  the file linked into place), everything as a user runs it.

Each end reports the seconds from the start of the copy (the accept, for
``node``) to the last byte written (the file in place), and the CPU seconds
it used meanwhile. Both stop by themselves after ``deadline_s``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import trio

BLOCK = 256 * 1024


def say(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------- raw TCP
def raw_receive(spec: dict) -> None:
    with socket.create_server((spec.get("host", "127.0.0.1"), 0)) as server:
        say({"port": server.getsockname()[1]})
        server.settimeout(spec["deadline_s"])
        conn, _ = server.accept()
        with conn, open(Path(spec["inbox"]) / "raw.bin", "wb") as out:
            buf = bytearray(BLOCK)
            view = memoryview(buf)
            t0, cpu0, got = time.monotonic(), time.process_time(), 0
            while n := conn.recv_into(buf):
                out.write(view[:n])
                got += n
            out.flush()
            cpu = time.process_time() - cpu0
            say({"seconds": time.monotonic() - t0, "cpu_s": cpu, "bytes": got})


def raw_send(spec: dict) -> None:
    conn = socket.create_connection((spec.get("host", "127.0.0.1"), spec["port"]))
    with conn, open(spec["source"], "rb") as f:
        t0, cpu0 = time.monotonic(), time.process_time()
        while block := f.read(BLOCK):
            conn.sendall(block)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # the receiver closes once it wrote everything
        say({"seconds": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0})


# --------------------------------------------------------- full PeerNode
def _config(name: str, spec: dict, folder: Path):  # PeerConfig, imported late
    from peer.node import PeerConfig

    folder.mkdir(parents=True, exist_ok=True)
    return PeerConfig(
        name,
        server_host="127.0.0.1",
        server_port=spec["server_port"],
        listen_host="127.0.0.1",
        data_dir=folder,
        downloads=Path(spec["inbox"]),
    )


async def node_receive(spec: dict) -> None:
    from peer.core import records as rec
    from peer.events import System
    from peer.node import fixed_password, open_peer

    config = _config("fileget", spec, Path(spec["work"]) / "fileget")
    async with open_peer(config, fixed_password(spec["password"])) as node:
        say({"ready": 1})
        t0 = cpu0 = 0.0
        async for ev in node.events:
            if not isinstance(ev, System):
                continue
            if "offers" in ev.text:
                t0, cpu0 = time.monotonic(), time.process_time()
                node.feed(rec.AcceptFile(spec["inbox"]))
            elif "saved" in ev.text and "SHA-256 verified" in ev.text:
                say({"seconds": time.monotonic() - t0, "cpu_s": time.process_time() - cpu0})
                await node.quit()
                return
            elif ev.level == "error":
                say({"error": ev.text})
                return


async def node_send(spec: dict) -> None:
    from peer.events import System
    from peer.node import fixed_password, open_peer

    config = _config("fileput", spec, Path(spec["work"]) / "fileput")
    async with open_peer(config, fixed_password(spec["password"])) as node:
        talk = await node.connect("fileget")
        assert talk is not None, "the rendezvous did not find the receiving peer"
        with trio.move_on_after(10):
            while talk.path == "relayed":
                await node.events.receive()
        path = talk.path
        h0 = time.process_time()
        await node.send_file(spec["source"], "fileget")
        hash_cpu = time.process_time() - h0
        t0 = cpu0 = 0.0
        async for ev in node.events:
            if not isinstance(ev, System):
                continue
            if "accepted" in ev.text:
                t0, cpu0 = time.monotonic(), time.process_time()
            elif "saved" in ev.text:
                say(
                    {
                        "seconds": time.monotonic() - t0,
                        "cpu_s": time.process_time() - cpu0,
                        "hash_cpu_s": hash_cpu,
                        "path": path,
                    }
                )
                await node.quit()
                return
            elif ev.level == "error":
                say({"error": ev.text})
                return


def _run(role: str, mode: str, spec: dict) -> None:
    if mode == "raw":
        (raw_receive if role == "receive" else raw_send)(spec)
        return

    async def main() -> None:
        with trio.move_on_after(spec["deadline_s"]):
            await (node_receive if role == "receive" else node_send)(spec)

    trio.run(main)


if __name__ == "__main__":
    os.nice(0)
    _run(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
