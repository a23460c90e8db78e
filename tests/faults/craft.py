"""Read and rewrite a packed copy for tests: metadata rows, member bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sousa_wds.format import MANIFEST, Manifest, metadata_path


def rewrite_metadata(folder: Path, split: str,
                     change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    """Change the split's metadata rows and re-list the file in the manifest, as a hostile or
    broken publisher would: the loader reads metadata only when it matches the manifest."""
    rel = metadata_path(split)
    table = pq.read_table(folder / rel)
    frame = change(table.to_pandas())
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / rel)
    relist(folder, rel)


def edit_manifest(folder: Path, change: Callable[[dict], None]) -> None:
    """Apply `change` to the manifest as a dict and write it back as pack would."""
    data = json.loads((folder / MANIFEST).read_text())
    change(data)
    (folder / MANIFEST).write_bytes(Manifest.from_dict(data).to_json())


def relist(folder: Path, rel: str) -> None:
    """Make the manifest agree with the file's new bytes, so only content checks can tell."""
    data = (folder / rel).read_bytes()

    def change(m: dict) -> None:
        entry = next(f for f in m["files"] if f["path"] == rel)
        entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())

    edit_manifest(folder, change)


def member_bytes(folder: Path, row, ext: str) -> bytes:
    with open(folder / row.shard_path, "rb") as fh:
        fh.seek(getattr(row, f"{ext}_offset"))
        return fh.read(getattr(row, f"{ext}_size"))
