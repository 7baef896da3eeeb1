"""A throwaway network of Linux namespaces for NAT and hole-punching tests.

Topology (documentation address ranges only; every box is its own network
namespace named ``<prefix>-<name>``)::

                        "internet": bridge in <prefix>-inet, 203.0.113.0/24
      +-------------+-------------+-------------+--------------+
     rdv           pub          natA          natB           natS
  .10 (server)  .20 (no NAT)    .101          .102           .103  <- WAN addresses
                                 |             |              |
                         192.0.2.0/25   198.51.100.0/25  198.51.100.128/25
                         LAN .1         LAN .1           LAN .129
                         a1 .10, a2 .11 b1 .10           s1 .130

natA and natB MASQUERADE (endpoint-independent mapping that keeps the source
port when it can, so TCP hole punching works); natS uses ``--random-fully`` (a
new port per connection: symmetric NAT, so punching fails). Every router
forwards LAN->WAN, lets WAN->LAN through only for ESTABLISHED,RELATED and
silently DROPs everything else, including new connections to itself.

Conventions: names carry a short run prefix (``chl`` + 4 hex digits, or
``chdemo`` for the command line) so concurrent runs never collide; every
interface is created directly inside its namespace, so nothing appears in the
host's own namespace; IPv6 is off in the lab (no link-local chatter outside
the documentation ranges); every command runs with a timeout; :func:`build_lab`
tears everything down even when the body fails.

Command line (as root, from the repository root)::

    python -m tests.netlab up            # build the "chdemo" lab and print how to use it
    python -m tests.netlab status        # what is up
    python -m tests.netlab down [PREFIX] # remove every namespace named PREFIX* (default chdemo)
    python -m tests.netlab probe ...     # the small socket programs the tests run in hosts

Kernel notes: a bridge hands bridged frames to iptables when ``br_netfilter``
is loaded; since Linux 5.3 that switch is per namespace and a new namespace
starts with it on, so the lab turns it off in every namespace holding a bridge
(and the routers also accept LAN->LAN, for kernels where the switch is global).
Changing a router's WAN address needs no ``conntrack`` tool: MASQUERADE drops
the conntrack entries of an address when that address is deleted.

Use::

    with build_lab() as lab:                  # fresh prefix; always torn down
        lab.popen("rdv", probe_argv("observe", "3478"))   # wait for its "listening" line
        lab.run("a1", probe_argv("whoami", "--bind", "40000", "203.0.113.10:3478")).stdout
        # -> "203.0.113.10:3478 40000 203.0.113.101 40000": natA kept the port
        lab.set_nat_public_ip("natA", "203.0.113.111")    # the home gets a new address
        lab.block("a1", "b1")                 # the direct path dies silently
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

#: Seconds any single lab command (ip, iptables, a probe run) may take.
RUN_TIMEOUT = 15.0
#: Seconds for every interface to report UP after the build.
READY_TIMEOUT = 5.0
#: Seconds a probe waits for one TCP connect.
CONNECT_TIMEOUT = 2.0
#: Seconds one punch attempt waits before it closes and retries.
ATTEMPT_TIMEOUT = 1.0
#: Seconds between punch attempts after a fast failure (pacing, not synchronisation).
RETRY_PACE = 0.05
#: Seconds a probe waits for a line from the test driver on stdin.
STDIN_TIMEOUT = 10.0
#: Seconds an ``observe`` server lives without a client before it exits by itself.
SERVER_IDLE_TIMEOUT = 60.0

ROOT = Path(__file__).resolve().parent.parent
DEMO_PREFIX = "chdemo"
INTERNET = ipaddress.ip_network("203.0.113.0/24")
PUBLIC_HOSTS = {"rdv": "203.0.113.10", "pub": "203.0.113.20"}


@dataclass(frozen=True)
class _Site:
    router: str
    wan_ip: str
    lan_ip: str
    hosts: tuple[tuple[str, str], ...]
    symmetric: bool


SITES = (
    _Site(
        "natA", "203.0.113.101", "192.0.2.1", (("a1", "192.0.2.10"), ("a2", "192.0.2.11")), False
    ),
    _Site("natB", "203.0.113.102", "198.51.100.1", (("b1", "198.51.100.10"),), False),
    _Site("natS", "203.0.113.103", "198.51.100.129", (("s1", "198.51.100.130"),), True),
)
LAN_PREFIXLEN = 25
# Forward at once (no STP, no delay), and no multicast snooping: a snooping
# bridge joins 224.0.0.106 and sends IGMP reports, traffic outside our ranges.
BRIDGE = "type bridge forward_delay 0 stp_state 0 mcast_snooping 0"
_PREFIX_RE = re.compile(r"ch[a-z0-9]{1,6}")  # <= 8 chars keeps interface names <= 15


class LabError(RuntimeError):
    """A lab command failed; the message holds the command and its stderr."""


@dataclass
class Host:
    """An end host: its namespace and address; ``router`` is None on the internet."""

    name: str
    ns: str
    ip: str
    router: str | None = None

    def argv_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]


@dataclass
class Router:
    """A home router; ``wan_ip`` changes with :meth:`Lab.set_nat_public_ip`."""

    name: str
    ns: str
    wan_ip: str
    lan_ip: str
    symmetric: bool

    def argv_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]


Node = Host | Router


def _cmd(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a lab command; raise :class:`LabError` with its stderr when it fails."""
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)}: no answer in {RUN_TIMEOUT} s") from e
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _sysctl(ns: str, *settings: str) -> None:
    # -e: a key this kernel lacks (no IPv6, no br_netfilter) is not an error.
    _cmd(["ip", "netns", "exec", ns, "sysctl", "-e", "-q", "-w", *settings])


