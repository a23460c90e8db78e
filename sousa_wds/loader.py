"""Stream, query and fetch samples of a packed sousa-wds dataset: local, over HTTP, or the Hub.

How it works:
- Plan before reading. `metadata/{split}.parquet` says where every sample is (shard, byte
  offsets), so `where` selects rows without touching a shard. The epoch plan is pure (seed,
  epoch, world size, worker count): it orders the selection shard by shard (shards in a seeded
  order), pads it to a multiple of the world size, gives each rank a contiguous share and splits
  every share between DataLoader workers with the same sizes on every rank, so every rank yields
  the same number of batches and DDP never waits for a rank that ran out.
- Read by byte range, in shard order. A worker reads its part with one request per run of
  nearby wanted samples (a whole stretch of shard when everything is selected, one range per
  sample when the selection is sparse: `remote.HTTP_RUN_GAP` decides), checks each member's tar
  header against the metadata, and shuffles within windows of `shuffle_buffer` samples (raw
  bytes are held; decoding happens on the way out).
- Resume from data, not from flags: a state lists the rank positions delivered in the epoch
  (identical on every rank in lockstep training); loading it removes them from the plan.
- Random access (`get_sample`, `SampleMap`) reads one sample's bytes with one range request and
  checks its FLAC sha256.
Where bytes come from (folder, HTTP, Hub, tokens) is `sousa_wds.remote`'s business. webdataset
(which imports torch) loads only when a stream is built, so `metadata()` and `get_sample()` stay
quick.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mido
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile

from .errors import LoaderError, MissingFile
from .format import MANIFEST, MEMBERS, SPLITS, Manifest, metadata_path
from .remote import Location, open_location

log = logging.getLogger("sousa_wds")

# Samples whose raw bytes a worker holds to shuffle within (SOUSA samples are ~1 MB each).
SHUFFLE_BUFFER = 64
TAR_HEADER = 512  # a member's ustar header is the block right before its data
STATE_FORMAT = "sousa-wds-stream-state"
STATE_VERSION = 1
BAD_SHARD_HINT = (
    "Re-download or re-pack that shard (`sousa-wds verify --deep` checks every file), or pass "
    "on_error='skip' to replace bad samples with padding and go on"
)
# What decoding a corrupt member raises (libsndfile, json, mido, tar headers).
_DECODE_ERRORS = (RuntimeError, ValueError, OSError, EOFError, KeyError, IndexError)

Where = str | Callable[[pd.DataFrame], Any] | None


# --- The packed dataset -----------------------------------------------------------------------


class _Packed:
    """A finished pack at a location: manifest checked once, metadata read per split on demand."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self._frames: dict[str, pd.DataFrame] = {}
        try:
            raw = location.read_file(MANIFEST)
        except MissingFile as exc:
            raise LoaderError(
                f"{location.description} has no {MANIFEST}: it is not a finished sousa-wds pack "
                "(point at the folder `sousa-wds pack` wrote; an interrupted pack finishes "
                "with --resume)") from exc
        manifest = Manifest.from_json(raw, f"{location.description}: {MANIFEST}")
        self.layout = manifest.layout

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


def _packed(source: Any, token: str | bool | None) -> _Packed:
    return source if isinstance(source, _Packed) else _Packed(open_location(source, token))


def metadata(source: Any, split: str = "train", *, token: str | bool | None = None
             ) -> pd.DataFrame:
    """The split's metadata: labels plus where each sample is (shard, byte offsets), one row per
    sample in shard order. Reads one Parquet file; no shard is touched."""
    return _packed(source, token).frame(split)


def _select(frame: pd.DataFrame, where: Where) -> pd.DataFrame:
    """Rows matching `where`: a pandas query string or a callable returning a mask/DataFrame."""
    if where is None:
        return frame
    try:
        if isinstance(where, str):
            return frame.query(where)
        result = where(frame)
    except Exception as exc:  # pandas raises many types for a bad query; all mean "fix where"
        raise LoaderError(
            f"where={where!r} failed on the metadata: {type(exc).__name__}: {exc}. Columns: "
            f"{', '.join(frame.columns)}") from exc
    if isinstance(result, pd.DataFrame):
        # By key, not by index label: a merge or reset_index renumbers the rows.
        if "key" not in result.columns:
            raise LoaderError("where= returned a DataFrame without the key column; return "
                              "the selected metadata rows (with key) or a boolean mask")
        return frame[frame["key"].isin(result["key"])]
    if isinstance(result, pd.Series) and not result.index.equals(frame.index):
        if not result.index.isin(frame.index).all() or result.index.has_duplicates:
            raise LoaderError("where= returned a boolean Series whose index is not the "
                              "metadata's; return a mask aligned with the metadata rows")
        result = result.reindex(frame.index, fill_value=False)
    mask = np.asarray(result)
    if mask.dtype != bool or mask.shape != (len(frame),):
        raise LoaderError(f"where= must return a boolean mask of {len(frame)} rows or a "
                          f"DataFrame of selected rows, not {type(result).__name__}")
    return frame[mask]


