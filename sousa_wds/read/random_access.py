"""Random access: one sample, or one member of it, by key or metadata row, with one range read.

How it works:
- `SampleMap(source, split)` reads the split's metadata once and maps keys (and row numbers: it
  is a torch map-style Dataset) to samples; each lookup reads the sample's three members and
  their tar headers with one range request and checks every member's sha256 column.
- `load_audio` / `load_midi` serve the seed's consumers, who hold a row of `load_dataset(repo)`
  (a dict), a pandas row, or a key: with the row's location columns (`shard_path`,
  `flac_offset`, `flac_size`, `flac_sha256`, ...) they read just that member and its header,
  one request; given a key, they look it up in the metadata first (read once per source).
- Locations are kept per (source, revision, token, cache settings), so repeated calls reuse one
  connection pool (HTTP keep-alive) and, for the Hub, one resolved commit. Thread safety: the
  functions may be called from several threads; the cache is locked, each call opens its own
  range, and the process's httpx2 client is thread-safe. A forked process (DataLoader worker)
  opens its own connections.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Literal
from weakref import WeakKeyDictionary

import numpy as np
import pandas as pd
import soundfile

from ..errors import LoaderError
from ..format import SPLITS, key_problem, pack_path_problem
from .cache import CACHE_DIR_ENV, CACHE_SIZE_ENV
from .dataset import PackedDataset, packed
from .samples import Decoding, Rows, SampleReader


class SampleMap(Mapping[str, dict]):
    """Samples by key, each read with one byte-range request and checked against the metadata's
    sha256 of every member.

    An integer index gives the sample of that metadata row, so this is also a torch map-style
    Dataset. `metadata` holds the rows (labels and locations) of the split(s).
    """

    def __init__(self, source: Any, split: str | None = None, *, decode: bool = True,
                 mono: bool = False, midi: Literal["bytes", "mido"] = "bytes",
                 tensors: bool = False, token: str | bool | None = None,
                 cache_dir: str | bool | None = None, cache_size: str | int | None = None
                 ) -> None:
        dataset = packed(source, token, cache_dir=cache_dir, cache_size=cache_size)
        dataset.require_shards()
        frames = [dataset.frame(s) for s in ([split] if split else SPLITS)]
        self.metadata = pd.concat(frames, ignore_index=True)
        rows = Rows.from_frame(self.metadata)
        self.reader = SampleReader(dataset.location, rows, Decoding(decode, mono, midi, tensors),
                                   verify=True)
        self._index = {key: i for i, key in enumerate(rows.keys)}
        self._where = f"{dataset.location.description} ({split or ', '.join(SPLITS)})"

    def position(self, key: str) -> int:
        try:
            return self._index[key]
        except (KeyError, TypeError):  # TypeError: an unhashable key (a list) is no key either
            raise KeyError(f"no sample {key!r} in {self._where}") from None

    def __getitem__(self, key: str | int) -> dict[str, Any]:
        row = int(key) if isinstance(key, (int, np.integer)) else self.position(key)
        if not 0 <= row < len(self._index):
            raise IndexError(f"row {row} is outside 0..{len(self._index) - 1}")
        _, parts = next(self.reader.read(np.array([row])))
        if isinstance(parts, LoaderError):
            raise parts
        return self.reader.load(row, parts) | {"padding": False}

    def __contains__(self, key: object) -> bool:
        try:
            return key in self._index
        except TypeError:  # unhashable
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def find(dataset: PackedDataset, key: str, split: str | None = None,
         **options: Any) -> tuple[SampleMap, str]:
    """The SampleMap of the split holding `key`, and the split's name."""
    for name in [split] if split else SPLITS:
        view = SampleMap(dataset, name, **options)
        if key in view:
            return view, name
    raise _no_sample(dataset, key, split)


def _no_sample(dataset: PackedDataset, key: Any, split: str | None,
               elsewhere: str | None = None) -> LoaderError:
    if elsewhere is not None:
        return LoaderError(f"no sample {key!r} in the {split} split of "
                           f"{dataset.location.description}: it is in the {elsewhere} split")
    return LoaderError(f"no sample {key!r} in {dataset.location.description} "
                       f"({split or ', '.join(SPLITS)}); keys are sample_ids, e.g. from "
                       "`sousa-wds stream` or the metadata's key column")


