"""A finished pack at a location: its manifest checked once, its metadata read per split.

How it works:
- `PackedDataset(location)` reads `manifest.json` through `format.Manifest.from_json` (the one
  manifest parser), so a folder of another format version or an unfinished pack is refused
  before any sample is read.
- `frame(split)` reads `metadata/{split}.parquet` once and keeps it: labels plus where each
  sample is (shard, byte offsets, sizes, sha256 of each member). The file is checked against
  its size and sha256 in the manifest first (`read_listed`): the member checks trust the
  metadata's offsets and digests, so a changed byte there would change labels unnoticed. Its
  columns are checked as it is read (`_schema_problem`, `REQUIRED_VALUES`): every column of the
  format, integer offsets and sizes, and the values that locate a member present, so a damaged
  or hostile file is one named error, not a KeyError, a NaN size or a garbage byte range in
  whichever reader meets it.
- `metadata(source, split)` is the public entry point; stream, random access and the CLI take a
  `PackedDataset` or anything `open_location` accepts.
- With a cache (`cache_dir=`, or SOUSA_WDS_CACHE_DIR) a remote location is wrapped, once the
  manifest is read, in `cache.CachedLocation`: metadata and shards then come from local copies
  checked against the manifest's sha256.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import IntegrityError, LoaderError, MissingFile
from ..format import LOCATION_COLUMNS, MANIFEST, METADATA_SCHEMA, SPLITS, Manifest, metadata_path
from .cache import FileCache, cached, open_cache
from .location import Location, open_location

# Values every row must have, by layout: what readers locate and check a member with.
REQUIRED_VALUES: dict[str, tuple[str, ...]] = {
    "shards": ("key", "shard_path", "flac_offset", "flac_size", "mid_offset", "mid_size",
               "json_offset", "json_size", "flac_sha256", "mid_sha256"),
    "loose": ("key", "flac_size", "mid_size", "flac_sha256", "mid_sha256", "audio_filename",
              "midi_filename"),
}


def _schema_problem(schema: pa.Schema) -> str | None:
    """What makes `schema` unusable for a split's metadata, or None (read off the footer)."""
    missing = [n for n in METADATA_SCHEMA.names if n not in schema.names]
    if missing:
        return f"lacks the column(s) {', '.join(missing)}"
    not_int = [f"{n} ({schema.field(n).type})" for n, t in LOCATION_COLUMNS.items()
               if pa.types.is_integer(t) and not pa.types.is_integer(schema.field(n).type)
               and not pa.types.is_null(schema.field(n).type)]
    if not_int:
        return f"has non-integer offsets or sizes: {', '.join(not_int)}"
    return None


def read_manifest(location: Location) -> Manifest:
    """The pack's manifest at `location`, parsed; a folder without one is named for what it is."""
    try:
        raw = location.read_file(MANIFEST)
    except MissingFile as exc:
        from ..source.checks import source_folder_hint  # only on this error: source/ is heavy

        root = getattr(location, "root", None)
        hint = ((source_folder_hint(root) if root is not None else None)
                or "point at the folder `sousa-wds pack` wrote; an interrupted pack finishes "
                "with --resume")
        raise LoaderError(f"{location.description} has no {MANIFEST}: it is not a finished "
                          f"sousa-wds pack ({hint})") from exc
    return Manifest.from_json(raw, f"{location.description}: {MANIFEST}")