# --- Rows: where the selected samples are -----------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """The selected samples' locations as compact arrays: everything a worker needs (no labels)."""

    shards: tuple[str, ...]  # shard paths, in pack order
    shard: np.ndarray  # per row: index into shards
    start: np.ndarray  # first byte to read: the header of the sample's first member
    end: np.ndarray  # one past its last member's data
    offsets: np.ndarray  # (rows, len(MEMBERS)) data offsets
    sizes: np.ndarray  # (rows, len(MEMBERS))
    keys: np.ndarray
    sha256: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> _Rows:
        codes, shards = pd.factorize(frame["shard_path"])
        offsets = np.stack([frame[f"{m}_offset"].to_numpy(np.int64) for m in MEMBERS], axis=1)
        sizes = np.stack([frame[f"{m}_size"].to_numpy(np.int64) for m in MEMBERS], axis=1)
        return cls(
            shards=tuple(str(s) for s in shards),
            shard=codes.astype(np.int32),
            start=offsets.min(axis=1) - TAR_HEADER,
            end=(offsets + sizes).max(axis=1),
            offsets=offsets,
            sizes=sizes,
            keys=frame["key"].to_numpy(object),
            sha256=frame["flac_sha256"].to_numpy(object),
        )

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.keys).encode()).hexdigest()


# --- Decoding ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoding:
    """What a sample dict holds. decode=False: the member bytes (`flac`, `json`, `mid`).

    MIDI stays bytes unless midi="mido": mido parses in pure Python, ~1 ms a sample, about 8% of
    the FLAC decoding, and most training never reads it.
    """

    decode: bool = True
    mono: bool = False
    midi: Literal["bytes", "mido"] = "bytes"
    tensors: bool = False

    def __post_init__(self) -> None:
        if self.midi not in ("bytes", "mido"):
            raise LoaderError(f"midi={self.midi!r}: choose 'bytes' or 'mido'")
        if self.tensors and importlib.util.find_spec("torch") is None:
            raise LoaderError("tensors=True needs torch: pip install 'sousa-wds[torch]' (or "
                              "leave it off for numpy arrays)")

    def __call__(self, key: str, flac: bytes, labels: bytes, midi: bytes) -> dict[str, Any]:
        if not self.decode:
            return {"key": key, "flac": flac, "json": labels, "mid": midi}
        audio, rate = decode_audio(flac, self.mono)
        if self.tensors:
            import torch

            audio = torch.from_numpy(audio)
        return {
            "key": key,
            "audio": audio,
            "sample_rate": rate,
            "midi": mido.MidiFile(file=io.BytesIO(midi)) if self.midi == "mido" else midi,
            "labels": json.loads(labels),
        }


def decode_audio(flac: bytes, mono: bool = False) -> tuple[np.ndarray, int]:
    """FLAC bytes → float32 (channels, frames) and the sample rate.

    The array is the transpose of libsndfile's interleaved (frames, channels) buffer: a view, not
    a copy (copying costs 10-15% of decoding). `mono` averages the channels into (1, frames).
    """
    data, rate = soundfile.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    channels = data.shape[1]
    if mono and channels > 1:
        mixed = data[:, 0].copy()  # column sums: ~10x faster than data.mean(axis=1)
        for channel in range(1, channels):
            mixed += data[:, channel]
        mixed *= 1.0 / channels
        return mixed[None, :], rate
    return data.T, rate