def get_sample(source: Any, key: str, *, split: str | None = None, decode: bool = True,
               mono: bool = False, midi: Literal["bytes", "mido"] = "bytes",
               tensors: bool = False, token: str | bool | None = None,
               cache_dir: str | bool | None = None, cache_size: str | int | None = None
               ) -> dict[str, Any]:
    """One sample by key, reading only its bytes: one range request. The metadata is read once
    per source and process (cached, as for `load_audio`), so repeated calls cost one request
    each. With `cache_dir`, its whole shard goes into the local cache (see `read.cache`)."""
    dataset = _dataset(None, source, None, token, (cache_dir, cache_size))
    dataset.require_shards()
    name = _split_of(dataset, key, split)
    options = (decode, mono, midi, tensors)
    with _lock:
        views = _views.setdefault(dataset, {})
    view = views.get((name, options))
    if view is None:  # built outside the lock: reading metadata may take a while
        view = SampleMap(dataset, name, decode=decode, mono=mono, midi=midi, tensors=tensors)
        with _lock:
            view = views.setdefault((name, options), view)
    return view[key]


# --- One member, for the seed's consumers -----------------------------------------------------

_lock = threading.Lock()
_datasets: dict[tuple[Any, ...], PackedDataset] = {}
# Per dataset (dropped with it): key → (split, row); split → location columns as arrays;
# (split, decoding options) → SampleMap.
_keys: WeakKeyDictionary[PackedDataset, dict[str, tuple[str, int]]] = WeakKeyDictionary()
_columns: WeakKeyDictionary[PackedDataset, dict[str, dict[str, np.ndarray]]] = (
    WeakKeyDictionary())
_views: WeakKeyDictionary[PackedDataset, dict[tuple[Any, ...], SampleMap]] = (
    WeakKeyDictionary())


def _dataset(repo_id: str | None, source: Any, revision: str | None,
             token: str | bool | None, cache: tuple[Any, Any] = (None, None)) -> PackedDataset:
    """The cached PackedDataset for these arguments (one connection pool, one Hub commit)."""
    target = source if source is not None else repo_id
    if target is None:
        raise LoaderError("say where the pack is: load_audio(sample, repo_id='USER/NAME') or "
                          "source= (a packed folder, an http(s) URL or hf://datasets/USER/NAME)")
    if isinstance(target, PackedDataset):
        return target
    if not isinstance(target, (str, os.PathLike)):  # a Location: not cached
        return packed(target, token, cache_dir=cache[0], cache_size=cache[1])
    target = os.fspath(target)
    if revision is not None:
        if "@" in target.rpartition("/")[2]:
            raise LoaderError(f"{target} already names a revision; drop revision={revision!r}")
        target = f"{target}@{revision}"
    # The Hub it means, and the cache directory, may change with the environment.
    cache_key = (target, token, os.environ.get("HF_ENDPOINT"), *cache,
                 os.environ.get(CACHE_DIR_ENV), os.environ.get(CACHE_SIZE_ENV))
    with _lock:
        if cache_key not in _datasets:
            _datasets[cache_key] = packed(target, token, cache_dir=cache[0], cache_size=cache[1])
        return _datasets[cache_key]


def _split_of(dataset: PackedDataset, key: str, split: str | None) -> str:
    """The split holding `key` (looked up in the cached key index)."""
    if split is not None:
        dataset.frame(split)  # an unknown split is named as such
    with _lock:
        index = _keys.get(dataset)
        if index is None:
            index = {k: (name, i) for name in SPLITS
                     for i, k in enumerate(dataset.frame(name)["key"])}
            _keys[dataset] = index
    try:
        found = index.get(key)
    except TypeError:  # an unhashable key (a list) is no key either
        found = None
    if found is None:
        raise _no_sample(dataset, key, split)
    if split is not None and found[0] != split:
        raise _no_sample(dataset, key, split, elsewhere=found[0])
    return found[0]


