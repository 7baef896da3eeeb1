"""``chathack-peer NAME``: log in to a rendezvous and chat."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import platformdirs
import trio

from chathack import __version__
from chathack.errors import RemoteProtocolError
from chathack.protocol import check_name
from peer.errors import LoginFailed, PeerError
from peer.identity import fold_name
from peer.node import PasswordSource, PeerConfig, fixed_password, open_peer
from peer.tls import normalize_fingerprint

DEFAULT_SERVER = "127.0.0.1:7777"
PASSWORD_ENV = "CHATHACK_PASSWORD"
SERVER_ENV = "CHATHACK_SERVER"
#: Password prompts before an interactive login gives up.
MAX_PROMPTS = 3


def host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` too) for argparse."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port) if default_port is not None else ""
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:7777)")
    return host, int(port)


def host_ports(text: str, default_port: int) -> list[tuple[str, int]]:
    """``HOST:PORT,HOST:PORT,...``: the instances of one service, in order."""
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT or a comma-separated list of them"
        )
    return [host_port(part, default_port) for part in parts]


def user_name(text: str) -> str:
    try:
        return check_name(text)
    except RemoteProtocolError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def fingerprint_arg(text: str) -> str:
    try:
        return normalize_fingerprint(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def peers_root() -> Path:
    """Where the per-user data dirs live (``~/.local/share/chathack/peers`` on Linux)."""
    return Path(platformdirs.user_data_dir("chathack")) / "peers"


def default_data_dir(name: str, root: Path | None = None) -> Path:
    """``name``'s data dir under ``root`` (default :func:`peers_root`): named by
    the folded name (:func:`peer.identity.fold_name`), as the rendezvous folds
    it, so ``chathack-peer Dave`` is dave, with dave's identity key."""
    return (root if root is not None else peers_root()) / fold_name(name)


def find_data_dir(name: str, root: Path | None = None) -> tuple[Path, list[str]]:
    """:func:`default_data_dir`, after looking for data an older version left
    under another spelling of ``name``; and what to tell the user about it.

    Older versions named the dir as typed (``peers/Dave``). Such a dir is
    renamed to the folded name when there is no dir by that name yet, else
    left alone and named in a note: an identity is never lost silently.
    """
    root = root if root is not None else peers_root()
    folded = default_data_dir(name, root)
    others = _other_spellings(root, folded)
    notes: list[str] = []
    if not folded.is_dir() and others:
        # Several old spellings (dave ran as Dave and as DAVE): the one used last.
        old = max(others, key=_last_used)
        others.remove(old)
        try:
            old.rename(folded)
        except OSError as e:
            if folded.is_dir():  # another chathack-peer starting at once moved it
                return folded, notes
            notes.append(
                f"Using {old}, made by an older chathack-peer for {old.name}: it could not "
                f"be renamed to {folded} ({e.strerror or e}); rename it yourself to silence this"
            )
            folded = old
        else:
            notes.append(
                f"Moved your data (identity key, pinned keys, history) from {old} to {folded}: "
                "user names are not case-sensitive, and a data folder is now named in lower case"
            )
    for other in others:
        notes.append(
            f"Not using {other}: an older chathack-peer made it when run as {other.name}, "
            f"but user names are not case-sensitive and {folded} is the data folder of "
            f"{fold_name(name)}. If the identity key in {other} is the one your partners know, "
            f"put that folder in place of {folded}"
        )
    return folded, notes


def _other_spellings(root: Path, folded: Path) -> list[Path]:
    """Dirs in ``root`` named by another spelling of ``folded``'s name."""
    try:
        entries = sorted(root.iterdir())
    except OSError:  # no root yet (first run), or unreadable: nothing to find
        return []
    found = []
    for path in entries:
        if path.name == folded.name or fold_name(path.name) != folded.name:
            continue
        with suppress(OSError):
            if not path.is_dir() or (folded.exists() and path.samefile(folded)):
                continue  # a file; or a case-insensitive file system: the same dir
            found.append(path)
    return found


