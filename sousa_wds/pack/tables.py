"""The Parquet tables of a pack: per-split metadata and the stroke/measure label tables.

How it works:
- `metadata/{split}.parquet` joins each sample's labels with the location rows the shard
  writer returned (shard, offsets, sizes, hashes), in shard order, under one fixed schema
  (`format.METADATA_SCHEMA`) so every split and every release agree.
- `labels/{strokes,measures}/{split}.parquet` are streamed from the source in record batches
  and routed by sample_id: tens of millions of stroke rows never sit in memory at once. A
  label file that changed since the check (a sample_id the dataset does not have, or another
  size or mtime) stops the run with the file named.
All files are written to a temporary name and renamed; Parquet is written without timestamps,
so the same input gives the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..arrays import column, int_array, int_scalar
from ..errors import PackError
from ..format import (
    LABEL_COLUMNS,
    LABEL_TABLE_COLUMNS,
    LOCATION_COLUMNS,
    METADATA_SCHEMA,
    SPLITS,
    conform,
    labels_path,
    metadata_path,
)
from ..io import atomic_path, create_new, replace_durably, temp_sibling
from ..source import SampleTable, SourceDataset, stream_parquet
from .tar import ShardResult

# Row groups small enough that a reader filtering by a few columns skips most of the file.
ROW_GROUP_SIZE = 10_000
METADATA_PIECE_ROWS = 2_500  # metadata rows built at a time (labels taken, columns joined)
STREAM_BATCH_ROWS = 16_384  # bounds memory: a few MB of stroke rows at a time
LABEL_ROW_GROUP_ROWS = 131_072  # stroke rows per row group: ~2 MB, a few hundred per split
PENDING_IPC = pa.ipc.IpcWriteOptions(compression="lz4")  # label rows waiting for a row group
PARQUET_OPTIONS = {"compression": "zstd", "write_statistics": True, "store_schema": True}

# (inode, size, mtime) of a label file: how a change since the check is noticed.
FileStamp = tuple[int, int, int]


def file_stamp(path: Path) -> FileStamp:
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def metadata_table(
    dataset: SourceDataset, split: str, positions: pa.Array, locations: pa.Table,
) -> pa.Table:
    """Labels + location columns, one row per sample: the samples at `positions` of
    `dataset.samples`, in that order."""
    labels = dataset.label_rows(dataset.samples.take(positions))
    columns = {name: labels.column(name) for name in LABEL_COLUMNS}
    for name in LOCATION_COLUMNS:
        columns[name] = (_repeat(split, len(positions)) if name == "split"
                         else locations.column(name))
    return pa.table(columns, schema=METADATA_SCHEMA)


def _repeat(value: str, n: int) -> pa.Array:
    """A string column of `n` times `value`, built by Arrow: no Python object per row."""
    return pa.repeat(column([value], pa.string())[0], n)


def location_table(rows: pa.Table | Sequence[dict], shard: ShardResult | None = None
                   ) -> pa.Table:
    """Location rows as Arrow columns (all but `split`); with `shard`, the rows are what its
    writer returned (`tar.ROW_SCHEMA`) and the columns naming it and its members are added."""
    if shard is None:
        assert not isinstance(rows, pa.Table)
        return pa.table({name: column([row[name] for row in rows], typ)
                         for name, typ in LOCATION_COLUMNS.items() if name != "split"})
    assert isinstance(rows, pa.Table)
    keys, n, empty = rows.column("key"), rows.num_rows, column([""], pa.string())[0]
    path = _repeat(shard.path, n)
    naming = {"shard": _repeat(shard.name, n), "shard_path": path, "audio_shard": path,
              "midi_shard": path}
    for name, suffix in (("audio_filename", ".flac"), ("midi_filename", ".mid")):
        naming[name] = pc.binary_join_element_wise(keys, column([suffix], pa.string())[0], empty)
    return pa.table({name: naming[name] if name in naming else rows.column(name)
                     for name in LOCATION_COLUMNS if name != "split"})


# A run of samples (a shard's) as positions into `SourceDataset.samples`, and the location
# rows the writer returned for them, in order.
MetadataPart = tuple[pa.Array, pa.Table]


def write_metadata(dataset: SourceDataset, out: Path,
                   parts: Mapping[str, Iterable[MetadataPart]]) -> None:
    """Each split's metadata, built a row group at a time from its parts in order: the same
    bytes as one table written whole, without the whole table (or its labels) in memory."""
    for split in SPLITS:
        final = out / metadata_path(split)
        with atomic_path(final) as temp, pq.ParquetWriter(temp, METADATA_SCHEMA,
                                                          **PARQUET_OPTIONS) as writer:
            pending: list[pa.Table] = []
            rows = written = 0
            for positions, locations in _pieces(parts[split]):
                pending.append(metadata_table(dataset, split, positions, locations))
                rows += len(positions)
                if rows >= ROW_GROUP_SIZE:
                    table = pa.concat_tables(pending)
                    whole = rows - rows % ROW_GROUP_SIZE
                    writer.write_table(table.slice(0, whole), row_group_size=ROW_GROUP_SIZE)
                    pending, rows, written = [table.slice(whole)], rows - whole, written + whole
            if rows or not written:
                writer.write_table(pa.concat_tables(pending) if pending
                                   else METADATA_SCHEMA.empty_table(),
                                   row_group_size=ROW_GROUP_SIZE)


def _pieces(parts: Iterable[MetadataPart]) -> Iterator[MetadataPart]:
    """Parts cut to at most METADATA_PIECE_ROWS: a shard of 11k samples is not built whole."""
    for positions, locations in parts:
        for start in range(0, len(positions), METADATA_PIECE_ROWS):
            yield (positions.slice(start, METADATA_PIECE_ROWS),
                   locations.slice(start, METADATA_PIECE_ROWS))


class _LabelSplitWriter:
    """One split's label table: batches gathered into row groups, written under a temp name.

    A row group's rows wait LZ4-compressed (an Arrow IPC stream in memory) until it is full:
    the three splits fill theirs at once, and 131k stroke rows are ~20 MB as Arrow columns.
    The row group is decompressed and written whole, in the same batches: the same bytes.
    """

    def __init__(self, final: Path, schema: pa.Schema) -> None:
        self.final = final
        self.temp = temp_sibling(final)
        self.temp.parent.mkdir(parents=True, exist_ok=True)
        create_new(self.temp)  # a link or a hard link left at that name is replaced
        self._schema = schema
        self._writer = pq.ParquetWriter(self.temp, schema, **PARQUET_OPTIONS)
        self._pending: pa.BufferOutputStream | None = None
        self._batches: pa.ipc.RecordBatchStreamWriter | None = None
        self._rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        if self._batches is None:
            self._pending = pa.BufferOutputStream()
            self._batches = pa.ipc.new_stream(self._pending, self._schema, options=PENDING_IPC)
        self._batches.write_batch(batch)
        self._rows += batch.num_rows
        if self._rows >= LABEL_ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._batches is None or self._pending is None:
            return
        self._batches.close()
        rows = pa.ipc.open_stream(self._pending.getvalue()).read_all()
        self._batches = self._pending = None
        self._writer.write_table(rows, row_group_size=LABEL_ROW_GROUP_ROWS)
        self._rows = 0

    def finish(self) -> None:
        self._flush()
        self._writer.close()
        replace_durably(self.temp, self.final)

    def abandon(self) -> None:
        self._writer.close()
        self.temp.unlink(missing_ok=True)


def split_lookup(samples: SampleTable) -> dict[str, int]:
    """sample_id -> split code: all the label tables need of the dataset.

    A dict, built once: a hash lookup per batch in Arrow rebuilds its table of every key
    (~20 ms a batch at 100k samples, thousands of batches at full scale).
    """
    return dict(zip(samples.keys(), samples.column("split").to_pylist()))


def write_label_tables(sources: Mapping[str, Path], split_of: dict[str, int], out: Path,
                       stamps: Mapping[str, FileStamp]) -> None:
    """Split strokes and measures per split, streaming batches from the source files.

    `sources`: each label table's source file; `split_of`: `split_lookup` of the samples.
    `stamps` holds each label file's stamp from before the dataset was read; a file whose
    stamp differs now, or that names a sample the dataset lacks, was rewritten meanwhile.
    """
    for table, columns in LABEL_TABLE_COLUMNS.items():
        path = sources[table]
        schema = pa.schema([pa.field(n, t) for n, t in columns.items()])
        writers: list[_LabelSplitWriter] = []
        try:
            for split in SPLITS:
                writers.append(_LabelSplitWriter(out / labels_path(table, split), schema))
            for batch in stream_parquet(path).iter_batches(batch_size=STREAM_BATCH_ROWS,
                                                           columns=list(columns)):
                _route(conform(batch, columns), split_of, writers, path)
            _check_unchanged(path, stamps[table])
            for writer in writers:
                writer.finish()
        except BaseException:
            for writer in writers:
                writer.abandon()
            raise


def _route(batch: pa.RecordBatch, split_of: dict[str, int],
           writers: list[_LabelSplitWriter], path: Path) -> None:
    """Send each row to its split's writer.

    Rows follow the samples' order, so a batch holds a few dozen samples: their split is
    looked up once each, and rows are routed with a small per-batch lookup.
    """
    ids = batch.column("sample_id")
    present = pc.unique(ids)
    unknown = [k for k in present.to_pylist() if k not in split_of]
    if unknown:
        raise PackError(f"{path} names samples the dataset does not have ({unknown[:3]}): it "
                        "changed since it was checked. Run `sousa-wds check` again, then pack "
                        "with --overwrite.")
    splits = [split_of[k] for k in present.to_pylist()]
    if len(set(splits)) == 1:  # the usual batch: a few samples of one player, one split
        writers[splits[0]].add(batch)
        return
    codes = int_array(splits, pa.int8())
    row_split = pc.take(codes, pc.index_in(ids, value_set=present))
    for code, writer in enumerate(writers):
        part = batch.filter(pc.equal(row_split, int_scalar(code, pa.int8())))
        if part.num_rows:
            writer.add(part)


def _check_unchanged(path: Path, stamp: FileStamp) -> None:
    if file_stamp(path) != stamp:
        raise PackError(f"{path} changed while packing (its size or modification time "
                        "differs from when the dataset was read). Let the generator finish, "
                        "then run `sousa-wds check` and pack again with --overwrite.")
