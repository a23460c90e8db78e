"""Packing: a validated SOUSA folder in, WebDataset shards + Parquet + card + manifest out.

How it works (one module, one job, in flow order):
- `plan`: pure; orders each split (seeded shuffle) and cuts it into shards by size/count.
- `tar`: writes one shard with our own member loop; offsets and hashes recorded while writing.
- `loose`: the `--no-sharding` layout (loose FLAC/MIDI files) and its Hub-limit guard.
- `tables`: metadata and stroke/measure label Parquet files per split.
- `indexes`: the wids shard index per split and `manifest.json`.
- `state`: `OUT/.sousa-wds-pack/` (what resume checks and keeps) and the lock on OUT.
- `run`: `pack()` itself: folder states, worker pool, progress, interruption.
"""

from importlib import import_module
from typing import Any

from ..errors import PackInterrupted, ResumeMismatch

# Public names and the module holding each; imported on first use, so the CLI can read a
# default from `plan` without loading the writers.
_EXPORTS = {
    "DEFAULT_SEED": "plan",
    "DEFAULT_SHARD_SIZE": "plan",
    "PackPlan": "plan",
    "ShardPlan": "plan",
    "plan_shards": "plan",
    "PackProgress": "run",
    "PackSummary": "run",
    "ProgressCallback": "run",
    "pack": "run",
    "LOCK_FILE": "state",
    "STATE_DIR": "state",
    "PackState": "state",
}
__all__ = [*_EXPORTS, "PackInterrupted", "ResumeMismatch"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
