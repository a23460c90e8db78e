"""Index a packed folder: per-split Parquet metadata and labels, shard indexes, the manifest.

How it works:
- `metadata/{split}.parquet` joins each sample's labels with the location rows the shard
  writer returned (shard, offsets, sizes, hashes), in shard order, under one fixed schema
  (`format.METADATA_SCHEMA`) so every split and every release agree.
- `labels/{strokes,measures}/{split}.parquet` are streamed from the source in record batches
  and routed by sample_id: tens of millions of stroke rows never sit in memory at once.
- `index/{split}.json` is a wids shard list (relative urls) with each shard's sha256.
- `manifest.json` lists every file with its size and sha256; it is written last, so a folder
  with a manifest is a finished one.
All files are written to a temporary name and renamed; Parquet is written without timestamps,
so the same input gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .format import (
    FORMAT_VERSION,
    LABEL_COLUMNS,
    LABEL_TABLE_COLUMNS,
    LOCATION_COLUMNS,
    MANIFEST,
    METADATA_SCHEMA,
    SPLITS,
    FileEntry,
    Manifest,
    conform,
    index_path,
    labels_path,
    metadata_path,
)
from .io import (
    atomic_path,
    file_sha256,
    replace_durably,
    temp_sibling,
    write_bytes_atomic,
    write_json_atomic,
)
from .shards import ShardResult
from .source import SourceDataset, SourceSample, stream_parquet

# Row groups small enough that a reader filtering by a few columns skips most of the file.
ROW_GROUP_SIZE = 10_000
STREAM_BATCH_ROWS = 16_384  # bounds memory: a few MB of stroke rows at a time
LABEL_ROW_GROUP_ROWS = 131_072  # stroke rows per row group: ~2 MB, a few hundred per split
PARQUET_OPTIONS = {"compression": "zstd", "write_statistics": True, "store_schema": True}


def metadata_table(
    dataset: SourceDataset, split: str, samples: Sequence[SourceSample],
    locations: Sequence[dict],
) -> pa.Table:
    """Labels + location columns, one row per sample, in the order given."""
    labels = dataset.label_rows(samples)
    columns = {name: labels.column(name) for name in LABEL_COLUMNS}
    for name, typ in LOCATION_COLUMNS.items():
        if name == "split":
            values: list = [split] * len(samples)
        else:
            values = [loc[name] for loc in locations]
        columns[name] = pa.array(values, typ)
    return pa.table(columns, schema=METADATA_SCHEMA)


def location_rows(results: Iterable[ShardResult]) -> list[dict]:
    """Flatten shard results into metadata location rows (adds the shard naming columns)."""
    rows = []
    for result in results:
        for row in result.rows:
            rows.append(
                row
                | {
                    "shard": result.name,
                    "shard_path": result.path,
                    "audio_shard": result.path,
                    "audio_filename": f"{row['key']}.flac",
                    "midi_shard": result.path,
                    "midi_filename": f"{row['key']}.mid",
                }
            )
    return rows


def write_parquet(table: pa.Table, final: Path) -> None:
    with atomic_path(final) as temp:
        pq.write_table(table, temp, row_group_size=ROW_GROUP_SIZE, **PARQUET_OPTIONS)


class _LabelSplitWriter:
    """One split's label table: batches gathered into row groups, written under a temp name."""

    def __init__(self, final: Path, schema: pa.Schema) -> None:
        self.final = final
        self.temp = temp_sibling(final)
        self.temp.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.temp, schema, **PARQUET_OPTIONS)
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= LABEL_ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending),
                                     row_group_size=LABEL_ROW_GROUP_ROWS)
            self._pending, self._rows = [], 0

    def finish(self) -> None:
        self._flush()
        self._writer.close()
        replace_durably(self.temp, self.final)

    def abandon(self) -> None:
        self._writer.close()
        self.temp.unlink(missing_ok=True)


def write_label_tables(dataset: SourceDataset, out: Path) -> None:
    """Split strokes and measures per split, streaming batches from the source files.

    Rows follow the samples' order, so a batch holds a few dozen samples: their split is
    looked up once each, and rows are routed with a small per-batch lookup.
    """
    split_of = {s.key: SPLITS.index(s.split) for s in dataset.samples}
    for table, columns in LABEL_TABLE_COLUMNS.items():
        schema = pa.schema([pa.field(n, t) for n, t in columns.items()])
        writers: list[_LabelSplitWriter] = []
        try:
            for split in SPLITS:
                writers.append(_LabelSplitWriter(out / labels_path(table, split), schema))
            source = stream_parquet(dataset.label_path(table))
            for batch in source.iter_batches(batch_size=STREAM_BATCH_ROWS, columns=list(columns)):
                batch = conform(batch, columns)
                ids = batch.column("sample_id")
                present = pc.unique(ids)
                codes = pa.array([split_of[k] for k in present.to_pylist()], pa.int8())
                row_split = pc.take(codes, pc.index_in(ids, value_set=present))
                for code, writer in enumerate(writers):
                    part = batch.filter(pc.equal(row_split, code))
                    if part.num_rows:
                        writer.add(part)
            for writer in writers:
                writer.finish()
        except BaseException:
            for writer in writers:
                writer.abandon()
            raise


def wids_index(split: str, results: Sequence[ShardResult]) -> dict:
    """A wids shard list: urls are relative to the index file's folder's parent (the root)."""
    return {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": split,
        "shardlist": [
            {
                "url": f"../{r.path}",
                "nsamples": len(r.rows),
                "filesize": r.bytes,
                "sha256": r.sha256,
            }
            for r in results
        ],
    }


def write_indexes(out: Path, results_by_split: dict[str, list[ShardResult]]) -> None:
    for split in SPLITS:
        write_json_atomic(out / index_path(split), wids_index(split, results_by_split[split]))


def write_metadata(
    dataset: SourceDataset, out: Path, rows_by_split: dict[str, list[dict]],
    samples_by_key: dict[str, SourceSample],
) -> dict[str, pa.Table]:
    tables = {}
    for split in SPLITS:
        locations = rows_by_split[split]
        samples = [samples_by_key[row["key"]] for row in locations]
        table = metadata_table(dataset, split, samples, locations)
        write_parquet(table, out / metadata_path(split))
        tables[split] = table
    return tables


def build_manifest(
    out: Path, paths: Sequence[str], known_sha256: dict[str, str], *, layout: str,
    fingerprint: str, options: dict, splits: dict[str, dict],
) -> Manifest:
    """The manifest: format, options, per-split counts and every file with size and sha256.

    Shards' hashes come from the writer (`known_sha256`), so 100 GB is not read twice.
    """
    files = tuple(
        FileEntry(rel, (out / rel).stat().st_size, known_sha256.get(rel) or file_sha256(out / rel))
        for rel in sorted(paths)
    )
    return Manifest.from_dict({
        "format": "sousa-wds",
        "format_version": FORMAT_VERSION,
        "layout": layout,
        "source_fingerprint": fingerprint,
        "options": options,
        "splits": splits,
        "files": [f.to_dict() for f in files],
    }, str(out / MANIFEST))


def write_manifest(out: Path, manifest: Manifest) -> None:
    write_bytes_atomic(out / MANIFEST, manifest.to_json())
