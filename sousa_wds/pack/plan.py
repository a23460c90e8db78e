"""Plan shards: which sample goes into which shard, decided before any byte is written.

Planning is pure (samples and options in, a `PackPlan` out), so it is cheap to test, identical
whatever the worker count, and the same plan is recomputed by `--resume` to recognise finished
shards. Sizes come from the source files' sizes plus tar overhead; the JSON member is estimated,
so a shard can miss the target by a few KB, never by a whole sample.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ..arrays import int_array, int_scalar
from ..defaults import DEFAULT_SEED
from ..errors import PackError
from ..format import SPLITS, TAR_BLOCK, PackOptions, shard_name, shard_path, tar_padded
from ..source import SampleTable, SourceSample

# One ustar header per member plus the JSON record, whose exact size is known only when written.
JSON_ESTIMATE = 2048
DEFAULT_SHARD_SIZE = 1_000_000_000  # Hub guidance for WebDataset: ~1 GB shards.


@dataclass(frozen=True, eq=False)
class ShardPlan:
    split: str
    index: int
    positions: pa.Array  # where its samples are in `source`, in shard order
    source: SampleTable = field(repr=False)

    @property
    def samples(self) -> SampleTable:
        """Taken when asked: a plan of 100k samples holds positions, not a copy of each."""
        return self.source.take(self.positions)

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)

    @property
    def path(self) -> str:
        return shard_path(self.split, self.index)


@dataclass(frozen=True)
class PackPlan:
    shards: tuple[ShardPlan, ...]
    shard_size: int
    max_samples_per_shard: int | None
    seed: int
    order: str

    def split_shards(self, split: str) -> tuple[ShardPlan, ...]:
        return tuple(s for s in self.shards if s.split == split)

    @property
    def num_samples(self) -> int:
        return sum(len(s.positions) for s in self.shards)

    def options(self, layout: str) -> PackOptions:
        """What the output depends on besides the input: recorded in the state and manifest."""
        return PackOptions(layout=layout, shard_size=self.shard_size,
                           max_samples_per_shard=self.max_samples_per_shard, seed=self.seed,
                           order=self.order)


def estimate_sample_bytes(audio_bytes: int, midi_bytes: int) -> int:
    return 3 * TAR_BLOCK + tar_padded(audio_bytes) + tar_padded(midi_bytes) + JSON_ESTIMATE


def order_positions(samples: SampleTable, split: str, seed: int, order: str) -> pa.Array:
    """Where `split`'s samples are in `samples`, in pack order: a seeded shuffle of sample_id
    order, so each shard mixes rudiments, tiers and players; or sample_id order."""
    code = int_scalar(SPLITS.index(split), pa.int8())
    positions = pc.indices_nonzero(pc.equal(samples.column("split"), code))
    ordered = pc.sort_indices(pc.take(samples.column("key"), positions)).to_pylist()
    if order == "shuffle":
        random.Random(f"sousa-wds:{seed}:{split}").shuffle(ordered)
    elif order != "sorted":
        raise PackError(f"unknown order {order!r}: use 'shuffle' or 'sorted'")
    return pc.take(positions, int_array(ordered))


def order_split(samples: SampleTable, split: str, seed: int, order: str) -> SampleTable:
    """`split`'s samples in pack order (`order_positions`)."""
    return samples.take(order_positions(samples, split, seed, order))


def plan_shards(
    samples: SampleTable | Sequence[SourceSample],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_samples_per_shard: int | None = None,
    seed: int = DEFAULT_SEED,
    order: str = "shuffle",
) -> PackPlan:
    """Cut each split's ordered samples into consecutive shards of about `shard_size` bytes."""
    if max_samples_per_shard is not None and max_samples_per_shard < 1:
        raise PackError("--max-samples-per-shard must be at least 1")
    samples = SampleTable.of(samples)
    shards: list[ShardPlan] = []
    for split in SPLITS:
        positions = order_positions(samples, split, seed, order)
        sizes = map(estimate_sample_bytes,
                    pc.take(samples.column("audio_bytes"), positions).to_pylist(),
                    pc.take(samples.column("midi_bytes"), positions).to_pylist())
        start = current_bytes = index = 0
        for end, size in enumerate(sizes):
            count = end - start
            full = count and (
                current_bytes + size > shard_size
                or (max_samples_per_shard is not None and count >= max_samples_per_shard)
            )
            if full:
                shards.append(ShardPlan(split, index, positions[start:end], samples))
                start, current_bytes, index = end, 0, index + 1
            current_bytes += size
        if start < len(positions):
            shards.append(ShardPlan(split, index, positions[start:], samples))
    return PackPlan(tuple(shards), shard_size, max_samples_per_shard, seed, order)
