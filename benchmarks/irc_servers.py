"""The servers chathack's relay is measured against, in the same run on the same load.

* **InspIRCd** (Debian ``inspircd``) and **ngircd** (Debian ``ngircd``): the C
  IRC servers people would otherwise run, each with a configuration written
  for the run (loopback, a free port, flood limits off, no DNS or ident
  lookups) and its log in the work directory;
* **the floor** (:mod:`benchmarks.floor_relay`): a minimal relay on trio, what
  Python on trio can do at best.

Each starts as a process of its own, is observed through /proc like the
rendezvous (the same :class:`~benchmarks.rendezvous_proc.Rendezvous` handle),
and is ended on the way out whatever happens. A server that is not
installed is reported by :func:`missing`, not started.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from benchmarks.rendezvous_proc import HOST, Rendezvous, start_process, stop_process

#: Seconds a server has to accept connections after it starts.
START_TIMEOUT = 20.0
#: Connections each server may hold (every benchmark client comes from 127.0.0.1).
MAX_CLIENTS = 60_000

INSPIRCD = "/usr/sbin/inspircd"
NGIRCD = "/usr/sbin/ngircd"

INSPIRCD_CONF = """\
<server name="bench.chathack.invalid" description="chathack benchmark" network="bench">
<admin name="bench" nick="bench" email="bench@bench.invalid">
<bind address="{host}" port="{port}" type="clients">
<connect name="bench" allow="*" timeout="120" pingfreq="3600" threshold="1000000000"
         commandrate="1000000000" fakelag="off" localmax="{max}" globalmax="{max}" limit="{max}"
         hardsendq="16777216" softsendq="16777216" recvq="16777216" resolvehostnames="no"
         useident="no" maxchans="1">
<performance softlimit="{max}" somaxconn="4096" netbuffersize="65536" clonesonconnect="no"
             quietbursts="yes">
<options allowzerolimit="yes" syntaxhints="no" announcets="no">
<security maxtargets="1" userstats="Pu">
<limits maxnick="32" maxuser="32">
<pid file="{work}/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{work}/inspircd.log">
"""

NGIRCD_CONF = """\
[Global]
Name = bench.chathack.invalid
Info = chathack benchmark
Listen = {host}
Ports = {port}
MotdPhrase = chathack benchmark
PidFile = {work}/ngircd.pid
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxNickLength = 32
MaxPenaltyTime = 0
PingTimeout = 3600
PongTimeout = 3600
[Options]
DNS = no
Ident = no
PAM = no
RequireAuthPing = no
"""


class ServerFailed(Exception):
    """The server did not start: its log (in the work directory) says why."""


def missing(kind: str) -> str | None:
    """Why ``kind`` cannot run here (None: it can)."""
    exe = {"inspircd": INSPIRCD, "ngircd": NGIRCD}.get(kind)
    if exe is not None and not (os.access(exe, os.X_OK) or shutil.which(kind)):
        return f"{kind} is not installed (apt-get install {kind})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _argv(kind: str, work: Path, port: int) -> list[str]:
    if kind == "floor":
        return [sys.executable, "-m", "benchmarks.floor_relay", "--host", HOST, "--port", str(port)]
    if kind == "inspircd":
        conf = work / "inspircd.conf"
        conf.write_text(INSPIRCD_CONF.format(host=HOST, port=port, work=work, max=MAX_CLIENTS))
        exe = INSPIRCD if os.access(INSPIRCD, os.X_OK) else "inspircd"
        return [exe, "--nofork", "--runasroot", "--config", str(conf)]
    if kind == "ngircd":
        conf = work / "ngircd.conf"
        conf.write_text(NGIRCD_CONF.format(host=HOST, port=port, work=work))
        exe = NGIRCD if os.access(NGIRCD, os.X_OK) else "ngircd"
        return [exe, "--nodaemon", "--config", str(conf)]
    raise ValueError(f"unknown server {kind!r}")


async def _accepts(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream(HOST, port)
    except OSError:
        return False
    await stream.aclose()
    return True


@asynccontextmanager
async def irc_server(kind: str, work: Path, nofile: int = 65536) -> AsyncIterator[Rendezvous]:
    """Run ``kind`` ("inspircd", "ngircd" or "floor") on a free loopback port,
    in ``work`` (a folder that exists)."""
    port = _free_port()
    log = work / f"{kind}.out"
    proc = await start_process(_argv(kind, work, port), log, nofile)
    try:
        ready = False
        with trio.move_on_after(START_TIMEOUT):
            while not ready and proc.poll() is None:
                ready = await _accepts(port)
                if not ready:
                    await trio.sleep(0.05)
        if not ready:
            tail = re.sub(r"\s+", " ", log.read_text(errors="replace")[-500:])
            raise ServerFailed(f"{kind} did not start (log {log}): {tail}")
        yield Rendezvous(proc, port, log)
    finally:
        await stop_process(proc)