def _header_problem(block: bytes, name: str, size: int) -> str | None:
    """Why `block` is not the ustar header of member `name` holding `size` bytes, or None.

    Checks the three fields that matter (checksum, size, name) itself: tarfile's full parse of
    every field costs ~5x more, a quarter of reading a sample without decoding it.
    """
    try:
        stored = int(block[148:156].strip(b"\0 ") or b"x", 8)
        declared = int(block[124:136].strip(b"\0 ") or b"x", 8)
    except ValueError:
        return f"no tar header before {name} (the shard does not match its metadata)"
    if stored != sum(block[:148]) + 8 * ord(" ") + sum(block[156:]):  # checksum field as spaces
        return f"the tar header before {name} has a bad checksum"
    if declared != size:
        return f"the tar header before {name} says {declared} bytes, the metadata {size}"
    # Longer or non-ASCII names live in a PAX header before this one; the size check remains.
    if name.isascii() and len(name) <= 100 and block[:100].rstrip(b"\0") != name.encode():
        member = block[:100].rstrip(b"\0").decode("utf-8", "replace")
        return f"tar member is {member!r} where the metadata has {name!r}"
    return None


class _SampleReader:
    """Reads rows' byte ranges from a location and turns them into sample dicts."""

    def __init__(self, location: Location, rows: _Rows, decoding: Decoding, verify: bool) -> None:
        self.location = location
        self.rows = rows
        self.decoding = decoding
        self.verify = verify

    def error(self, row: int, exc: Exception) -> LoaderError:
        shard = self.rows.shards[self.rows.shard[row]]
        return LoaderError(f"{shard} in {self.location.description}, sample {self.rows.keys[row]}: "
                           f"{exc}. {BAD_SHARD_HINT}")

    def read(self, rows: np.ndarray) -> Iterator[tuple[int, list[bytes] | LoaderError]]:
        """Each row's members, as [header, data, header, data, ...] in tar order, in the order
        given, with one request per run of nearby rows. Every member is read into its own
        bytes object: no copy of the FLAC when it is handed out or decoded."""
        r = self.rows
        gap = self.location.run_gap
        i, n = 0, len(rows)
        while i < n:
            shard = r.shard[rows[i]]
            j = i + 1
            while (j < n and r.shard[rows[j]] == shard
                   and 0 <= r.start[rows[j]] - r.end[rows[j - 1]] <= gap):
                j += 1
            position, stop = int(r.start[rows[i]]), int(r.end[rows[j - 1]])
            try:
                reader = self.location.open_range(r.shards[shard], position, stop)
            except LoaderError as exc:
                for row in rows[i:j]:
                    yield row, self.error(row, exc)
                i = j
                continue
            try:
                for k in range(i, j):
                    row = rows[k]
                    parts = []
                    try:
                        for offset, size in zip(r.offsets[row].tolist(), r.sizes[row].tolist()):
                            reader.skip(offset - TAR_HEADER - position)
                            parts.append(reader.read(TAR_HEADER))
                            parts.append(reader.read(size))
                            position = offset + size
                    except LoaderError as exc:
                        yield row, self.error(row, exc)
                        break  # the reader's position is unknown now: next rows get a new run
                    yield row, parts
                i = k + 1
            finally:
                reader.close()

    def load(self, row: int, parts: list[bytes]) -> dict[str, Any]:
        """Check the member headers (and the FLAC hash when verifying), then decode."""
        key = self.rows.keys[row]
        named = dict(zip(MEMBERS, parts[1::2]))
        try:
            for ext, header in zip(MEMBERS, parts[0::2]):
                problem = _header_problem(header, f"{key}.{ext}", len(named[ext]))
                if problem:
                    raise ValueError(problem)
            if self.verify and hashlib.sha256(named["flac"]).hexdigest() != self.rows.sha256[row]:
                raise ValueError("FLAC bytes do not match flac_sha256 of the metadata")
            return self.decoding(key, named["flac"], named["json"], named["mid"])
        except _DECODE_ERRORS as exc:
            raise self.error(row, exc) from exc


# --- The epoch plan (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class PlanConfig:
    seed: int
    shuffle: bool
    shuffle_buffer: int
    rank: int
    world_size: int
    drop_last: bool


