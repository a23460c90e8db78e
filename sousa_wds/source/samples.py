"""The samples of a read dataset: Arrow columns, with `SourceSample` objects made on demand.

Why columns: one frozen `SourceSample` per sample cost ~490 bytes of Python objects, 49 MB at
100k samples, kept for the whole pack and fragmenting the heap for what came after. The same
facts as Arrow columns take ~200 bytes a sample, in a few large buffers. Code that wants
objects iterates (`SourceSample`s are made a batch at a time and dropped); code that wants
totals, keys or an order asks for columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import pyarrow as pa
import pyarrow.compute as pc

from ..arrays import column, int_array, int_scalar
from ..format import SPLITS

ITER_BATCH = 4096  # samples turned into Python objects at a time

FIELDS: dict[str, pa.DataType] = {
    "key": pa.string(),
    "split": pa.int8(),  # index into format.SPLITS
    "row": pa.int64(),
    "audio_path": pa.string(),
    "midi_path": pa.string(),
    "audio_bytes": pa.int64(),
    "midi_bytes": pa.int64(),
    "audio_mtime_ns": pa.int64(),
    "midi_mtime_ns": pa.int64(),
    "sample_rate": pa.int64(),
    "channels": pa.int64(),
    "num_frames": pa.int64(),
}
SCHEMA = pa.schema([pa.field(name, typ, nullable=False) for name, typ in FIELDS.items()])


@dataclass(frozen=True, slots=True)
class SourceSample:
    """One sample's identity and media; its labels are row `row` of `SourceDataset.labels`.

    Sizes and mtimes come from the one `lstat` of each file at read time: pack compares them
    with what it reads to notice a file that changed or was cut meanwhile (0 = not known).
    Sample rate, channels and frames are what the FLAC's header said when it was checked.
    """

    key: str
    split: str
    row: int
    audio_path: str
    midi_path: str
    audio_bytes: int
    midi_bytes: int
    audio_mtime_ns: int = 0
    midi_mtime_ns: int = 0
    sample_rate: int = 0
    channels: int = 0
    num_frames: int = 0


class SampleTable(Sequence[SourceSample]):
    """A sequence of `SourceSample`s stored as one Arrow table (`SCHEMA`)."""

    __slots__ = ("table",)

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    @classmethod
    def of(cls, samples: SampleTable | Iterable[SourceSample]) -> SampleTable:
        if isinstance(samples, SampleTable):
            return samples
        samples = list(samples)
        return cls.from_columns(**{name: [getattr(s, name) for s in samples] for name in FIELDS
                                   if name != "split"},
                                split=[SPLITS.index(s.split) for s in samples])

    @classmethod
    def from_columns(cls, **columns: Sequence[Any] | pa.Array | pa.ChunkedArray) -> SampleTable:
        """A table from per-field values; fields left out are "" or 0 (what planning ignores)."""
        n = len(columns["key"])
        arrays = []
        for name, typ in FIELDS.items():
            values = columns.get(name)
            if values is None:
                values = [""] * n if typ == pa.string() else [0] * n
            if not isinstance(values, (pa.Array, pa.ChunkedArray)):
                values = column(values, typ)
            arrays.append(values.cast(typ))
        return cls(pa.Table.from_arrays(arrays, schema=SCHEMA))

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, index: int) -> SourceSample: ...
    @overload
    def __getitem__(self, index: slice) -> SampleTable: ...

    def __getitem__(self, index: int | slice) -> SourceSample | SampleTable:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return SampleTable(self.table.slice(start, max(0, stop - start)))
            return self.take(range(start, stop, step))
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} out of range")
        return next(iter(SampleTable(self.table.slice(index % len(self), 1))))

    def __iter__(self) -> Iterator[SourceSample]:
        for batch in self.table.to_batches(max_chunksize=ITER_BATCH):
            values = [batch.column(name).to_pylist() for name in FIELDS]
            values[1] = [SPLITS[code] for code in values[1]]
            yield from map(SourceSample, *values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SampleTable) and self.table.equals(other.table)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SampleTable({len(self)} samples)"

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def keys(self) -> list[str]:
        return self.table.column("key").to_pylist()

    def take(self, indices: Iterable[int] | pa.Array) -> SampleTable:
        if not isinstance(indices, (pa.Array, pa.ChunkedArray)):
            indices = int_array(indices)
        return SampleTable(self.table.take(indices))

    def split(self, name: str) -> SampleTable:
        """`name`'s samples: a view when they are one run of rows, as in a dataset (sorted by
        split), instead of a copy (at 100k samples, 22 MB at the end of `check`)."""
        code = int_scalar(SPLITS.index(name), pa.int8())
        rows = pc.indices_nonzero(pc.equal(self.table.column("split"), code))
        if len(rows) and rows[-1].as_py() - rows[0].as_py() + 1 == len(rows):
            return SampleTable(self.table.slice(rows[0].as_py(), len(rows)))
        return SampleTable(self.table.take(rows))

    def identities(self) -> SampleTable:
        """The same samples, in the same rows, with only their key, split and label row: all a
        pack needs of them once their media are written. The other columns are absent, not
        zeros (at 100k samples 28.9 -> 6.6 MB of buffers; zero-filled they were 13.0 MB, at
        the peak of pack's metadata stage): asking for one is a KeyError, iterating one an
        error, never a sample with a size of 0."""
        return SampleTable(self.table.select(["key", "split", "row"]))

    def media_bytes(self, positions: pa.Array | None = None) -> int:
        """Source bytes of all media, or of the samples at `positions` (without taking the
        whole rows): the total a progress bar counts to."""
        columns = [self.table.column(name) for name in ("audio_bytes", "midi_bytes")]
        if positions is not None:
            columns = [pc.take(values, positions) for values in columns]
        return sum(pc.sum(values).as_py() or 0 for values in columns)
