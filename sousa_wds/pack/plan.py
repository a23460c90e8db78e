"""Plan shards: which sample goes into which shard, decided before any byte is written.

Planning is pure (samples and options in, a `PackPlan` out), so it is cheap to test, identical
whatever the worker count, and the same plan is recomputed by `--resume` to recognise finished
shards. Sizes come from the source files' sizes plus tar overhead; the JSON member is estimated,
so a shard can miss the target by a few KB, never by a whole sample.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..defaults import DEFAULT_SEED
from ..errors import PackError
from ..format import SPLITS, TAR_BLOCK, PackOptions, shard_name, shard_path, tar_padded

if TYPE_CHECKING:
    from ..source import SourceSample

# One ustar header per member plus the JSON record, whose exact size is known only when written.
JSON_ESTIMATE = 2048
DEFAULT_SHARD_SIZE = 1_000_000_000  # Hub guidance for WebDataset: ~1 GB shards.


@dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int
    samples: tuple[SourceSample, ...]

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
        return sum(len(s.samples) for s in self.shards)

    def options(self, layout: str) -> PackOptions:
        """What the output depends on besides the input: recorded in the state and manifest."""
        return PackOptions(layout=layout, shard_size=self.shard_size,
                           max_samples_per_shard=self.max_samples_per_shard, seed=self.seed,
                           order=self.order)


def estimate_sample_bytes(sample: SourceSample) -> int:
    return (
        3 * TAR_BLOCK
        + tar_padded(sample.audio_bytes)
        + tar_padded(sample.midi_bytes)
        + JSON_ESTIMATE
    )


def order_split(
    samples: Sequence[SourceSample], split: str, seed: int, order: str
) -> list[SourceSample]:
    """Seeded shuffle, so each shard mixes rudiments, tiers and players; or sample_id order."""
    ordered = sorted(samples, key=lambda s: s.key)
    if order == "shuffle":
        random.Random(f"sousa-wds:{seed}:{split}").shuffle(ordered)
    elif order != "sorted":
        raise PackError(f"unknown order {order!r}: use 'shuffle' or 'sorted'")
    return ordered


def plan_shards(
    samples: Sequence[SourceSample],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_samples_per_shard: int | None = None,
    seed: int = DEFAULT_SEED,
    order: str = "shuffle",
) -> PackPlan:
    """Cut each split's ordered samples into consecutive shards of about `shard_size` bytes."""
    if max_samples_per_shard is not None and max_samples_per_shard < 1:
        raise PackError("--max-samples-per-shard must be at least 1")
    shards: list[ShardPlan] = []
    for split in SPLITS:
        current: list[SourceSample] = []
        current_bytes = 0
        index = 0
        for sample in order_split([s for s in samples if s.split == split], split, seed, order):
            size = estimate_sample_bytes(sample)
            full = current and (
                current_bytes + size > shard_size
                or (max_samples_per_shard is not None and len(current) >= max_samples_per_shard)
            )
            if full:
                shards.append(ShardPlan(split, index, tuple(current)))
                index += 1
                current, current_bytes = [], 0
            current.append(sample)
            current_bytes += size
        if current:
            shards.append(ShardPlan(split, index, tuple(current)))
    return PackPlan(tuple(shards), shard_size, max_samples_per_shard, seed, order)