def _iptables(ns: str, *args: str) -> None:
    _cmd(["ip", "netns", "exec", ns, "iptables", "-w", "5", *args])


def _ip_batch(ns: str, lines: list[str]) -> None:
    _cmd(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(lines) + "\n")


def _bridge_ns_setup(ns: str) -> None:
    """Keep a bridge plain layer 2: no iptables on bridged frames in this namespace.

    These keys exist only while br_netfilter is loaded, and inside a namespace
    only on Linux >= 5.3 (per-namespace since); ``sysctl -e`` skips them otherwise.
    """
    keys = ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables")
    _sysctl(ns, *(f"net.bridge.{k}=0" for k in keys))


def _router_rules(wan: str, lan: str, symmetric: bool) -> str:
    masquerade = "-j MASQUERADE --random-fully" if symmetric else "-j MASQUERADE"
    return f"""*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i {wan} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A INPUT -i {wan} -j DROP
-A FORWARD -i {lan} -o {lan} -j ACCEPT
-A FORWARD -i {lan} -o {wan} -j ACCEPT
-A FORWARD -i {wan} -o {lan} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -o {wan} {masquerade}
COMMIT
"""


def list_namespaces(prefix: str) -> list[str]:
    """Namespaces whose name starts with ``prefix``."""
    names = (line.split()[0] for line in _cmd(["ip", "netns", "list"]).splitlines() if line)
    return sorted(n for n in names if n.startswith(prefix))