def _row_by_key(dataset: PackedDataset, key: str) -> dict[str, np.ndarray]:
    """The key's location columns as one-row arrays (no pandas per call)."""
    name = _split_of(dataset, key, None)
    row = _keys[dataset][key][1]
    with _lock:
        tables = _columns.setdefault(dataset, {})
        if name not in tables:
            frame = dataset.frame(name)
            wanted = [c for c in frame.columns if c in ("key", "shard_path")
                      or c.rpartition("_")[2] in ("offset", "size", "sha256")]
            tables[name] = {c: frame[c].to_numpy() for c in wanted}
    return {c: values[row:row + 1] for c, values in tables[name].items()}


def _row(sample: Any, dataset: PackedDataset, member: str) -> Mapping[str, Any]:
    """`sample` (a key, a dict such as a `datasets` row, or a pandas row) as one-row location
    columns for `Rows.from_frame`; the row's own columns when it has them all."""
    if isinstance(sample, str):
        return _row_by_key(dataset, sample)
    if not isinstance(sample, (Mapping, pd.Series)):
        raise LoaderError(f"sample must be a key, a dict (a datasets row) or a pandas row, not "
                          f"{type(sample).__name__}")
    needed = ("key", "shard_path", f"{member}_offset", f"{member}_size", f"{member}_sha256")
    if all(name in sample for name in needed):
        row = {name: sample[name] for name in needed}
        problem = pack_path_problem(str(row["shard_path"])) or key_problem(row["key"])
        if problem:
            raise LoaderError(f"sample {row['key']!r}: shard_path {row['shard_path']!r} or key "
                              f"{problem}; pass an unmodified metadata row or the key")
        return {name: [value] for name, value in row.items()}
    for name in ("key", "sample_id"):
        if name in sample:
            return _row_by_key(dataset, str(sample[name]))
    raise LoaderError(f"the sample has neither the location columns ({', '.join(needed)}) nor "
                      "a key: pass a metadata row, a datasets row of the pack, or the key")


def _member(sample: Any, member: str, repo_id: str | None, source: Any, revision: str | None,
            token: str | bool | None, cache: tuple[Any, Any]) -> bytes:
    """One member's bytes: one range request (its tar header and data), sha256 checked."""
    dataset = _dataset(repo_id, source, revision, token, cache)
    dataset.require_shards()
    rows = Rows.from_frame(_row(sample, dataset, member), members=(member,))
    reader = SampleReader(dataset.location, rows, None, verify=True)
    if member not in rows.sha256:
        raise LoaderError(f"{dataset.location.description}: the metadata has no {member}_sha256 "
                          "column to check the bytes against (a pack of an older format: "
                          "re-pack it)")
    _, parts = next(reader.read(np.array([0])))
    if isinstance(parts, LoaderError):
        raise parts
    return reader.check(0, parts)[member]


def load_audio(sample: Any, repo_id: str | None = None, *, source: Any = None,
               revision: str | None = None, token: str | bool | None = None,
               cache_dir: str | bool | None = None, cache_size: str | int | None = None
               ) -> tuple[np.ndarray, int]:
    """`(audio, sample_rate)` of one sample exactly as `soundfile.read` returns them for its FLAC
    (float64, (frames, channels); 1-D for mono), reading only that member.

    `sample`: a row of `datasets.load_dataset(repo)` or of `metadata()`, or a key. `repo_id` (a
    Hub dataset) or `source` (a packed folder, http(s) URL, `hf://datasets/...`) says where.
    `cache_dir`: read through a local cache of whole shards (see `read.cache`).
    """
    flac = _member(sample, "flac", repo_id, source, revision, token, (cache_dir, cache_size))
    return soundfile.read(io.BytesIO(flac))


def load_midi(sample: Any, repo_id: str | None = None, *, source: Any = None,
              revision: str | None = None, token: str | bool | None = None,
              as_mido: bool = False, cache_dir: str | bool | None = None,
              cache_size: str | int | None = None) -> Any:
    """The sample's MIDI bytes (a `mido.MidiFile` with as_mido=True), reading only that member.
    Arguments as for `load_audio`."""
    data = _member(sample, "mid", repo_id, source, revision, token, (cache_dir, cache_size))
    if not as_mido:
        return data
    import mido

    return mido.MidiFile(file=io.BytesIO(data))