class PackedDataset:
    """A finished pack at a location: manifest checked once, metadata read per split on demand."""

    def __init__(self, location: Location, cache: FileCache | None = None) -> None:
        self.location = location
        self._frames: dict[str, pd.DataFrame] = {}
        self.manifest = read_manifest(location)
        self.layout = self.manifest.layout
        self.location = cached(location, self.manifest, cache)

    def require_shards(self) -> None:
        """Reading samples needs tar shards: the loose layout's metadata has no offsets."""
        if self.layout == "loose":
            raise LoaderError(
                f"{self.location.description} uses the loose layout "
                "(audio/{split}/{key}.flac, midi/{split}/{key}.mid): stream, SampleMap and "
                "get_sample need shards. Pack without --no-sharding, or read the files "
                "directly (metadata() works, its audio_filename and midi_filename columns "
                "name them)")
        if self.layout != "shards":
            raise LoaderError(f"{self.location.description}: unknown layout {self.layout!r} in "
                              f"{MANIFEST}; this sousa-wds reads the shards layout")

    def frame(self, split: str) -> pd.DataFrame:
        if split not in SPLITS:
            raise LoaderError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if split not in self._frames:
            path = metadata_path(split)
            data = self.read_listed(path)
            try:
                # An Arrow buffer, not a Python file, and no thread pool: work Arrow's threads
                # still did after a read returned made a process that ended right then abort
                # (code 134, apache/arrow#33975; an error raised after the read, then exit).
                # The file is small: one thread decodes it.
                parquet = pq.ParquetFile(pa.BufferReader(data))
                problem = _schema_problem(parquet.schema_arrow)
                table = None if problem else parquet.read(use_threads=False)
            except (pa.ArrowException, ValueError, OSError) as exc:
                raise LoaderError(
                    f"{path} in {self.location.description} is not a readable Parquet file "
                    f"({type(exc).__name__}: {exc}). Re-download it (`sousa-wds verify` checks "
                    "every file against the manifest)") from exc
            if table is not None:
                empty = [n for n in REQUIRED_VALUES.get(self.layout, ())
                         if table.column(n).null_count]
                problem = f"has rows without {', '.join(empty)}" if empty else None
            if problem:
                raise LoaderError(
                    f"{path} in {self.location.description} {problem}: it is damaged or was not "
                    "written by sousa-wds. Re-download the pack from its publisher or re-pack "
                    "the dataset (`sousa-wds verify` checks every file against the manifest)")
            self._frames[split] = table.to_pandas(use_threads=False)
        return self._frames[split]

    def read_listed(self, path: str) -> bytes:
        """The whole file `path`, checked against its size and sha256 in the manifest (small
        files only: it is held in memory). A local folder is checked too: its files may have
        been copied or edited since they were packed."""
        entry = self.manifest.file(path)
        if entry is None:
            raise LoaderError(f"{MANIFEST} in {self.location.description} does not list {path}: "
                              "the pack is incomplete or was changed after packing (re-pack "
                              "or re-download it)")
        data = self.location.read_file(path)
        if len(data) != entry.bytes:
            problem = f"is {len(data)} bytes where {MANIFEST} says {entry.bytes}"
        elif hashlib.sha256(data).hexdigest() != entry.sha256:
            problem = f"does not match its sha256 in {MANIFEST}"
        else:
            return data
        raise IntegrityError(f"{path} in {self.location.description} {problem}: the copy is "
                             "damaged or was changed after packing. Re-download it, or "
                             "`sousa-wds verify` the source to find every changed file")


def packed(source: Any, token: str | bool | None = None, retries: int | None = None,
           cache_dir: str | os.PathLike[str] | bool | None = None,
           cache_size: str | int | None = None) -> PackedDataset:
    """`source` as a PackedDataset (one already made is returned as is, with its cache).
    `cache_dir`/`cache_size`: see `cache.open_cache` (None: SOUSA_WDS_CACHE_DIR, if set)."""
    if isinstance(source, PackedDataset):
        return source
    return PackedDataset(open_location(source, token, retries), open_cache(cache_dir, cache_size))


def metadata(source: Any, split: str = "train", *, token: str | bool | None = None,
             cache_dir: str | os.PathLike[str] | bool | None = None,
             cache_size: str | int | None = None) -> pd.DataFrame:
    """The split's metadata: labels plus where each sample is (shard, byte offsets), one row per
    sample in shard order. Reads one Parquet file (from the cache when `cache_dir` is given and
    it is there); no shard is touched."""
    return packed(source, token, cache_dir=cache_dir, cache_size=cache_size).frame(split)
