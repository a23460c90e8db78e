"""`pack --no-sharding`: the original design's loose layout, for small datasets only.

Each sample becomes `audio/{split}/{key}.flac` and `midi/{split}/{key}.mid` (the group's MIDI,
copied per sample so every sample is self-contained), described by the same metadata as the
sharded layout with the shard, offset and JSON columns left null. The Hub counts files: beyond
100k files per repo or 10k per folder, uploads fail or crawl, so such a plan is refused here,
before anything is written; so is a key too long for a file name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import PackError, listing
from ..format import (
    HUB_MAX_FILES,
    HUB_MAX_FILES_PER_FOLDER,
    LABEL_TABLES,
    SPLITS,
    loose_audio_path,
    loose_midi_path,
)
from ..io import write_bytes_atomic
from ..source import SourceSample
from .tar import Progress, read_media, stream_facts

# Files besides media: the card and the manifest, and per split the metadata, label tables and
# preview (at most: a split without samples has no preview).
FIXED_FILES = 2 + len(SPLITS) * (2 + len(LABEL_TABLES))
NAME_MAX = 255  # bytes in one file name on common file systems


def check_loose_limits(samples: Sequence[SourceSample]) -> None:
    """Refuse a loose layout the Hub or the file system cannot take, saying what to do."""
    per_split = {split: sum(1 for s in samples if s.split == split) for split in SPLITS}
    total = 2 * len(samples) + FIXED_FILES
    biggest = max(per_split.values(), default=0)
    if total > HUB_MAX_FILES or biggest > HUB_MAX_FILES_PER_FOLDER:
        raise PackError(
            f"--no-sharding would write {total:,} files, up to {biggest:,} in one folder; the "
            f"Hub allows {HUB_MAX_FILES:,} files per repo and {HUB_MAX_FILES_PER_FOLDER:,} per "
            "folder. Drop --no-sharding: shards hold the same files in a few hundred tars."
        )
    long = [s.key for s in samples if len(os.fsencode(f"{s.key}.flac")) > NAME_MAX]
    if long:
        raise PackError(f"--no-sharding cannot name a file after these keys (over {NAME_MAX} "
                        f"bytes):{listing(long)}\nDrop --no-sharding: shards take any key.")


def write_loose(samples: Sequence[SourceSample], source_root: Path, out: Path,
                progress: Progress) -> list[dict]:
    """Copy each sample's media into place atomically; return its metadata location row.

    A file already in place with these very bytes is kept, so a rerun with --resume
    continues; any other (damaged, or a source file changed since) is written again.
    """
    rows = []
    for sample in samples:
        flac = read_media(source_root, sample.audio_path, sample.audio_bytes,
                          sample.audio_mtime_ns)
        midi = read_media(source_root, sample.midi_path, sample.midi_bytes,
                          sample.midi_mtime_ns)
        audio_rel = loose_audio_path(sample.split, sample.key)
        midi_rel = loose_midi_path(sample.split, sample.key)
        place(out / audio_rel, flac)
        place(out / midi_rel, midi)
        rows.append({
            "key": sample.key, "index_in_shard": None,
            "flac_offset": None, "flac_size": len(flac),
            "json_offset": None, "json_size": None,
            "mid_offset": None, "mid_size": len(midi),
            "flac_sha256": hashlib.sha256(flac).hexdigest(),
            "mid_sha256": hashlib.sha256(midi).hexdigest(),
            "json_sha256": None,
            **stream_facts(sample),
            "shard": None, "shard_path": None,
            "audio_shard": None, "audio_filename": audio_rel,
            "midi_shard": None, "midi_filename": midi_rel,
        })
        progress(1, len(flac) + len(midi))
    return rows


def place(final: Path, data: bytes) -> None:
    if not (final.is_file() and final.stat().st_size == len(data)
            and final.read_bytes() == data):
        write_bytes_atomic(final, data)
