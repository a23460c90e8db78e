"""The training stream: a webdataset pipeline whose first stage reads this worker's plan.

How it works:
- `stream(source, split, ...)` reads the split's metadata, selects rows (`query.select`), and
  builds a `SampleStream`: a real `webdataset.DataPipeline` (so a torch IterableDataset) whose
  first stage is an `EpochSource`. Users append webdataset stages with its fluid methods
  (`.map`, `.to_tuple`, `.batched`, ...); copies made by them share the EpochSource, so
  `set_epoch` and `load_state_dict` on any of them apply to all.
- Each pass, the EpochSource asks `epoch.plan_epoch` for this rank's plan, takes this
  DataLoader worker's part, and reads it with a `samples.SampleReader`: a local file in the
  shuffled order directly (seeks are free), a remote one window by window in shard order (the
  window's raw bytes held, handed out in the shuffled order). Samples are checked and decoded on
  `decode_threads` threads (`samples.in_order`; by default the cores this process may use,
  shared among its DataLoader workers) while reading stays on the iterating thread; the
  delivery order, and so resume, is the same for any thread count.
- The epoch number lives in shared memory (`_SharedEpoch`), so `set_epoch` in the training
  process reaches DataLoader workers that persist across epochs (`persistent_workers=True`).
- Resume from data, not from flags: a state lists the rank positions delivered in the epoch
  (identical on every rank in lockstep training); loading it removes them from the plan.
  `StreamLoader` wraps a torch DataLoader and counts its batches to know which were delivered.
This module imports webdataset (which imports torch): `sousa_wds.stream` loads it on first use,
so `metadata()` and random access stay quick.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import webdataset as wds

from ..errors import LoaderError
from .dataset import packed
from .epoch import (
    EpochPlan,
    PlanConfig,
    default_decode_threads,
    mask,
    plan_epoch,
    ranges,
    rank_and_world,
    share_size,
    worker_slot,
)
from .query import Where, describe, select
from .samples import Decoding, Rows, SampleReader, in_order

log = logging.getLogger(__name__)

# Samples whose raw bytes a worker holds to shuffle within (SOUSA samples are ~1 MB each).
SHUFFLE_BUFFER = 64
STATE_FORMAT = "sousa-wds-stream-state"
STATE_VERSION = 1


class _SharedEpoch:
    """An epoch number in shared memory: DataLoader workers, forked or spawned, see the value
    the training process sets, even when they persist across epochs."""

    def __init__(self, value: int = 0) -> None:
        self._value = multiprocessing.RawValue("q", value)

    @property
    def value(self) -> int:
        return int(self._value.value)

    @value.setter
    def value(self, epoch: int) -> None:
        self._value.value = epoch

    def __reduce__(self) -> tuple:
        if multiprocessing.context.get_spawning_popen() is not None:  # handed to a new worker
            return (_adopt, (self._value,))
        return (_SharedEpoch, (self.value,))  # an ordinary copy (pickle, deepcopy): its own


def _adopt(raw: Any) -> _SharedEpoch:
    shared = _SharedEpoch.__new__(_SharedEpoch)
    shared._value = raw
    return shared


class EpochSource:
    """The pipeline's first stage: plans the epoch for this worker and yields its samples."""

    def __init__(self, reader: SampleReader, split: str, cfg: PlanConfig, on_error: str,
                 decode_threads: int | None = None) -> None:
        self.reader = reader
        self.split = split
        self.cfg = cfg
        self.on_error = on_error
        self.decode_threads = decode_threads
        self._epoch = _SharedEpoch()
        self._seen = 0  # the epoch _consumed and _delivered belong to
        self.skipped: list[str] = []
        self._consumed: np.ndarray | None = None  # loaded state: delivered by an earlier run
        self._delivered: list[int] = []  # delivered by this process's current pass
        self._completed = False

    @property
    def epoch(self) -> int:
        return self._epoch.value

    @property
    def share(self) -> int:
        return share_size(len(self.reader.rows), self.cfg)

    def plan(self, workers: int) -> EpochPlan:
        self._sync()
        return plan_epoch(self.reader.rows, self.cfg, self.epoch, workers, self._consumed)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise LoaderError(f"epoch must be 0 or more, not {epoch}")
        self._epoch.value = epoch
        self._sync()

    def _sync(self) -> None:
        """A new epoch (set here, or by the training process for a persistent worker) starts
        with nothing consumed."""
        if self._seen != self.epoch:
            self._seen = self.epoch
            self._consumed, self._delivered, self._completed = None, [], False

    def begin_pass(self) -> None:
        self._sync()
        self._delivered, self._completed = [], False

    def finish_pass(self, epoch: int) -> None:
        """A pass of `epoch` ran to its end: the state now points at the next epoch, and another
        pass replays this one (a validation stream is iterated many times without set_epoch).
        Nothing to mark when the epoch was set to another one meanwhile: that one is untouched."""
        if self.epoch == epoch:
            self._consumed, self._delivered, self._completed = None, [], True

    def __call__(self) -> Iterator[dict[str, Any]]:
        worker, workers = worker_slot()
        plan = self.plan(workers)
        epoch = self.epoch
        self.begin_pass()

        def load(item: tuple[int, list[bytes] | LoaderError]) -> tuple[int, Any]:
            return item[0], self._sample(plan, *item)

        threads = self.decode_threads or default_decode_threads(workers)
        loaded = in_order(load, self._raw(plan, worker), threads)
        for position, sample in self._substituted(loaded):
            if self.epoch == epoch:  # set_epoch during the pass: its samples are not the new one's
                self._delivered.append(position)
            yield sample
        self.finish_pass(epoch)

    def _raw(self, plan: EpochPlan, worker: int
             ) -> Iterator[tuple[int, list[bytes] | LoaderError]]:
        """(position, raw members or LoaderError) in delivery order. A local file is read in
        that order (seeks are free); a remote one window by window in shard order, the window's
        raw bytes held and handed out in its shuffled order."""
        part, order = plan.parts[worker], plan.orders[worker]
        if self.reader.location.cheap_seeks or not self.cfg.shuffle:
            read = self.reader.read(plan.rows[order])
            for position in order.tolist():
                yield position, next(read)[1]
            return
        read = self.reader.read(plan.rows[part])
        window = self.cfg.shuffle_buffer
        for i in range(0, len(part), window):
            held = {position: next(read)[1] for position in part[i:i + window].tolist()}
            for position in order[i:i + window].tolist():
                yield position, held.pop(position)

    def _sample(self, plan: EpochPlan, position: int, parts: list[bytes] | LoaderError) -> Any:
        """The checked and decoded sample, or the LoaderError that stopped it (never raises:
        it may run on a decode thread)."""
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
        self._sync()
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
            "consumed": ranges(consumed),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise LoaderError("not a sousa-wds stream state (from state_dict() of this version)")
        mine = self.state([])
        for field in ("split", "selection", "seed", "shuffle", "shuffle_buffer", "drop_last",
                      "world_size"):
            if state[field] != mine[field]:
                what = "where= selection" if field == "selection" else field
                raise LoaderError(
                    f"the state was saved with another {what} ({state[field]!r} there, "
                    f"{mine[field]!r} here); resume with the same source, split, where, seed, "
                    "shuffle, shuffle_buffer, drop_last and world size")
        epoch, runs = state["epoch"], state["consumed"]
        if type(epoch) is not int or epoch < 0 or not _runs_within(runs, self.share):
            raise LoaderError(f"the state's epoch ({epoch!r}) or consumed positions do not fit "
                              f"this stream ({self.share} positions a pass): it is damaged, or "
                              "not from this stream's state_dict()")
        self._epoch.value = self._seen = epoch
        consumed = mask(runs, self.share)
        self._consumed = consumed if consumed.any() else None
        self._delivered, self._completed = [], False


