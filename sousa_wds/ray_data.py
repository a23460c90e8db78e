"""Ray Data over a packed split: `ray_dataset()` reads the samples in parallel Ray tasks.

How it works:
- The driver reads the manifest and the split's metadata once (`read.dataset`), selects rows
  (`read.query.select`, the same `where=` as `stream()`), and `plan_reads` (pure) cuts the
  selection into read tasks: runs of rows in shard order, never crossing a shard, about
  `parallelism` of them. A Hub revision is pinned to its commit before planning, so every task
  reads the same commit.
- `SousaDatasource` hands Ray one `ReadTask` per planned run. A task holds only its own rows
  (`read.samples.Rows`) and the location (`read.location`: a folder, or an HTTP base URL whose
  client carries the token in its headers: the token reaches every task, and neither the task
  name, the datasource's repr nor a log line shows it).
- In the task, `read.samples.SampleReader` reads the rows' byte ranges (one request per run of
  nearby rows), checks each member against its tar header (and sha256 with verify=True) and
  decodes it exactly as `stream()` does; rows go out in blocks of `BLOCK_ROWS`.
Records have the fields of `stream()`'s samples except `padding` (Ray splits the rows itself,
nothing is padded). Ray is imported only when `ray_dataset` is called: `pip install
'sousa-wds[ray]'`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .errors import LoaderError
from .read.dataset import packed
from .read.location import Location
from .read.query import Where, select
from .read.samples import Decoding, Rows, SampleReader

if TYPE_CHECKING:
    import ray.data

# Samples per block a read task yields: bounds a task's memory (decoded SOUSA audio is ~2 MB a
# sample) while keeping blocks large enough for Ray's per-block overhead.
BLOCK_ROWS = 16


@dataclass(frozen=True)
class ReadPlan:
    """One read task: selected rows (positions in the selection) all in one shard."""

    shard: str
    rows: np.ndarray
    nbytes: int  # bytes of the rows' ranges in the shard


def plan_reads(rows: Rows, parallelism: int) -> list[ReadPlan]:
    """Cut the selection into about `parallelism` runs of rows, in shard order, one shard each.

    Every shard with selected rows gets at least one task; a shard is split into
    ceil(its rows / target) runs of consecutive rows, target being the selection's rows over
    `parallelism`. Pure: the same rows and parallelism give the same plan."""
    if not len(rows):
        return []
    target = max(1, math.ceil(len(rows) / max(1, parallelism)))
    plans = []
    order = np.argsort(rows.shard, kind="stable")
    bounds = np.flatnonzero(np.diff(rows.shard[order])) + 1
    for group in np.split(order, bounds):
        group = np.sort(group)
        for run in np.array_split(group, math.ceil(len(group) / target)):
            nbytes = int((rows.end[run] - rows.start[run]).sum())
            plans.append(ReadPlan(rows.shards[rows.shard[run[0]]], run, nbytes))
    return plans


def _read_block(location: Location, rows: Rows, decoding: Decoding,
                verify: bool) -> Iterator[Any]:
    """A read task's body: its rows read, checked and decoded, in blocks of BLOCK_ROWS."""
    from ray.data.block import BlockAccessor

    reader = SampleReader(location, rows, decoding, verify)
    batch: list[dict[str, Any]] = []
    for row, parts in reader.read(np.arange(len(rows))):
        if isinstance(parts, LoaderError):
            raise parts
        batch.append(reader.load(int(row), parts))
        if len(batch) == BLOCK_ROWS:
            yield BlockAccessor.batch_to_block(pd.DataFrame(batch))
            batch = []
    if batch:
        yield BlockAccessor.batch_to_block(pd.DataFrame(batch))


def _datasource(location: Location, frame: pd.DataFrame, decoding: Decoding,
                verify: bool) -> Any:
    """A ray.data.Datasource over the selected rows (the class is made once Ray is imported)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class SousaDatasource(Datasource):
        def __init__(self) -> None:
            super().__init__()
            self._rows = Rows.from_frame(frame)

        def __repr__(self) -> str:
            return f"SousaDatasource({location.description!r}, rows={len(self._rows)})"

        def get_name(self) -> str:
            return "SousaWds"

        def estimate_inmemory_data_size(self) -> int:
            return int((self._rows.end - self._rows.start).sum())

        def get_read_tasks(self, parallelism: int, *args: Any, **kwargs: Any) -> list[Any]:
            tasks = []
            for plan in plan_reads(self._rows, parallelism):
                rows = Rows.from_frame(frame.iloc[plan.rows])
                meta = BlockMetadata(num_rows=len(rows), size_bytes=plan.nbytes,
                                     input_files=[plan.shard], exec_stats=None)
                tasks.append(ReadTask(
                    lambda rows=rows: _read_block(location, rows, decoding, verify), meta))
            return tasks

    return SousaDatasource()


def ray_dataset(
    source: Any,
    split: str = "train",
    where: Where = None,
    decode: bool = True,
    *,
    mono: bool = False,
    midi: Literal["bytes", "mido"] = "bytes",
    verify: bool = False,
    token: str | bool | None = None,
    revision: str | None = None,
    retries: int | None = None,
    override_num_blocks: int | None = None,
) -> ray.data.Dataset:
    """A `ray.data.Dataset` of one split's samples, read in parallel Ray tasks.

    `source`: packed folder, http(s) base URL, `user/name[@rev]` or `hf://datasets/user/name@rev`
    (`revision=` also picks a Hub revision). Records: `key`, `audio` (float32 (channels,
    frames)), `sample_rate`, `midi`, `labels` (a dict); decode=False gives `flac`/`json`/`mid`
    bytes instead, as `stream()` does. Rows come in shard order. See docs/loader.md.
    """
    try:
        import ray.data
    except ImportError:
        raise LoaderError("ray_dataset needs Ray Data: pip install 'sousa-wds[ray]'") from None
    decoding = Decoding(decode, mono, midi)
    dataset = packed(_with_revision(source, revision), token, retries)
    dataset.require_shards()
    frame = select(dataset.frame(split), where).reset_index(drop=True)
    return ray.data.read_datasource(_datasource(dataset.location, frame, decoding, verify),
                                    override_num_blocks=override_num_blocks)


def _with_revision(source: Any, revision: str | None) -> Any:
    """`source` at `revision`: a Hub dataset (`user/name` or `hf://datasets/user/name`) only."""
    if revision is None:
        return source
    text = str(source)
    hub = text.startswith("hf://") or not ("://" in text or Path(text).expanduser().exists())
    if not hub or "@" in text:
        raise LoaderError(f"revision={revision!r} applies to a Hub dataset given without "
                          f"@REVISION (USER/NAME or hf://datasets/USER/NAME), not to {text!r}")
    return f"{text}@{revision}"
