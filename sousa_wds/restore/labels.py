"""Write the generator's label files for an extract: labels/*.parquet, splits.json, index.json.

How it works:
- `samples.parquet` and `exercises.parquet` come from the pack's metadata rows (the label
  columns it keeps), in restored source order, with the generator's column sets and order
  (`format.SAMPLE_COLUMNS`, `format.EXERCISE_COLUMNS`); `audio_path` and `midi_path` are the
  files the plan restored, `midi_path` set on each group's first sample only.
- `strokes.parquet` and `measures.parquet` are streamed batch by batch from the staged
  `labels/{table}/{split}.parquet` copies, split after split, keeping the selected samples'
  rows in their source order: tens of millions of rows never sit in memory at once.
- `splits.json` lists each split's profiles; `index.json` the sample ids in samples.parquet's
  order. Values come out in the canonical types, which `sousa-wds check` accepts.
Every file is written under a temporary name and renamed when complete. `run` has them written
into its staging folder first (`OUTPUTS`, relative to the folder given), before any media: it
compares them with what DIR already holds, then moves them into place last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import ExtractError
from ..format import (
    EXERCISE_COLUMNS,
    LABEL_TABLE_COLUMNS,
    SAMPLE_COLUMNS,
    SOURCE_SPLIT_FIELDS,
    SPLITS,
    column_mismatches,
    conform,
)
from ..io import atomic_path, write_json_atomic
from .plan import ExtractPlan

STREAM_BATCH_ROWS = 65_536  # label rows per batch: a few MB
# Every file `write_labels` writes, relative to its folder.
OUTPUTS = (*(f"labels/{t}.parquet" for t in ("samples", "exercises", *LABEL_TABLE_COLUMNS)),
           "splits.json", "index.json")
PARQUET_OPTIONS = {"compression": "snappy"}  # what the generator (pandas → pyarrow) writes


def check_table(path: Path, columns: Mapping[str, pa.DataType], what: str) -> None:
    """Refuse a staged label table that is not Parquet or lacks a column (or has one of
    another type) that extract reads: `what` names the pack's file in the message."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        problem = f"is not a readable Parquet file ({type(exc).__name__}: {exc})"
    else:
        missing, wrong = column_mismatches(schema, columns)
        problem = (f"lacks the column(s) {', '.join(missing)}" if missing else
                   "has column(s) of another type: " + ", ".join(
                       f"{n} ({schema.field(n).type}, not {columns[n]})" for n in wrong)
                   if wrong else "")
    if problem:
        raise ExtractError(f"{what} {problem}: the pack is damaged or was not written by "
                           "sousa-wds. Re-download it from its publisher or re-pack the dataset")


def label_ids(path: Path) -> list[list[str]]:
    """The sample_id of each row of a staged label table, batch by batch (one column only)."""
    parquet = pq.ParquetFile(path)
    return [pc.unique(batch.column(0)).to_pylist()
            for batch in parquet.iter_batches(batch_size=STREAM_BATCH_ROWS,
                                              columns=["sample_id"])]


def write_labels(out: Path, plan: ExtractPlan, rows: pd.DataFrame,
                 staged: Mapping[tuple[str, str], Path]) -> None:
    """Every label file of the extract; `rows` are the selected metadata rows in plan order."""
    labels = out / "labels"
    table = pa.Table.from_pandas(rows, preserve_index=False)
    _write_table(labels / "samples.parquet", _samples(plan, table))
    _write_table(labels / "exercises.parquet", conform(table, EXERCISE_COLUMNS))
    keys = pa.array([s.key for s in plan.samples], pa.string())
    splits = [s for s in SPLITS if any((t, s) in staged for t in LABEL_TABLE_COLUMNS)]
    for table, columns in LABEL_TABLE_COLUMNS.items():
        _copy_rows(labels / f"{table}.parquet", [staged[table, s] for s in splits], columns, keys)
    write_json_atomic(out / "splits.json", _splits_json(plan, rows))
    write_json_atomic(out / "index.json", _index_json(plan, rows))


def _samples(plan: ExtractPlan, table: pa.Table) -> pa.Table:
    paths = {
        "audio_path": pa.array([s.audio.path for s in plan.samples], pa.string()),
        "midi_path": pa.array([s.midi.path if s.owns_midi else None for s in plan.samples],
                              pa.string()),
    }
    for name, values in paths.items():
        table = table.append_column(name, values)
    return conform(table, SAMPLE_COLUMNS)


def _write_table(final: Path, table: pa.Table) -> None:
    with atomic_path(final) as temp:
        pq.write_table(table, temp, **PARQUET_OPTIONS)


def _copy_rows(final: Path, sources: Sequence[Path], columns: dict[str, pa.DataType],
               keys: pa.Array) -> None:
    """The rows of the selected samples, source after source, in their order."""
    schema = pa.schema([pa.field(n, t) for n, t in columns.items()])
    with atomic_path(final) as temp, pq.ParquetWriter(temp, schema, **PARQUET_OPTIONS) as writer:
        for source in sources:
            parquet = pq.ParquetFile(source)
            for batch in parquet.iter_batches(batch_size=STREAM_BATCH_ROWS,
                                              columns=list(columns)):
                batch = conform(batch, columns)
                part = batch.filter(pc.is_in(batch.column("sample_id"), value_set=keys))
                if part.num_rows:
                    writer.write_batch(part)


def _splits_json(plan: ExtractPlan, rows: pd.DataFrame) -> dict:
    profiles: dict[str, dict[str, None]] = {split: {} for split in SPLITS}
    for sample, profile in zip(plan.samples, rows["profile_id"]):
        profiles[sample.split][profile] = None
    return {SOURCE_SPLIT_FIELDS[split]: list(profiles[split]) for split in SPLITS}


def _index_json(plan: ExtractPlan, rows: pd.DataFrame) -> dict:
    rates = sorted({int(r) for r in rows["sample_rate"]})
    return {
        "num_samples": len(plan.samples),
        "sample_ids": [s.key for s in plan.samples],
        "config": {"audio_format": "flac", "sample_rate": rates[0] if len(rates) == 1 else None},
    }