def _runs_within(runs: object, size: int) -> bool:
    """Whether `runs` are [start, stop) pairs of integers inside 0..size (what `ranges` gives)."""
    return isinstance(runs, list) and all(
        isinstance(run, list) and len(run) == 2 and all(type(v) is int for v in run)
        and 0 <= run[0] < run[1] <= size for run in runs)


class SampleStream(wds.DataPipeline, wds.FluidInterface):
    """A sousa-wds stream: a webdataset pipeline (and torch IterableDataset) with set_epoch,
    state_dict/load_state_dict and loader(). Extend it with webdataset's fluid methods."""

    pipeline: list

    def __init__(self, source: EpochSource) -> None:
        super().__init__(source)

    @property
    def source(self) -> EpochSource:
        return self.pipeline[0]

    @property
    def epoch(self) -> int:
        return self.source.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next pass follows (same seed and epoch, same order).
        Reaches DataLoader workers too, persistent ones included."""
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

    def __init__(self, stream: SampleStream, batch_size: int, num_workers: int = 0,
                 **kwargs: Any) -> None:
        from torch.utils.data import DataLoader

        if not isinstance(batch_size, int) or batch_size < 1:
            raise LoaderError(f"batch_size must be a positive integer, not {batch_size!r}: the "
                              "loader counts batches to know where it stands")
        if kwargs.get("persistent_workers"):
            raise LoaderError("persistent_workers=True keeps each worker's resume state from "
                              "its first epoch; leave it off (workers restart each epoch)")
        if kwargs.get("drop_last"):
            raise LoaderError("drop_last= on the DataLoader drops each worker's partial batch: "
                              "use sousa_wds.stream(..., drop_last=True) instead")
        if kwargs.get("in_order") is False:
            raise LoaderError("in_order=False makes the delivered samples depend on timing; "
                              "resume needs the DataLoader's default in-order delivery")
        if getattr(stream, "repetitions", 1) != 1 or getattr(stream, "nsamples", -1) > 0:
            raise LoaderError(".with_epoch() and .repeat() make a pass other than one epoch of "
                              "the stream, which the loader's state could not describe; use "
                              "set_epoch for each epoch")
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
        self._pass = current = (source.plan(self.workers), (source.epoch, consumed))
        for batch in self.dataloader:
            # Counted while this is the pass the state describes: set_epoch, load_state_dict
            # or another iteration of the loader since then start another.
            if self._pass is current:
                self._batches += 1
            yield batch
        if self._pass is current:
            source.finish_pass(current[1][0])
            self._pass, self._batches = None, 0

    def __len__(self) -> int:
        return self.stream.source.plan(self.workers).batches(self.batch_size)

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        self.stream.set_epoch(epoch)
        if self._pass is not None and self._pass[1][0] != epoch:
            self._pass, self._batches = None, 0  # the pass in progress is no longer the state's

    def state_dict(self) -> dict[str, Any]:
        source = self.stream.source
        if self._pass is not None:
            plan, start = self._pass
            return source.state(plan.delivered(self.batch_size, self._batches), start)
        return source.state(source.plan(self.workers).delivered(self.batch_size, self._batches))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stream.load_state_dict(state)
        self._pass, self._batches = None, 0


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
    retries: int | None = None,
    decode_threads: int | None = None,
    cache_dir: str | bool | None = None,
    cache_size: str | int | None = None,
) -> SampleStream:
    """A webdataset pipeline (a torch IterableDataset) over one split, for this rank.

    `source`: packed folder, http(s) base URL, `user/name[@rev]` or `hf://datasets/user/name@rev`.
    Samples: `key`, `audio` (float32 (channels, frames)), `sample_rate`, `midi`, `labels`,
    `padding`; with decode=False, `flac`/`json`/`mid` bytes instead. `cache_dir`: keep remote
    shards and metadata in a local cache (`read.cache`). See docs/loader.md.
    """
    if on_error not in ("raise", "skip"):
        raise LoaderError(f"on_error={on_error!r}: choose 'raise' or 'skip'")
    if shuffle_buffer < 1 or seed < 0:
        raise LoaderError(f"shuffle_buffer must be at least 1 ({shuffle_buffer} given) and seed "
                          f"0 or more ({seed} given)")
    if decode_threads is not None and (not isinstance(decode_threads, int)
                                       or decode_threads < 1):
        raise LoaderError(f"decode_threads must be a positive integer or None (automatic), not "
                          f"{decode_threads!r}; 1 decodes inline")
    decoding = Decoding(decode, mono, midi, tensors)
    rank, world_size = rank_and_world(rank, world_size)
    dataset = packed(source, token, retries, cache_dir, cache_size)
    dataset.require_shards()
    frame = dataset.frame(split)
    rows = Rows.from_frame(select(frame, where))
    if where is not None and len(frame) and not len(rows):  # a typo in a value selects nothing
        log.warning("%s selects none of the %d samples of the %s split of %s: the stream is "
                    "empty", describe(where), len(frame), split, dataset.location.description)
    cfg = PlanConfig(seed, shuffle, shuffle_buffer, rank, world_size, drop_last)
    reader = SampleReader(dataset.location, rows, decoding, verify)
    return SampleStream(EpochSource(reader, split, cfg, on_error, decode_threads))
