"""Read and rewrite a packed copy for tests: metadata rows, member bytes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def rewrite_metadata(folder: Path, split: str,
                     change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = folder / "metadata" / f"{split}.parquet"
    table = pq.read_table(path)
    frame = change(table.to_pandas())
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def member_bytes(folder: Path, row, ext: str) -> bytes:
    with open(folder / row.shard_path, "rb") as fh:
        fh.seek(getattr(row, f"{ext}_offset"))
        return fh.read(getattr(row, f"{ext}_size"))
