"""File and byte helpers every stage shares: atomic durable writes, hashing, byte sizes.

A file appears under its final name only when complete (temporary sibling, fsync, rename), so
an interrupted run never leaves a file that looks finished. Sizes are read and shown in decimal
units, as the Hub and disk vendors count (`--shard-size 500MB` in, `1.2 GB` out); binary ones
(KiB, MiB, GiB) are accepted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import PackError, SousaWdsError

HASH_CHUNK = 1 << 20  # 1 MiB reads: large enough to keep hashlib at full speed.


NAME_MAX = 255  # bytes in one file name on common file systems


TEMP_SUFFIX = ".partial"
# temp_sibling's name for a final name too long to take the prefix and suffix.
HASHED_TEMP = re.compile(r"\.[0-9a-f]{64}" + re.escape(TEMP_SUFFIX))


def temp_sibling(final: Path) -> Path:
    """The hidden temporary name `final` is written under before the rename.

    A name too long to take the prefix and suffix is replaced by its hash, so any final name
    the file system accepts has a temporary one too.
    """
    name = f".{final.name}{TEMP_SUFFIX}"
    if len(os.fsencode(name)) > NAME_MAX:
        digest = hashlib.sha256(os.fsencode(final.name)).hexdigest()
        name = f".{digest}{TEMP_SUFFIX}"
    return final.with_name(name)


def temp_final(rel: str) -> str | None:
    """The final name (a POSIX path) whose `temp_sibling` `rel` is, or None (not a temporary
    name, or a hashed one, which names no file)."""
    folder, _, name = rel.rpartition("/")
    if (len(name) > len(TEMP_SUFFIX) + 1 and name.startswith(".") and name.endswith(TEMP_SUFFIX)
            and not HASHED_TEMP.fullmatch(name)):
        final = name[1:-len(TEMP_SUFFIX)]
        return f"{folder}/{final}" if folder else final
    return None


def replace_durably(temp: Path, final: Path) -> None:
    """Move a finished `temp` to `final` so that after a power loss `final` is either absent
    or complete: the data reaches the disk before the rename, and the rename before we go on."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def drop_cached(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to drop `length` bytes of `fd` from `offset` (0: to the end) from the
    page cache, where it can (not macOS; written pages only once synced).

    For files streamed through once (shards written by pack, read by `verify --deep`): kept
    cached, they make the kernel find fresh pages for every next block, the largest cost of
    both on this VM (below, and docs/benchmarks.md); dropped, the next blocks reuse the pages.
    """
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):  # a hint: a file system may refuse it
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def no_follow(path: str, flags: int) -> int:
    """An `open()` opener that refuses a symbolic link in place of the file (ELOOP): a link
    swapped in under a temporary name would have the bytes written wherever it points."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o666)


def create_new(path: Path) -> None:
    """Create `path` empty and exclusively, never through a link. The name is predictable, so
    whatever holds it (the temporary file of a run that crashed, a link someone planted in a
    shared folder) is unlinked, not written through, and the file made anew."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, 0o666)
    except FileExistsError:
        path.unlink()  # a link itself goes, not its target
        fd = os.open(path, flags, 0o666)
    os.close(fd)


def is_cached(fd: int, offset: int) -> bool:
    """Whether the byte of `fd` at `offset` is in the page cache: a read that may not wait for
    the disk (RWF_NOWAIT) gets it. False where that cannot be asked (not Linux).

    Not free of effects: on a miss the kernel may still start reading that page (Linux 6.18
    here: False, then True a moment later), so it is no way to measure what is cached."""
    if not hasattr(os, "RWF_NOWAIT"):
        return False
    try:
        return os.preadv(fd, [bytearray(1)], offset, os.RWF_NOWAIT) == 1
    except OSError:  # EAGAIN: not cached; or a file system without it
        return False


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`, newly created (`create_new`); move it into place
    only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(final)
    try:
        create_new(temp)  # a link left (or planted) there is replaced, never written through
        yield temp
        replace_durably(temp, final)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        # A full disk or a failed fsync names no file: name ours. Our own errors (a source
        # file missing is a FileNotFoundError too) already say what and where.
        if exc.filename is None and not isinstance(exc, SousaWdsError):
            raise with_filename(exc, final) from exc
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def with_filename(exc: OSError, path: Path) -> OSError:
    """`exc` again, naming `path` ("No space left on device" alone does not say where)."""
    if exc.errno is not None:
        return OSError(exc.errno, exc.strerror or str(exc), str(path))
    return OSError(f"cannot write {path}: {exc}")


def write_bytes_atomic(final: Path, data: bytes) -> None:
    with atomic_path(final) as temp, open(temp, "wb", opener=no_follow) as fh:
        fh.write(data)


def write_json_atomic(final: Path, data: object, *, compact: bool = False) -> None:
    """`compact` for files only we read back: json's C encoder runs only without indent."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":")) if compact else \
        json.dumps(data, indent=2, sort_keys=True)
    write_bytes_atomic(final, (text + "\n").encode())


def stream_sha256(fh: BinaryIO) -> str:
    """sha256 of everything left to read in `fh` (a local or a remote file)."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return stream_sha256(fh)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str | int) -> int:
    """'500MB', '1GB', '1.5GiB' or a byte count → bytes (decimal units, as the Hub counts)."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise PackError(
                f"cannot read size {text!r}: use bytes or a unit, e.g. 500MB or 1GB")
        unit = (match.group(2) or "").lower().removesuffix("b")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise PackError(f"shard size must be positive, got {text!r}")
    return value


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