@dataclass(frozen=True)
class EpochPlan:
    """One rank's epoch: the row each rank position reads and what each worker delivers."""

    rows: np.ndarray  # selection row of each rank position
    padding: np.ndarray  # per rank position: a repeat that only evens out the ranks
    parts: tuple[np.ndarray, ...]  # per worker: its positions in read order
    orders: tuple[np.ndarray, ...]  # per worker: the same positions in delivery order

    def batches(self, batch_size: int) -> int:
        return sum(-(-len(p) // batch_size) for p in self.parts)

    def delivered(self, batch_size: int, batches: int) -> np.ndarray:
        """Positions in the first `batches` batches of a torch DataLoader: one batch per worker
        in turn, skipping workers that ran out (its in-order contract)."""
        taken: list[np.ndarray] = []
        index = 0
        while len(taken) < batches and index * batch_size < max(map(len, self.orders), default=0):
            for order in self.orders:
                chunk = order[index * batch_size:(index + 1) * batch_size]
                if len(chunk) and len(taken) < batches:
                    taken.append(chunk)
            index += 1
        return np.concatenate(taken) if taken else np.zeros(0, np.int64)


def share_size(total: int, cfg: PlanConfig) -> int:
    """Samples per rank: the selection padded up (or trimmed down) to a multiple of the world."""
    return total // cfg.world_size if cfg.drop_last else -(-total // cfg.world_size)


def plan_epoch(rows: _Rows, cfg: PlanConfig, epoch: int, workers: int,
               consumed: np.ndarray | None = None) -> EpochPlan:
    """Pure: the same arguments give the same plan on every rank, worker and machine."""
    shard_rank = np.arange(len(rows.shards))
    if cfg.shuffle:
        shuffled = np.random.default_rng([cfg.seed, epoch]).permutation(len(shard_rank))
        shard_rank = np.argsort(shuffled)
    order = np.lexsort((rows.start, shard_rank[rows.shard]))
    share = share_size(len(order), cfg)
    total = share * cfg.world_size
    padded = np.concatenate([order, np.resize(order, max(0, total - len(order)))])[:total]
    padding = np.arange(total) >= len(order)
    mine = slice(cfg.rank * share, (cfg.rank + 1) * share)
    todo = np.arange(share) if consumed is None else np.flatnonzero(~consumed)
    sizes = [len(todo) // workers + (w < len(todo) % workers) for w in range(workers)]
    bounds = np.cumsum([0, *sizes])
    parts = tuple(todo[bounds[w]:bounds[w + 1]] for w in range(workers))
    orders = parts
    if cfg.shuffle:
        # No rank in the seed: every rank permutes the same positions the same way, so a state
        # saved on one rank describes them all.
        orders = tuple(
            _window_shuffle(part, cfg.shuffle_buffer,
                            np.random.default_rng([cfg.seed, epoch, workers, w, len(todo)]))
            for w, part in enumerate(parts))
    return EpochPlan(padded[mine], padding[mine], parts, orders)


def _window_shuffle(part: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    out = part.copy()
    for i in range(0, len(out), size):
        rng.shuffle(out[i:i + size])
    return out


def _ranges(mask: np.ndarray) -> list[list[int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return edges.reshape(-1, 2).tolist()


def _mask(ranges: list[list[int]], size: int) -> np.ndarray:
    mask = np.zeros(size, bool)
    for start, stop in ranges:
        mask[start:stop] = True
    return mask


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else torch.distributed when initialised, else RANK/WORLD_SIZE, else 0/1."""
    if rank is None and world_size is None:
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        elif "WORLD_SIZE" in os.environ:
            rank, world_size = _rank_from_environment()
        else:
            rank, world_size = 0, 1
    if rank is None or world_size is None:
        raise LoaderError("pass both rank= and world_size= (or neither, to read torch.distributed "
                          "or the RANK/WORLD_SIZE environment)")
    if world_size < 1 or not 0 <= rank < world_size:
        raise LoaderError(f"rank {rank} is not in a world of {world_size}")
    return rank, world_size


def _rank_from_environment() -> tuple[int, int]:
    """RANK and WORLD_SIZE as torchrun sets them. Without RANK every process would read rank 0's
    share (the others' samples never), so only a world of one may leave it out."""
    text_rank, text_world = os.environ.get("RANK"), os.environ["WORLD_SIZE"]
    try:
        world_size = int(text_world)
        rank = int(text_rank) if text_rank is not None else None
    except ValueError:
        raise LoaderError(f"RANK={text_rank!r} and WORLD_SIZE={text_world!r} in the environment "
                          "must be integers") from None
    if rank is None:
        if world_size != 1:
            raise LoaderError(
                f"WORLD_SIZE={world_size} is set but RANK is not: every process would read rank "
                "0's share. Set RANK too (torchrun does), initialise torch.distributed first, "
                "or pass rank= and world_size=")
        rank = 0
    return rank, world_size


def _worker_slot() -> tuple[int, int]:
    """(worker id, workers) inside a torch DataLoader worker, else (0, 1). A process that never
    imported torch cannot be a DataLoader worker, so torch is not imported here."""
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    return (info.id, info.num_workers) if info is not None else (0, 1)


# --- The stream -------------------------------------------------------------------------------


class _Source:
    """The pipeline's first stage: plans the epoch for this worker and yields its samples.

    Copies of a stream made by webdataset's fluid methods share this object, so set_epoch and
    load_state_dict on any of them apply to all.
    """

    def __init__(self, reader: _SampleReader, split: str, cfg: PlanConfig, on_error: str) -> None:
        self.reader = reader
        self.split = split
        self.cfg = cfg
        self.on_error = on_error
        self.epoch = 0
        self.skipped: list[str] = []
        self._consumed: np.ndarray | None = None  # loaded state: delivered by an earlier run
        self._delivered: list[int] = []  # delivered by this process's current pass
        self._completed = False

    @property
    def share(self) -> int:
        return share_size(len(self.reader.rows), self.cfg)

    def plan(self, workers: int) -> EpochPlan:
        return plan_epoch(self.reader.rows, self.cfg, self.epoch, workers, self._consumed)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise LoaderError(f"epoch must be 0 or more, not {epoch}")
        if epoch != self.epoch:
            self.epoch = epoch
            self._consumed, self._delivered, self._completed = None, [], False

    def begin_pass(self) -> None:
        self._delivered, self._completed = [], False

    def finish_pass(self) -> None:
        """A pass ran to its end: the state now points at the next epoch, and another pass
        replays this one (a validation stream is iterated many times without set_epoch)."""
        self._consumed, self._delivered, self._completed = None, [], True

    def __call__(self) -> Iterator[dict[str, Any]]:
        worker, workers = _worker_slot()
        plan = self.plan(workers)
        self.begin_pass()
        for position, sample in self._substituted(self._samples(plan, worker)):
            self._delivered.append(position)
            yield sample
        self.finish_pass()

    def _samples(self, plan: EpochPlan, worker: int) -> Iterator[tuple[int, Any]]:
        """(position, sample or LoaderError) in delivery order. A local file is read in that
        order (seeks are free); a remote one window by window in shard order, the window's raw
        bytes held and handed out in its shuffled order."""
        part, order = plan.parts[worker], plan.orders[worker]
        if self.reader.location.cheap_seeks or not self.cfg.shuffle:
            read = self.reader.read(plan.rows[order])
            for position in order.tolist():
                yield position, self._sample(plan, position, next(read)[1])
            return
        read = self.reader.read(plan.rows[part])
        window = self.cfg.shuffle_buffer
        for i in range(0, len(part), window):
            held = {position: next(read)[1] for position in part[i:i + window].tolist()}
            for position in order[i:i + window].tolist():
                yield position, self._sample(plan, position, held.pop(position))

    def _sample(self, plan: EpochPlan, position: int, parts: list[bytes] | LoaderError) -> Any:
        if isinstance(parts, LoaderError):
            return parts
        try:
            sample = self.reader.load(int(plan.rows[position]), parts)
        except LoaderError as exc:
            return exc
        sample["padding"] = bool(plan.padding[position])
        return sample

    def _substituted(self, items: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, dict]]:
        """Raise on a bad sample, or (on_error='skip') log it and deliver a padding repeat of a
        good one in its place, so every rank still yields the same count."""
        last: dict | None = None
        owed: list[int] = []
        for position, item in items:
            if isinstance(item, LoaderError):
                if self.on_error == "raise":
                    raise item
                log.warning("skipped: %s", item)
                self.skipped.append(str(item))
                if last is None:
                    owed.append(position)
                    continue
                item = {**last, "padding": True}
            else:
                last = item
            yield position, item
            while owed:
                yield owed.pop(0), {**item, "padding": True}
        if owed:
            raise LoaderError(f"none of the {len(owed)} samples of this worker could be read; "
                              f"first error: {self.skipped[-len(owed)]}")

    def state(self, delivered: np.ndarray | list[int] | None = None,
              pass_start: tuple[int, np.ndarray | None] | None = None) -> dict[str, Any]:
        """The resume state after `delivered` positions of the current pass (default: what this
        process's own iteration delivered). `pass_start` is (epoch, consumed) as the pass began,
        when the caller took them then (a StreamLoader: an in-process pass that ran to its end
        inside the last batch has already forgotten them)."""
        if delivered is None:
            delivered = self._delivered
        consumed = np.zeros(self.share, bool)
        if pass_start is not None:
            epoch, before = pass_start
        elif self._completed and not len(delivered):
            epoch, before, delivered = self.epoch + 1, None, []
        else:
            epoch, before = self.epoch, self._consumed
        if before is not None:
            consumed |= before
        consumed[np.asarray(delivered, dtype=np.int64)] = True
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "split": self.split,
            "selection": self.reader.rows.fingerprint(),
            "seed": self.cfg.seed,
            "shuffle": self.cfg.shuffle,
            "shuffle_buffer": self.cfg.shuffle_buffer,
            "drop_last": self.cfg.drop_last,
            "world_size": self.cfg.world_size,
            "epoch": epoch,
            "consumed": _ranges(consumed),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise LoaderError("not a sousa-wds stream state (from state_dict() of this version)")
        mine = self.state([])
        for field in ("split", "selection", "seed", "shuffle", "shuffle_buffer", "drop_last",
                      "world_size"):
            if state[field] != mine[field]:
                what = "the where= selection" if field == "selection" else field
                raise LoaderError(
                    f"the state was saved with a different {what} ({state[field]!r} there, "
                    f"{mine[field]!r} here); resume with the same source, split, where, seed, "
                    "shuffle, shuffle_buffer, drop_last and world size")
        self.epoch = int(state["epoch"])
        consumed = _mask(state["consumed"], self.share)
        self._consumed = consumed if consumed.any() else None
        self._delivered, self._completed = [], False


class _StreamMethods:
    """SampleStream's own methods; the class itself also derives from webdataset's DataPipeline
    (see `_stream_class` at the bottom of this module)."""

    pipeline: list

    @property
    def source(self) -> _Source:
        return self.pipeline[0]

    @property
    def epoch(self) -> int:
        return self.source.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next pass follows (same seed and epoch, same order)."""
        self.source.set_epoch(epoch)

    @property
    def skipped(self) -> list[str]:
        """Bad samples replaced by padding in this process (on_error='skip')."""
        return self.source.skipped

    @property
    def num_samples(self) -> int:
        """Samples this rank delivers in the next pass (all workers, padding included)."""
        return sum(len(part) for part in self.source.plan(1).parts)

    def state_dict(self) -> dict[str, Any]:
        """Where this process's iteration stands in the epoch. With a DataLoader, use
        `stream.loader(...).state_dict()`: workers iterate copies of the stream."""
        return self.source.state()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the saved epoch: its delivered samples are left out of the next pass."""
        self.source.load_state(state)

    def loader(self, batch_size: int, num_workers: int = 0, **kwargs: Any) -> StreamLoader:
        """A torch DataLoader over this stream that can save and resume its position."""
        return StreamLoader(self, batch_size=batch_size, num_workers=num_workers, **kwargs)


class StreamLoader:
    """Iterates a torch DataLoader over a stream and counts its batches, which (with the plan
    and the DataLoader's in-order round robin over workers) says exactly which samples were
    delivered: `state_dict()` / `load_state_dict()` resume mid-epoch."""

    def __init__(self, stream: Any, batch_size: int, num_workers: int = 0, **kwargs: Any) -> None:
        from torch.utils.data import DataLoader

        if not isinstance(batch_size, int) or batch_size < 1:
            raise LoaderError(f"batch_size must be a positive integer, not {batch_size!r}: the "
                              "loader counts batches to know where it stands")
        if kwargs.get("persistent_workers"):
            raise LoaderError("persistent_workers=True keeps each worker's first epoch and resume "
                              "state; leave it off (workers restart each epoch)")
        if kwargs.get("drop_last"):
            raise LoaderError("drop_last= on the DataLoader drops each worker's partial batch: "
                              "use sousa_wds.stream(..., drop_last=True) instead")
        if kwargs.get("in_order") is False:
            raise LoaderError("in_order=False makes the delivered samples depend on timing; "
                              "resume needs the DataLoader's default in-order delivery")
        self.stream = stream
        self.batch_size = batch_size
        self.workers = max(1, num_workers)
        self.dataloader = DataLoader(stream, batch_size=batch_size, num_workers=num_workers,
                                     **kwargs)
        self._batches = 0
        # The pass in progress: its plan and (epoch, consumed) as it began. Taken once: without
        # workers the stream runs in this process and forgets a loaded state when it reaches its
        # end, which happens while the DataLoader fills a partial last batch, before it is handed
        # out.
        self._pass: tuple[EpochPlan, tuple[int, np.ndarray | None]] | None = None

    def __iter__(self) -> Iterator[Any]:
        source = self.stream.source
        source.begin_pass()
        self._batches = 0
        consumed = None if source._consumed is None else source._consumed.copy()
        self._pass = (source.plan(self.workers), (source.epoch, consumed))
        for batch in self.dataloader:
            self._batches += 1
            yield batch
        source.finish_pass()
        self._pass, self._batches = None, 0

    def __len__(self) -> int:
        return self.stream.source.plan(self.workers).batches(self.batch_size)

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        source = self.stream.source
        if self._pass is not None:
            plan, start = self._pass
            return source.state(plan.delivered(self.batch_size, self._batches), start)
        return source.state(source.plan(self.workers).delivered(self.batch_size, self._batches))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stream.load_state_dict(state)
        self._batches = 0


def stream(
    source: Any,
    split: str = "train",
    *,
    where: Where = None,
    decode: bool = True,
    mono: bool = False,
    midi: Literal["bytes", "mido"] = "bytes",
    tensors: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    verify: bool = False,
    on_error: Literal["raise", "skip"] = "raise",
    token: str | bool | None = None,
) -> Any:
    """A webdataset pipeline (a torch IterableDataset) over one split, for this rank.

    `source`: packed folder, http(s) base URL, `user/name[@rev]` or `hf://datasets/user/name@rev`.
    Samples: `key`, `audio` (float32 (channels, frames)), `sample_rate`, `midi`, `labels`,
    `padding`; with decode=False, `flac`/`json`/`mid` bytes instead. See docs/loader.md.
    """
    if on_error not in ("raise", "skip"):
        raise LoaderError(f"on_error={on_error!r}: choose 'raise' or 'skip'")
    if shuffle_buffer < 1 or seed < 0:
        raise LoaderError(f"shuffle_buffer must be at least 1 ({shuffle_buffer} given) and seed "
                          f"0 or more ({seed} given)")
    decoding = Decoding(decode, mono, midi, tensors)
    rank, world_size = _rank_and_world(rank, world_size)
    packed = _packed(source, token)
    packed.require_shards()
    rows = _Rows.from_frame(_select(packed.frame(split), where))
    cfg = PlanConfig(seed, shuffle, shuffle_buffer, rank, world_size, drop_last)
    origin = _Source(_SampleReader(packed.location, rows, decoding, verify), split, cfg, on_error)
    return _stream_class()(origin)


# --- Random access ----------------------------------------------------------------------------


class SampleMap(Mapping[str, dict]):
    """Samples by key, each read with one byte-range request and checked against flac_sha256.

    An integer index gives the sample of that metadata row, so this is also a torch map-style
    Dataset. `metadata` holds the rows (labels and locations) of the split(s).
    """

    def __init__(self, source: Any, split: str | None = None, *, decode: bool = True,
                 mono: bool = False, midi: Literal["bytes", "mido"] = "bytes",
                 tensors: bool = False, token: str | bool | None = None) -> None:
        packed = _packed(source, token)
        packed.require_shards()
        frames = [packed.frame(s) for s in ([split] if split else SPLITS)]
        self.metadata = pd.concat(frames, ignore_index=True)
        rows = _Rows.from_frame(self.metadata)
        self._reader = _SampleReader(packed.location, rows, Decoding(decode, mono, midi, tensors),
                                     verify=True)
        self._index = {key: i for i, key in enumerate(rows.keys)}
        self._where = f"{packed.location.description} ({split or ', '.join(SPLITS)})"

    def position(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"no sample {key!r} in {self._where}") from None

    def __getitem__(self, key: str | int) -> dict[str, Any]:
        row = int(key) if isinstance(key, (int, np.integer)) else self.position(key)
        if not 0 <= row < len(self._index):
            raise IndexError(f"row {row} is outside 0..{len(self._index) - 1}")
        _, parts = next(self._reader.read(np.array([row])))
        if isinstance(parts, LoaderError):
            raise parts
        return self._reader.load(row, parts) | {"padding": False}

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


def get_sample(source: Any, key: str, *, split: str | None = None, decode: bool = True,
               mono: bool = False, midi: Literal["bytes", "mido"] = "bytes",
               tensors: bool = False, token: str | bool | None = None) -> dict[str, Any]:
    """One sample by key, reading only its bytes (plus the metadata to find them). For many
    lookups, keep a SampleMap: it reads the metadata once."""
    view, _ = _find(_packed(source, token), key, split,
                    dict(decode=decode, mono=mono, midi=midi, tensors=tensors))
    return view[key]


def _find(packed: _Packed, key: str, split: str | None, options: dict) -> tuple[SampleMap, str]:
    for name in [split] if split else SPLITS:
        view = SampleMap(packed, name, **options)
        if key in view:
            return view, name
    raise LoaderError(f"no sample {key!r} in {packed.location.description} "
                      f"({split or ', '.join(SPLITS)}); keys are sample_ids, e.g. from "
                      "`sousa-wds stream` or the metadata's key column")


# --- CLI --------------------------------------------------------------------------------------


def cli_get(args: argparse.Namespace) -> int:
    packed = _packed(args.source, args.token)
    view, split = _find(packed, args.key, args.split, {"decode": False})
    sample = view[args.key]
    row = view.metadata.iloc[view.position(args.key)]
    seconds = row.num_frames / row.sample_rate
    print(f"{args.key}  ({split}, {row.shard_path})")
    print(f"  audio: {row.channels} ch, {row.sample_rate} Hz, {row.num_frames} frames "
          f"({seconds:.2f} s), {len(sample['flac'])} bytes of FLAC, sha256 ok")
    print(f"  midi: {len(sample['mid'])} bytes; labels:")
    print(json.dumps(json.loads(sample["json"]), indent=2, sort_keys=True))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for ext in MEMBERS:
            (out / f"{args.key}.{ext}").write_bytes(sample[ext])
        print(f"wrote {', '.join(f'{args.key}.{ext}' for ext in MEMBERS)} to {out}")
    return 0


def cli_stream(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    samples = stream(args.source, args.split, where=args.where, decode=not args.no_decode,
                     shuffle=False, token=args.token)
    planned = samples.num_samples
    ready = time.perf_counter()
    print(f"{planned} samples selected in {args.split} of {args.source} "
          f"(metadata and plan: {ready - started:.2f} s)")
    count = audio_seconds = size = 0
    for sample in samples:
        if args.limit is not None and count >= args.limit:
            break
        count += 1
        labels = json.loads(sample["json"]) if args.no_decode else sample["labels"]
        if args.no_decode:
            size += len(sample["flac"]) + len(sample["json"]) + len(sample["mid"])
            shape = f"{len(sample['flac'])} bytes of FLAC"
        else:
            channels, frames = sample["audio"].shape
            audio_seconds += frames / sample["sample_rate"]
            shape = f"audio {channels}x{frames} @ {sample['sample_rate']} Hz"
        print(f"{count:>6}  {sample['key']}  {shape}  {labels['skill_tier']}  "
              f"{labels['tempo_bpm']} bpm  overall {labels['overall_score']:.3f}")
    elapsed = max(time.perf_counter() - ready, 1e-9)
    rate = f"{count / elapsed:.1f} samples/s"
    if args.no_decode:
        rate += f", {size / elapsed / 1e6:.1f} MB/s"
    else:
        rate += f", {audio_seconds / elapsed:.0f} s of audio per second"
    print(f"{count} samples in {elapsed:.2f} s: {rate}")
    return 0


def _stream_class() -> type:
    """SampleStream derives from webdataset's DataPipeline, and importing webdataset imports
    torch (seconds): the class is built on first use and kept as a module attribute, so pickling
    (spawned DataLoader workers) finds it by name like any class."""
    cls = globals().get("SampleStream")
    if cls is None:
        import webdataset as wds

        cls = type("SampleStream", (_StreamMethods, wds.DataPipeline, wds.FluidInterface),
                   {"__module__": __name__, "__doc__": "A sousa-wds stream: a webdataset "
                    "pipeline with set_epoch, state_dict/load_state_dict and loader()."})
        globals()["SampleStream"] = cls
    return cls


def __getattr__(name: str) -> Any:
    if name == "SampleStream":
        return _stream_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