def teardown_prefix(prefix: str) -> list[str]:
    """Remove every namespace (and stray host link) named ``prefix*``; return what went.

    Processes still inside those namespaces are killed first, by pid, or the
    namespace (and its interfaces) would outlive its name.
    """
    if prefix.rstrip("-") != "chl" and not _PREFIX_RE.fullmatch(prefix.rstrip("-")):
        raise ValueError(f"refusing to remove namespaces by the prefix {prefix!r}")
    removed, problems = [], []
    for ns in list_namespaces(prefix):
        try:
            for pid in _cmd(["ip", "netns", "pids", ns]).split():
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            _cmd(["ip", "netns", "del", ns])
            removed.append(ns)
        except LabError as e:
            problems.append(str(e))
    # Links are made inside their namespaces, so none should be here; a veth or
    # bridge with our prefix in the host namespace is a leftover all the same.
    for link in json.loads(_cmd(["ip", "-j", "-d", "link", "show"])):
        kind = link.get("linkinfo", {}).get("info_kind")
        if link["ifname"].startswith(prefix.rstrip("-")) and kind in ("veth", "bridge"):
            try:
                _cmd(["ip", "link", "del", link["ifname"]])
                removed.append(link["ifname"])
            except LabError as e:
                problems.append(str(e))
    if problems:
        raise LabError("; ".join(problems))
    return removed


def new_prefix() -> str:
    """A fresh ``chl`` + 4 hex digits prefix not used by any namespace now."""
    for _ in range(16):
        prefix = "chl" + secrets.token_hex(2)
        if not list_namespaces(prefix):
            return prefix
    raise LabError("no free lab prefix")