def _last_used(path: Path) -> float:
    """When the data dir ``path`` was last written (its newest entry)."""
    times = [0.0]
    with suppress(OSError):
        times.append(path.stat().st_mtime)
        for entry in path.iterdir():
            times.append(entry.stat().st_mtime)
    return max(times)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chathack-peer",
        description="Chat from the terminal with people on other networks. Logs in to a "
        "chathack rendezvous (registering NAME the first time), then asks: "
        "Who do you want to talk to?",
        epilog=f"The password is asked without echo, or read from ${PASSWORD_ENV} for scripts. "
        "When standard input is not a terminal, plain mode reads lines from it and prints "
        "plain lines: incoming messages as 'origin: text', program lines as '* text'.",
    )
    p.add_argument("name", type=user_name, metavar="NAME", help="your user name")
    p.add_argument(
        "--server",
        type=lambda t: host_ports(t, 7777),
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        metavar="HOST:PORT[,HOST:PORT...]",
        help="the rendezvous; several instances of one service separated by commas are "
        "tried in order, the next one when the current one fails "
        f"(default: ${SERVER_ENV} or {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--listen",
        type=lambda t: host_port(t, 0),
        default="0.0.0.0:0",
        metavar="HOST:PORT",
        help="where to accept direct links from other peers (default: all addresses, a free port)",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        help="speak TLS to the rendezvous (it runs with --tls); its certificate is pinned "
        "on first use and checked afterwards",
    )
    p.add_argument(
        "--tls-fingerprint",
        type=fingerprint_arg,
        metavar="SHA256",
        help="the rendezvous certificate's SHA-256 fingerprint, as it prints at startup "
        "(implies --tls; no trust on first use needed)",
    )
    p.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="verify the rendezvous certificate with this CA bundle instead (implies --tls)",
    )
    p.add_argument(
        "--relay-only",
        action="store_true",
        help="never open direct links nor tell anyone your addresses: every "
        "conversation goes through the rendezvous relay",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where this user's files live (default: a per-user data folder)",
    )
    p.add_argument(
        "--downloads",
        type=Path,
        default=None,
        metavar="DIR",
        help="where files you ::accept are saved (default: your downloads folder)",
    )
    p.add_argument(
        "--no-file-relay",
        action="store_true",
        help="files never go through the rendezvous relay: a transfer waits for a "
        "direct or punched path",
    )
    p.add_argument(
        "--ui",
        choices=["windows", "line"],
        default="windows",
        help="the terminal UI: a window per conversation, as in irssi (windows; Alt-1..9, "
        "Ctrl-N/Ctrl-P), or one scrollback for every conversation (line) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--no-bell",
        action="store_true",
        help="the windowed UI does not ring the terminal bell for messages elsewhere",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="plain line mode even on a terminal (the default when stdin is a pipe)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="detail of diagnostics on stderr (default: %(default)s)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


@contextmanager
def _terminal_restored() -> Iterator[None]:
    """Put the terminal back as it was if the block is left early (Ctrl-C)."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except Exception:  # not a terminal (or no termios): nothing to restore
        yield
        return
    try:
        yield
    except BaseException:
        with suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        sys.stderr.write("\n")
        raise


def interactive_password(name: str) -> PasswordSource:
    async def source(prompt: str, is_new: bool, attempt: int) -> str:
        if attempt > MAX_PROMPTS:
            reason = prompt.splitlines()[0] if "\n" in prompt else "Not logged in"
            raise LoginFailed(f"{reason} ({MAX_PROMPTS} tries): start chathack-peer again to retry")

        def ask() -> str:
            while True:
                secret = getpass.getpass(f"{prompt}: ")
                if not is_new:
                    return secret
                if getpass.getpass("Type it again to confirm: ") == secret:
                    return secret
                print("The two passwords differ; try again.", file=sys.stderr)

        # Ctrl-C leaves at once: the question is abandoned in its thread, and
        # the echo that getpass turned off is turned back on here.
        with _terminal_restored():
            return await trio.to_thread.run_sync(ask, abandon_on_cancel=True)

    return source


async def run(args: argparse.Namespace, plain: bool) -> int:
    if args.data_dir is not None:
        data_dir = args.data_dir
    else:
        data_dir, notes = find_data_dir(args.name)
        for note in notes:
            print(f"chathack-peer: {note}", file=sys.stderr)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A folder made by an older version under umask 022: its history holds
    # every message in clear, readable by any local user until closed.
    data_dir.chmod(0o700)
    config = PeerConfig(
        name=args.name,
        server_host=args.server[0][0],
        server_port=args.server[0][1],
        more_servers=tuple(args.server[1:]),
        listen_host=args.listen[0],
        listen_port=args.listen[1],
        data_dir=data_dir,
        relay_only=args.relay_only,
        downloads=args.downloads,
        relay_files=not args.no_file_relay,
        tls=args.tls,
        tls_fingerprint=args.tls_fingerprint,
        tls_ca=args.tls_ca,
    )
    secret = os.environ.get(PASSWORD_ENV)
    if secret is not None:
        source = fixed_password(secret)
    elif plain or not sys.stdin.isatty():
        raise LoginFailed(f"No terminal to ask the password on: set ${PASSWORD_ENV}")
    else:
        source = interactive_password(args.name)
    async with open_peer(config, source) as node:
        if plain:
            from peer.plain import run_plain

            return await run_plain(node)
        if args.ui == "windows":
            from peer.windows_ui import run_windows

            return await run_windows(
                node, bell=not args.no_bell, history_file=data_dir / "input-history"
            )
        from peer.tty import run_tty

        return await run_tty(node, data_dir / "input-history")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # all we write (messages, keys, typed lines) is this user's alone
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    plain = args.plain or not sys.stdin.isatty() or not sys.stdout.isatty()
    try:
        return trio.run(run, args, plain)
    except PeerError as e:
        print(f"chathack-peer: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug: one line for the user, the traceback on request
        logging.getLogger("chathack.peer").debug("unexpected error", exc_info=True)
        print(
            f"chathack-peer: unexpected error: {e!r}. Run again with --log-level debug "
            "for details, and please report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
