"""Small file helpers every writer shares: atomic replacement and hashing.

A file appears under its final name only when complete (temporary sibling, fsync, rename), so
an interrupted run never leaves a file that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

HASH_CHUNK = 1 << 20  # 1 MiB reads: large enough to keep hashlib at full speed.


def temp_sibling(final: Path) -> Path:
    """The hidden temporary name `final` is written under before the rename."""
    return final.with_name(f".{final.name}.partial")


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


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; move it into place only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(final)
    try:
        yield temp
        replace_durably(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(final: Path, data: bytes) -> None:
    with atomic_path(final) as temp, open(temp, "wb") as fh:
        fh.write(data)


def write_json_atomic(final: Path, data: object) -> None:
    write_bytes_atomic(final, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def stream_sha256(fh: BinaryIO) -> str:
    """sha256 of everything left to read in `fh` (a local or a remote file)."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return stream_sha256(fh)
