"""`pack --no-sharding`: the original design's loose layout, for small datasets only.

Each sample becomes `audio/{split}/{key}.flac` and `midi/{split}/{key}.mid` (the group's MIDI,
copied per sample so every sample is self-contained), described by the same metadata as the
sharded layout with the shard and offset columns left null. The Hub counts files: beyond
100k files per repo or 10k per folder, uploads fail or crawl, so such a plan is refused here,
before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from .errors import PackError
from .format import (
    HUB_MAX_FILES,
    HUB_MAX_FILES_PER_FOLDER,
    SPLITS,
    loose_audio_path,
    loose_midi_path,
)
from .io import write_bytes_atomic
from .shards import flac_facts, read_media
from .source import SourceSample

# Files besides media: card, manifest, and per split metadata + 2 label tables + index.
FIXED_FILES = 2 + 4 * len(SPLITS)


def check_loose_limits(samples: tuple[SourceSample, ...]) -> None:
    """Refuse a loose layout the Hub cannot take, saying what to do instead."""
    per_split = {split: sum(1 for s in samples if s.split == split) for split in SPLITS}
    total = 2 * len(samples) + FIXED_FILES
    biggest = max(per_split.values(), default=0)
    if total > HUB_MAX_FILES or biggest > HUB_MAX_FILES_PER_FOLDER:
        raise PackError(
            f"--no-sharding would write {total:,} files, up to {biggest:,} in one folder; the "
            f"Hub allows {HUB_MAX_FILES:,} files per repo and {HUB_MAX_FILES_PER_FOLDER:,} per "
            "folder. Drop --no-sharding: shards hold the same files in a few hundred tars."
        )


def write_loose(
    samples: list[SourceSample], source_root: Path, out: Path,
    progress: Callable[[int, int], None],
) -> list[dict]:
    """Copy each sample's media into place atomically; return its metadata location row.

    A file already in place with the right size is kept, so a rerun with --resume continues.
    """
    rows = []
    for sample in samples:
        flac = read_media(source_root, sample.audio_path)
        midi = read_media(source_root, sample.midi_path)
        audio_rel = loose_audio_path(sample.split, sample.key)
        midi_rel = loose_midi_path(sample.split, sample.key)
        _place(out / audio_rel, flac)
        _place(out / midi_rel, midi)
        rows.append({
            "key": sample.key, "index_in_shard": None,
            "flac_offset": None, "flac_size": len(flac),
            "json_offset": None, "json_size": None,
            "mid_offset": None, "mid_size": len(midi),
            "flac_sha256": hashlib.sha256(flac).hexdigest(),
            **flac_facts(flac, source_root / PurePosixPath(sample.audio_path)),
            "shard": None, "shard_path": None,
            "audio_shard": None, "audio_filename": audio_rel,
            "midi_shard": None, "midi_filename": midi_rel,
        })
        progress(1, len(flac) + len(midi))
    return rows


def _place(final: Path, data: bytes) -> None:
    if not (final.is_file() and final.stat().st_size == len(data)):
        write_bytes_atomic(final, data)