class Lab:
    """The built topology. Create with :func:`build_lab`."""

    def __init__(self, prefix: str) -> None:
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"lab prefix must match {_PREFIX_RE.pattern}: {prefix!r}")
        self.prefix = prefix
        self.switch_ns = f"{prefix}-inet"
        self.hosts: dict[str, Host] = {
            name: Host(name, f"{prefix}-{name}", ip) for name, ip in PUBLIC_HOSTS.items()
        }
        self.routers: dict[str, Router] = {}
        for site in SITES:
            ns = f"{prefix}-{site.router}"
            self.routers[site.router] = Router(
                site.router, ns, site.wan_ip, site.lan_ip, site.symmetric
            )
            for name, ip in site.hosts:
                self.hosts[name] = Host(name, f"{prefix}-{name}", ip, site.router)
        self._procs: list[subprocess.Popen[bytes]] = []
        self._blocks: dict[frozenset[str], list[tuple[str, list[str]]]] = {}

    # Interface names: <prefix>e0 (a host's uplink), <prefix>wan / <prefix>lan (a
    # router's WAN veth / LAN bridge), <prefix>br (the internet bridge), and
    # <prefix><node> for the bridge port that node plugs into.
    def _if(self, tag: str) -> str:
        return self.prefix + tag

    def node(self, node: str | Node) -> Node:
        if not isinstance(node, str):
            return node
        found = self.hosts.get(node) or self.routers.get(node)
        if found is None:
            raise KeyError(f"no lab node {node!r}; have {sorted([*self.hosts, *self.routers])}")
        return found

    def public_ip(self, host: str | Host) -> str:
        """The address ``host`` shows on the internet: its router's WAN, or its own."""
        h = self.hosts[host] if isinstance(host, str) else host
        return self.routers[h.router].wan_ip if h.router else h.ip

    # -- building -----------------------------------------------------------------

    def build(self) -> None:
        """Create every namespace, link, address, route and rule (synchronously)."""
        namespaces = [self.switch_ns, *(r.ns for r in self.routers.values())]
        namespaces += [h.ns for h in self.hosts.values()]
        for ns in namespaces:
            _cmd(["ip", "netns", "add", ns])
            _sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        br, e0 = self._if("br"), self._if("e0")
        lines = ["link set lo up", f"link add {br} {BRIDGE}"]
        for name in [*PUBLIC_HOSTS, *self.routers]:
            node = self.node(name)
            uplink = e0 if isinstance(node, Host) else self._if("wan")
            port = self._if(name)
            lines += [
                f"link add {port} type veth peer name {uplink} netns {node.ns}",
                f"link set {port} master {br} up",
            ]
        _bridge_ns_setup(self.switch_ns)
        _ip_batch(self.switch_ns, [*lines, f"link set {br} up"])
        for r in self.routers.values():
            wan, lan = self._if("wan"), self._if("lan")
            lines = [
                "link set lo up",
                f"addr add {r.wan_ip}/{INTERNET.prefixlen} dev {wan}",
                f"link set {wan} up",
                f"link add {lan} {BRIDGE}",
                f"addr add {r.lan_ip}/{LAN_PREFIXLEN} dev {lan}",
            ]
            for h in self.hosts.values():
                if h.router == r.name:
                    port = self._if(h.name)
                    lines += [
                        f"link add {port} type veth peer name {e0} netns {h.ns}",
                        f"link set {port} master {lan} up",
                    ]
            _bridge_ns_setup(r.ns)
            _sysctl(r.ns, "net.ipv4.ip_forward=1")
            _ip_batch(r.ns, [*lines, f"link set {lan} up"])
            _cmd(
                [*r.argv_prefix(), "iptables-restore", "-w", "5"],
                stdin=_router_rules(wan, lan, r.symmetric),
            )
        for h in self.hosts.values():
            plen = LAN_PREFIXLEN if h.router else INTERNET.prefixlen
            lines = ["link set lo up", f"addr add {h.ip}/{plen} dev {e0}", f"link set {e0} up"]
            if h.router:
                lines.append(f"route add default via {self.routers[h.router].lan_ip}")
            _ip_batch(h.ns, lines)
        self._wait_links_up(namespaces)

    def _wait_links_up(self, namespaces: list[str]) -> None:
        # A link is usable once the kernel's linkwatch has run (qdisc attached,
        # operstate UP); that happens just after `ip link set up` returns.
        deadline = time.monotonic() + READY_TIMEOUT
        pending = list(namespaces)
        while pending:
            links = json.loads(_cmd(["ip", "-n", pending[0], "-j", "link", "show"]))
            down = [x["ifname"] for x in links if x["ifname"] != "lo" and x["operstate"] != "UP"]
            if not down:
                pending.pop(0)
            elif time.monotonic() > deadline:
                raise LabError(f"{pending[0]}: {down} not UP after {READY_TIMEOUT} s")
            else:
                time.sleep(0.02)  # polling with a deadline

    def close(self) -> None:
        """Kill the processes started here, then remove every namespace of the lab."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=RUN_TIMEOUT)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        teardown_prefix(self.prefix + "-")

    # -- running things -----------------------------------------------------------

    def run(
        self, node: str | Node, argv: Sequence[str], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """``subprocess.run`` inside ``node``: text, captured, checked, with a timeout.

        The working directory is the repository root, so :func:`probe_argv` works.
        """
        kw = {"capture_output": True, "text": True, "check": True, "timeout": RUN_TIMEOUT} | kw
        kw.setdefault("cwd", ROOT)
        return subprocess.run([*self.node(node).argv_prefix(), *argv], **kw)

    def popen(self, node: str | Node, argv: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen`` inside ``node`` with pipes; killed by :meth:`close`."""
        kw = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE} | kw
        kw.setdefault("cwd", ROOT)
        proc = subprocess.Popen([*self.node(node).argv_prefix(), *argv], **kw)
        self._procs.append(proc)
        return proc

    # -- changing the network -----------------------------------------------------

    def set_nat_public_ip(self, router: str, new_ip: str) -> None:
        """Move ``router``'s WAN to ``new_ip`` (same /24), as when a home gets a new IP.

        Deleting the old address makes MASQUERADE forget its conntrack entries,
        so new connections from the LAN leave with ``new_ip``. A connection open
        across the change breaks: the LAN side's next segment leaves from
        ``new_ip`` and the far side answers it with a reset; the far side
        itself hears nothing more.
        """
        r = self.routers[router]
        if ipaddress.ip_address(new_ip) not in INTERNET:
            raise ValueError(f"{new_ip} is not in {INTERNET}")
        taken = {h.ip for h in self.hosts.values()} | {x.wan_ip for x in self.routers.values()}
        if new_ip in taken:
            raise ValueError(f"{new_ip} is already used in the lab")
        wan = self._if("wan")
        _ip_batch(
            r.ns,
            [
                f"addr del {r.wan_ip}/{INTERNET.prefixlen} dev {wan}",
                f"addr add {new_ip}/{INTERNET.prefixlen} dev {wan}",
            ],
        )
        r.wan_ip = new_ip

    def limit_rate(self, host: str, mbit: int) -> None:
        """Shape what ``host`` sends to ``mbit`` Mbit/s (a token bucket on its
        uplink), as a slow home uplink does; the queue holds at most 100 ms."""
        h = self.hosts[host]
        shape = ["root", "tbf", "rate", f"{mbit}mbit", "burst", "256kb", "latency", "100ms"]
        _cmd([*h.argv_prefix(), "tc", "qdisc", "replace", "dev", self._if("e0"), *shape])

    def block(self, a: str, b: str) -> None:
        """Silently drop all traffic between hosts ``a`` and ``b``, both ways.

        The DROP sits where both are still told apart: in the home router of
        one of them (FORWARD, above the ESTABLISHED accept, by that host's LAN
        address and the other's address as it is *now*), or, for two hosts on
        the same LAN or both on the internet, on arrival at each host (raw
        PREROUTING). Senders see only silence, as when a path dies; every
        other path is untouched.
        """
        key = frozenset((a, b))
        if key in self._blocks:
            return
        ha, hb = self.hosts[a], self.hosts[b]
        near, far = (ha, hb) if ha.router else (hb, ha)
        rules: list[tuple[str, list[str]]]
        if near.router and near.router != far.router:
            ns, other = self.routers[near.router].ns, self.public_ip(far)
            rules = [
                (ns, ["FORWARD", "-s", near.ip, "-d", other, "-j", "DROP"]),
                (ns, ["FORWARD", "-s", other, "-d", near.ip, "-j", "DROP"]),
            ]
        else:
            rules = [
                (ha.ns, ["PREROUTING", "-t", "raw", "-s", hb.ip, "-j", "DROP"]),
                (hb.ns, ["PREROUTING", "-t", "raw", "-s", ha.ip, "-j", "DROP"]),
            ]
        for ns, rule in rules:
            _iptables(ns, "-I", *rule)
        self._blocks[key] = rules

    def unblock(self, a: str, b: str) -> None:
        """Undo :meth:`block` for ``a`` and ``b`` (a no-op when not blocked)."""
        for ns, rule in self._blocks.pop(frozenset((a, b)), []):
            _iptables(ns, "-D", *rule)

    def describe(self) -> str:
        """A table of hosts and routers for people."""
        rows = [f"{'node':6} {'namespace':14} {'address':16} seen on the internet as"]
        for h in self.hosts.values():
            rows.append(f"{h.name:6} {h.ns:14} {h.ip:16} {self.public_ip(h)}")
        for r in self.routers.values():
            kind = "symmetric NAT" if r.symmetric else "port-preserving NAT"
            rows.append(f"{r.name:6} {r.ns:14} {r.lan_ip:16} {r.wan_ip} ({kind})")
        return "\n".join(rows)


