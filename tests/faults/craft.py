"""Rewrite a packed copy for tests: metadata columns, member hashes (FORMAT_VERSION 2)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sousa_wds.format import SPLITS


def rewrite_metadata(folder: Path, split: str,
                     change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = folder / "metadata" / f"{split}.parquet"
    table = pq.read_table(path)
    frame = change(table.to_pandas())
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def add_member_hashes(folder: Path) -> None:
    """FORMAT_VERSION 2 columns (json_sha256, mid_sha256), computed from the shard bytes when
    the pack that wrote `folder` predates them."""
    for split in SPLITS:
        def change(frame):
            for ext in ("json", "mid"):
                if f"{ext}_sha256" not in frame.columns:
                    frame[f"{ext}_sha256"] = [
                        hashlib.sha256(member_bytes(folder, row, ext)).hexdigest()
                        for row in frame.itertuples()]
            return frame
        rewrite_metadata(folder, split, change)


def member_bytes(folder: Path, row, ext: str) -> bytes:
    with open(folder / row.shard_path, "rb") as fh:
        fh.seek(getattr(row, f"{ext}_offset"))
        return fh.read(getattr(row, f"{ext}_size"))
