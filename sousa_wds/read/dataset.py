"""A finished pack at a location: its manifest checked once, its metadata read per split.

How it works:
- `PackedDataset(location)` reads `manifest.json` through `format.Manifest.from_json` (the one
  manifest parser), so a folder of another format version or an unfinished pack is refused
  before any sample is read.
- `frame(split)` reads `metadata/{split}.parquet` once and keeps it: labels plus where each
  sample is (shard, byte offsets, sizes, sha256 of each member).
- `metadata(source, split)` is the public entry point; stream, random access and the CLI take a
  `PackedDataset` or anything `open_location` accepts.
- With a cache (`cache_dir=`, or SOUSA_WDS_CACHE_DIR) a remote location is wrapped, once the
  manifest is read, in `cache.CachedLocation`: metadata and shards then come from local copies
  checked against the manifest's sha256.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import LoaderError, MissingFile
from ..format import MANIFEST, SPLITS, Manifest, metadata_path
from .cache import FileCache, cached, open_cache
from .location import Location, open_location


class PackedDataset:
    """A finished pack at a location: manifest checked once, metadata read per split on demand."""

    def __init__(self, location: Location, cache: FileCache | None = None) -> None:
        self.location = location
        self._frames: dict[str, pd.DataFrame] = {}
        try:
            raw = location.read_file(MANIFEST)
        except MissingFile as exc:
            raise LoaderError(
                f"{location.description} has no {MANIFEST}: it is not a finished sousa-wds pack "
                "(point at the folder `sousa-wds pack` wrote; an interrupted pack finishes "
                "with --resume)") from exc
        self.manifest = Manifest.from_json(raw, f"{location.description}: {MANIFEST}")
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
            data = self.location.read_file(path)
            try:
                self._frames[split] = pq.read_table(io.BytesIO(data)).to_pandas()
            except (pa.ArrowException, ValueError, OSError) as exc:
                raise LoaderError(
                    f"{path} in {self.location.description} is not a readable Parquet file "
                    f"({type(exc).__name__}: {exc}). Re-download it (`sousa-wds verify` checks "
                    "every file against the manifest)") from exc
        return self._frames[split]


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
