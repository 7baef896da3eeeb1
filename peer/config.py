"""How a peer is set up: who, which rendezvous, where it listens, what it keeps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from chathack.retransmit import Timing


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    server_host: str = "127.0.0.1"
    server_port: int = 7777
    listen_host: str = "0.0.0.0"
    listen_port: int = 0
    data_dir: Path | None = None
    relay_only: bool = False  # never open direct links (nor reveal addresses)
    identity: SigningKey | None = None  # default: the one in data_dir (made on first run)
    tls: bool = False  # speak TLS to the rendezvous (pinning its certificate)
    tls_fingerprint: str | None = None  # the certificate's SHA-256, if known in advance
    tls_ca: Path | None = None  # verify the certificate with this CA instead of pinning
    timing: Timing | None = None  # the re-send timers' bounds (tests shrink them)
    #: Other instances of the same service, tried in turn when one fails.
    more_servers: tuple[tuple[str, int], ...] = ()
    #: Where accepted files are saved (default: the user's downloads folder).
    downloads: Path | None = None
    #: Let files go through the rendezvous relay when there is no direct path.
    relay_files: bool = True