@contextmanager
def build_lab(prefix: str | None = None) -> Iterator[Lab]:
    """Build a lab (fresh prefix by default), yield it, always tear it down."""
    lab = Lab(prefix or new_prefix())
    try:
        lab.build()
        yield lab
    finally:
        lab.close()


def lab_available() -> str | None:
    """None when this machine can build a lab, else a one-line reason to skip."""
    if not sys.platform.startswith("linux"):
        return "the network lab needs Linux"
    if os.geteuid() != 0:
        return "the network lab needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables", "iptables-restore", "sysctl"):
        if shutil.which(tool) is None:
            return f"the network lab needs the {tool!r} command"
    ns = f"chlchk{secrets.token_hex(1)}"
    try:
        _cmd(["ip", "netns", "add", ns])
        try:
            _ip_batch(ns, ["link add chlchkbr type bridge", "link add chlchkv type veth"])
            masquerade = ["-o", "chlchkv", "-j", "MASQUERADE", "--random-fully"]
            _iptables(ns, "-t", "nat", "-A", "POSTROUTING", *masquerade)
        finally:
            _cmd(["ip", "netns", "del", ns])
    except LabError as e:
        return f"network namespaces, bridges or iptables NAT are not usable here: {e}"
    return None


# -- reading a child's output with a deadline ----------------------------------------


