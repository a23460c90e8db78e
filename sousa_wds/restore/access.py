"""Where extract reads a pack: the reader's location and selection, and verified file copies.

How it works:
- `open_source` resolves what the user typed (folder, http(s) URL, Hub repo) once, so a Hub
  revision is pinned to one commit for the metadata, the label files and every shard; the
  resulting location is handed to the public `sousa_wds.metadata` / `sousa_wds.stream`.
- `select` applies `where` exactly as `sousa_wds.stream` does, so the CLI's `--where` means
  the same in `stream` and `extract`; `read_manifest` is the reader's too.
- `fetch` copies one file of the pack (a label table) into DIR's staging folder by byte range,
  in pieces, checked against the manifest's size and sha256; a staged copy that already
  matches is kept, so a rerun does not download it again.
These three are the only uses of the reader's non-public names in `sousa_wds.restore`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ExtractError
from ..format import MANIFEST, FileEntry, Manifest
from ..io import atomic_path, file_sha256

COPY_CHUNK = 4 << 20  # bytes per read when copying a label file: bounded memory


def open_source(source: Any, token: str | bool | None) -> Any:
    """The location of `source` (a folder, URL or Hub repo pinned to one commit)."""
    from ..read.location import open_location

    return open_location(source, token)


def select(frame: pd.DataFrame, where: Any) -> pd.DataFrame:
    """The rows of `frame` that `where` selects, by the stream's own rule."""
    from ..read.query import select as _select

    return _select(frame, where)


def read_manifest(location: Any) -> Manifest:
    """The manifest as the reader reads it (a folder without one named for what it is)."""
    from ..read.dataset import read_manifest as _read_manifest

    return _read_manifest(location)


def fetch(location: Any, manifest: Manifest, path: str, dest: Path) -> Path:
    """`path` of the pack copied to `dest`, checked against the manifest (kept if it matches)."""
    entry = manifest.file(path)
    if entry is None:
        raise ExtractError(f"{location.description}: {MANIFEST} does not list {path}; the pack "
                           "is incomplete or of another version (re-pack or re-download it)")
    if _matches(dest, entry):
        return dest
    digest = hashlib.sha256()
    with atomic_path(dest) as temp, open(temp, "wb") as out:
        reader = location.open_range(path, 0, entry.bytes)
        try:
            left = entry.bytes
            while left:
                chunk = reader.read(min(left, COPY_CHUNK))
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        finally:
            reader.close()
        if digest.hexdigest() != entry.sha256:
            raise ExtractError(f"{path} in {location.description} does not match its sha256 in "
                               f"{MANIFEST}; re-download or re-pack it (`sousa-wds verify "
                               "--deep` checks every file)")
    return dest


def _matches(path: Path, entry: FileEntry) -> bool:
    return (path.is_file() and path.stat().st_size == entry.bytes
            and file_sha256(path) == entry.sha256)
