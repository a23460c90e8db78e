"""The epoch plan (pure) and where this process sits in training: rank, world size, worker.

How it works:
- `plan_epoch(rows, cfg, epoch, workers, consumed)` is pure: the same arguments give the same
  plan on every rank, worker and machine. It orders the selection shard by shard (shards in a
  permutation seeded with (seed, epoch)), pads (or trims, `drop_last`) it to a multiple of the
  world size, gives each rank a contiguous share and cuts every share into contiguous parts, one
  per DataLoader worker, with the same sizes on every rank (so every rank yields the same number
  of batches and DDP never waits for a rank that ran out). With shuffling, each part is permuted
  within windows of `shuffle_buffer` positions.
- A loaded resume state (`consumed`, positions of the share already delivered) is left out of
  the plan; `_ranges`/`_mask` store it compactly.
- `rank_and_world` reads explicit values, else torch.distributed when initialised, else
  RANK/WORLD_SIZE; `worker_slot` asks torch (only when already imported) which DataLoader worker
  this is; `default_decode_threads` shares this process's cores among the workers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np

from ..errors import LoaderError
from .samples import Rows

# Decode threads per process at most, by default: FLAC decoding runs without the GIL, but
# libsndfile's reads call back into Python, so more threads mostly contend.
MAX_DECODE_THREADS = 4


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


def plan_epoch(rows: Rows, cfg: PlanConfig, epoch: int, workers: int,
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


def ranges(mask: np.ndarray) -> list[list[int]]:
    """A boolean mask as [start, stop) runs of True: a compact, JSON-able resume state."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return edges.reshape(-1, 2).tolist()


def mask(runs: list[list[int]], size: int) -> np.ndarray:
    out = np.zeros(size, bool)
    for start, stop in runs:
        out[start:stop] = True
    return out


def rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
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


def worker_slot() -> tuple[int, int]:
    """(worker id, workers) inside a torch DataLoader worker, else (0, 1). A process that never
    imported torch cannot be a DataLoader worker, so torch is not imported here."""
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    return (info.id, info.num_workers) if info is not None else (0, 1)


def default_decode_threads(workers: int) -> int:
    """Default threads decoding in each of `workers` DataLoader workers (1: this process): the
    cores this process may run on, shared among them, so workers do not oversubscribe."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_DECODE_THREADS, (cores or 1) // workers))
