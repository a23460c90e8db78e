"""Plan shards: which sample goes into which shard, decided before any byte is written.

Planning is pure (samples and options in, a `PackPlan` out), so it is cheap to test, identical
whatever the worker count, and the same plan is recomputed by `--resume` to recognise finished
shards. Sizes come from the source files' sizes plus tar overhead; the JSON member is estimated,
so a shard can miss the target by a few KB, never by a whole sample.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import PackError
from .format import SPLITS, shard_name, shard_path
from .source import SourceSample

TAR_BLOCK = 512
# One ustar header per member plus the JSON record, whose exact size is known only when written.
JSON_ESTIMATE = 2048
DEFAULT_SHARD_SIZE = 1_000_000_000  # Hub guidance for WebDataset: ~1 GB shards.
DEFAULT_SEED = 1234

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str | int) -> int:
    """'500MB', '1GB', '1.5GiB' or a byte count → bytes (decimal units, as the Hub counts)."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(text)
        if not match:
            raise PackError(f"cannot read size {text!r}: use bytes or a unit, e.g. 500MB or 1GB")
        unit = (match.group(2) or "").lower().removesuffix("b")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise PackError(f"shard size must be positive, got {text!r}")
    return value


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

    @property
    def estimated_bytes(self) -> int:
        return sum(estimate_sample_bytes(s) for s in self.samples)


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

    def options(self) -> dict:
        """What the plan depends on besides the input: recorded in the manifest."""
        return {
            "shard_size": self.shard_size,
            "max_samples_per_shard": self.max_samples_per_shard,
            "seed": self.seed,
            "order": self.order,
        }


def _padded(size: int) -> int:
    return -(-size // TAR_BLOCK) * TAR_BLOCK


def estimate_sample_bytes(sample: SourceSample) -> int:
    return (
        3 * TAR_BLOCK
        + _padded(sample.audio_bytes)
        + _padded(sample.midi_bytes)
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
        for sample in order_split([s for s in samples if s.split == split], split, seed, order):
            size = estimate_sample_bytes(sample)
            full = current and (
                current_bytes + size > shard_size
                or (max_samples_per_shard is not None and len(current) >= max_samples_per_shard)
            )
            if full:
                shards.append(ShardPlan(split, _count(shards, split), tuple(current)))
                current, current_bytes = [], 0
            current.append(sample)
            current_bytes += size
        if current:
            shards.append(ShardPlan(split, _count(shards, split), tuple(current)))
    return PackPlan(tuple(shards), shard_size, max_samples_per_shard, seed, order)


def _count(shards: list[ShardPlan], split: str) -> int:
    return sum(1 for s in shards if s.split == split)
