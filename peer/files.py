"""Files on this machine's disk for transfers: what a sender reads, where a
receiver writes, and the records that let both resume after a restart.

The receiver's rules (a name from the network is never trusted):

* a file is saved only in the folder the user chose (default: the user's
  downloads folder, from platformdirs), under a bare name: a name holding a
  path separator, a control or format character (a terminal escape, a
  right-to-left override), or nothing but dots is refused, never cleaned up
  into something the user did not see;
* the bytes go to a part file named by the transfer id alone
  (``.chathack-<fid>.part``, mode 0600, opened without following links) and
  are linked into place only after the whole file's SHA-256 matched; an
  existing name is never overwritten (``name (1).ext`` ...);
* an offer larger than the folder's free space is refused before anything is
  written.

A received file is hashed as it is written (:class:`PartWriter`), so the
check at the end costs nothing more than the last chunk. (A writer thread
was tried: handing each chunk over cost more than it saved, benchmarks/README.md.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mimetypes
import os
import shutil
import stat
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import platformdirs

#: Longest file name accepted, in UTF-8 bytes (what Linux file systems hold).
MAX_NAME_BYTES = 255
#: Kept free beyond the file itself: a disk filled to the last byte breaks
#: everything else the user runs.
FREE_SPACE_MARGIN = 16 * 1024 * 1024
_HASH_BLOCK = 1 << 20


class UnsafeName(ValueError):
    """A file name from the network that cannot be saved as it is."""


def check_name(name: str) -> str:
    """``name`` if it is safe to create inside a folder, else :class:`UnsafeName`."""
    if not name or name.strip(". ") == "":
        raise UnsafeName("the file has no usable name")
    if "/" in name or "\\" in name:
        raise UnsafeName("the file name holds a path (only a bare name is accepted)")
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Co", "Cn"):
            raise UnsafeName(f"the file name holds a control character (U+{ord(ch):04X})")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise UnsafeName(f"the file name is longer than {MAX_NAME_BYTES} bytes")
    return name


def numbered(name: str, n: int) -> str:
    """``report.pdf`` -> ``report (n).pdf`` (n > 0); the suffix survives."""
    if n == 0:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({n})"
    return f"{stem} ({n}).{ext}"


def media_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def sha256_of(path: Path, upto: int | None = None) -> hashlib._Hash:  # type: ignore[name-defined]
    """A SHA-256 object fed the first ``upto`` bytes of ``path`` (all by default)."""
    digest = hashlib.sha256()
    left = upto
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(_HASH_BLOCK if left is None else min(_HASH_BLOCK, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest


def regular_file(path: str) -> tuple[Path, int]:
    """The absolute path and size of the regular file ``path`` (OSError if it is not one)."""
    source = Path(path).expanduser().resolve()
    st = source.stat()
    if not stat.S_ISREG(st.st_mode):
        raise IsADirectoryError(0, "not a regular file")
    return source, st.st_size


def disk_free(folder: Path) -> int:
    return shutil.disk_usage(folder).free


class PartWriter:
    """One part file being received: its chunks written in order, and hashed."""

    def __init__(self, fd: int, digest: Any) -> None:
        self.fd = fd
        self._digest = digest

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, offset)
        self._digest.update(data)

    def hexdigest(self) -> str:
        """The SHA-256 of everything written."""
        return self._digest.hexdigest()


@dataclass(slots=True)
class Record:
    """What survives a restart of one unfinished transfer."""

    fid: str
    partner: str
    name: str
    size: int
    sha256: str
    kind: str
    incoming: bool
    source: str = ""  # the sender's own file
    folder: str = ""  # where the receiver saves it
    relay: bool = True  # the other side lets it go through the relay
    done_at: float = 0.0  # the receiver's: when it was saved (wall clock); 0 unfinished


class FileStore:
    """Reading, writing and remembering transfers under ``data_dir`` (None:
    nothing remembered, for tests and the library API)."""

    def __init__(
        self,
        data_dir: Path | None,
        downloads: Path | None = None,
        free_space: Callable[[Path], int] = disk_free,
    ) -> None:
        self.records_dir = data_dir / "transfers" if data_dir is not None else None
        self._downloads = downloads
        self.free_space = free_space
        self._open: dict[str, BinaryIO] = {}
        self._parts: dict[str, PartWriter] = {}

    @property
    def downloads(self) -> Path:
        if self._downloads is None:
            self._downloads = Path(platformdirs.user_downloads_dir())
        return self._downloads

    # ------------------------------------------------------------ records
    def remember(self, record: Record) -> None:
        if self.records_dir is None:
            return
        self.records_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.records_dir / f"{record.fid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)

    def forget(self, fid: str) -> None:
        if self.records_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.records_dir / f"{fid}.json").unlink()

    def records(self) -> list[Record]:
        """Every transfer an earlier run left unfinished (unreadable records skipped)."""
        if self.records_dir is None or not self.records_dir.is_dir():
            return []
        found = []
        for path in sorted(self.records_dir.glob("*.json")):
            try:
                data: Any = json.loads(path.read_text())
                found.append(Record(**data))
            except (OSError, ValueError, TypeError):
                continue
        return found

    # ------------------------------------------------------------ sending
    def read(self, fid: str, source: str, offset: int, n: int) -> bytes:
        f = self._open.get(fid)
        if f is None:
            f = self._open[fid] = open(source, "rb")  # noqa: SIM115 (kept open)
        return os.pread(f.fileno(), n, offset)

    # ---------------------------------------------------------- receiving
    def part_path(self, folder: Path, fid: str) -> Path:
        return folder / f".chathack-{fid}.part"

    def open_part(self, folder: Path, fid: str, size: int) -> int:
        """Open (or create) the part file of a ``size``-byte file; the bytes
        it already holds (a part longer than the file starts again from 0)."""
        self.close(fid)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.part_path(folder, fid), flags, 0o600)
        f = self._open[fid] = os.fdopen(fd, "r+b")
        held = os.fstat(fd).st_size
        if held > size:
            os.ftruncate(fd, 0)
            held = 0
        digest = sha256_of(self.part_path(folder, fid), held) if held else hashlib.sha256()
        self._parts[fid] = PartWriter(f.fileno(), digest)
        return held

    def write(self, fid: str, offset: int, data: bytes) -> None:
        """``data`` into the part file at ``offset`` (the next byte it needs)."""
        self._parts[fid].write(offset, data)

    def digest(self, fid: str) -> str:
        """The SHA-256 (hex) of what the part file holds."""
        return self._parts[fid].hexdigest()

    def place(self, folder: Path, fid: str, name: str) -> Path:
        """Link the finished part file into ``folder`` under ``name`` or the
        first free ``name (n)``, never over an existing file; return the path."""
        self.close(fid)
        part = self.part_path(folder, fid)
        n = 0
        while True:
            target = folder / numbered(name, n)
            try:
                os.link(part, target, follow_symlinks=False)
            except FileExistsError:
                n += 1
                continue
            except OSError:
                # A file system without hard links: check, then rename (a race
                # with another program creating the same name is possible here).
                if target.exists() or target.is_symlink():
                    n += 1
                    continue
                os.rename(part, target)
                return target
            part.unlink()
            return target

    def discard(self, folder: Path, fid: str) -> None:
        self.close(fid)
        with contextlib.suppress(FileNotFoundError):
            self.part_path(folder, fid).unlink()

    def close(self, fid: str) -> None:
        self._parts.pop(fid, None)
        f = self._open.pop(fid, None)
        if f is not None:
            f.close()

    def close_all(self) -> None:
        for fid in list(self._open):
            self.close(fid)