class LineReader:
    """Lines from a pipe, each read with a deadline (``select``, no blocking read)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buf = b""

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                raise TimeoutError(f"no line within {timeout} s (have {self._buf!r})")
            chunk = os.read(self._fd, 4096)
            if not chunk:
                raise EOFError(f"stream ended (have {self._buf!r})")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()


def probe_argv(*args: str) -> list[str]:
    """argv for ``python -m tests.netlab probe ARGS`` (run it inside a host)."""
    return [sys.executable, "-m", "tests.netlab", "probe", *args]


# -- probes: tiny socket programs run inside the hosts --------------------------------


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _tcp(bind_port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if bind_port:
        sock.bind(("0.0.0.0", bind_port))
    return sock


def _outcome(e: OSError) -> str:
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    return f"error {errno.errorcode.get(e.errno or 0, e.errno)}"


def _recv_line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _probe_observe(port: int) -> int:
    """Tell every client the address and port it came from, as a rendezvous sees it.

    Each connection stays open until the client closes it (a thread apiece),
    so the NAT mapping it made stays alive as long as the client wants.
    """

    def serve(conn: socket.socket, ip: str, cport: int) -> None:
        with conn:
            conn.settimeout(SERVER_IDLE_TIMEOUT)
            with suppress(OSError):
                conn.sendall(f"{ip} {cport}\n".encode())
                while conn.recv(256):
                    pass

    with _tcp(0) as srv:
        srv.bind(("0.0.0.0", port))
        srv.listen(16)
        srv.settimeout(SERVER_IDLE_TIMEOUT)
        print("listening", flush=True)
        while True:
            try:
                conn, (ip, cport) = srv.accept()
            except TimeoutError:
                return 0
            threading.Thread(target=serve, args=(conn, ip, cport), daemon=True).start()


def _probe_whoami(bind_port: int, targets: list[str]) -> int:
    """From one local port, ask each observe server how we look; all stay open till the end."""
    socks = []
    try:
        for target in targets:
            sock = _tcp(bind_port)
            socks.append(sock)
            sock.settimeout(CONNECT_TIMEOUT)
            try:
                sock.connect(_endpoint(target))
                print(target, sock.getsockname()[1], _recv_line(sock), flush=True)
            except OSError as e:
                print(target, _outcome(e), flush=True)
                return 1
    finally:
        for sock in socks:
            sock.close()
    return 0


def _probe_connect(target: str, timeout: float) -> int:
    """Print the outcome of one connect: connected, timeout, refused or error NAME."""
    with _tcp(0) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(_endpoint(target))
            print("connected", flush=True)
        except OSError as e:
            print(_outcome(e), flush=True)
    return 0


def _probe_punch(bind_port: int, rdv: str, window: float, name: str) -> int:
    """TCP hole punch: learn our public endpoint from ``rdv``, read the peer's, dial it.

    Prints ``observed IP PORT``, reads ``IP:PORT`` on stdin, then dials from
    the same local port until connected or ``window`` seconds pass; prints
    ``connected GOT`` (GOT: what the peer sent) or ``failed WHY``.
    """
    with _tcp(bind_port) as server_conn:  # stays open, as a peer's rendezvous link does
        server_conn.settimeout(CONNECT_TIMEOUT)
        server_conn.connect(_endpoint(rdv))
        print("observed", _recv_line(server_conn), flush=True)
        if not select.select([sys.stdin], [], [], STDIN_TIMEOUT)[0]:
            print("failed no peer endpoint on stdin", flush=True)
            return 1
        peer = _endpoint(sys.stdin.readline().strip())
        deadline = time.monotonic() + window
        why = "no attempt"
        while (left := deadline - time.monotonic()) > 0:
            sock = _tcp(bind_port)
            sock.settimeout(min(ATTEMPT_TIMEOUT, left))
            try:
                sock.connect(peer)
            except OSError as e:
                sock.close()
                why = _outcome(e)
                time.sleep(RETRY_PACE)  # pacing retries, not synchronisation
                continue
            with sock:
                sock.settimeout(CONNECT_TIMEOUT)
                sock.sendall(name.encode() + b"\n")
                print("connected", _recv_line(sock), flush=True)
            return 0
        print("failed", why, flush=True)
        return 1


# -- command line -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.netlab", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("up", help=f"build the {DEMO_PREFIX!r} lab and leave it running")
    sub.add_parser("status", help="show lab namespaces and their addresses")
    down = sub.add_parser("down", help="remove every namespace named PREFIX*")
    down.add_argument("prefix", nargs="?", default=DEMO_PREFIX)
    probe = sub.add_parser("probe", help="socket programs for the tests").add_subparsers(
        dest="probe", required=True
    )
    probe.add_parser("observe").add_argument("port", type=int)
    whoami = probe.add_parser("whoami")
    whoami.add_argument("--bind", type=int, default=0)
    whoami.add_argument("targets", nargs="+", metavar="IP:PORT")
    connect = probe.add_parser("connect")
    connect.add_argument("target", metavar="IP:PORT")
    connect.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT)
    punch = probe.add_parser("punch")
    punch.add_argument("--bind", type=int, required=True)
    punch.add_argument("--rdv", required=True, metavar="IP:PORT")
    punch.add_argument("--window", type=float, default=5.0)
    punch.add_argument("--name", default="peer")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "probe":
        if args.probe == "observe":
            return _probe_observe(args.port)
        if args.probe == "whoami":
            return _probe_whoami(args.bind, args.targets)
        if args.probe == "connect":
            return _probe_connect(args.target, args.timeout)
        return _probe_punch(args.bind, args.rdv, args.window, args.name)
    if (reason := lab_available()) is not None:
        print(reason, file=sys.stderr)
        return 2
    if args.cmd == "down":
        try:
            removed = teardown_prefix(args.prefix)
        except (ValueError, LabError) as e:
            print(e, file=sys.stderr)
            return 1
        print("\n".join(f"removed {name}" for name in removed) or "nothing to remove")
        return 0
    if args.cmd == "status":
        namespaces = list_namespaces(DEMO_PREFIX)
        for ns in namespaces:
            addrs = _cmd(["ip", "-n", ns, "-br", "-4", "addr"]).split("\n")
            print(ns.ljust(16), " | ".join(a for a in addrs if a and not a.startswith("lo ")))
        print(f"{len(namespaces)} namespaces named {DEMO_PREFIX}*")
        return 0
    if list_namespaces(DEMO_PREFIX + "-"):
        print(f"the {DEMO_PREFIX!r} lab is already up; `python -m tests.netlab down` first")
        return 1
    lab = Lab(DEMO_PREFIX)
    try:
        lab.build()
    except BaseException:
        lab.close()
        raise
    print(lab.describe())
    bin_dir, p = Path(sys.executable).parent, DEMO_PREFIX
    print(f"""
a shell in a host:   ip netns exec {p}-a1 bash
a rendezvous:        ip netns exec {p}-rdv {bin_dir}/chathack-rendezvous --db /tmp/{p}.db
a peer behind natA:  ip netns exec {p}-a1 {bin_dir}/chathack-peer alice \\
                         --server 203.0.113.10:7777 --data-dir /tmp/{p}-alice
remove it all:       python -m tests.netlab down""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
