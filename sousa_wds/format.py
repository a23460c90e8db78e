"""The rules of the sousa-wds format, defined once.

Everything that names a file, a tar member, a column or a split imports it from here, and
`docs/format.md` describes the same rules for users. Changing anything here is a format change:
bump FORMAT_VERSION and say so in the docs.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

FORMAT_VERSION = 1

# Output split names, in the order every listing uses; the generator's names map onto them.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
SOURCE_SPLIT_FIELDS: dict[str, str] = {
    "train": "train_profile_ids",
    "validation": "val_profile_ids",
    "test": "test_profile_ids",
}

# One WebDataset key group per sample: {key}.flac, {key}.mid, {key}.json.
# TarWriter writes members sorted by extension, so this is also their order inside the tar.
MEMBERS: tuple[str, ...] = ("flac", "json", "mid")

# Fixed tar header fields: an integer mtime keeps tarfile from adding a PAX header per member
# (a float mtime does), and fixed owner/mode make the bytes independent of who packs.
TAR_MTIME = 0
TAR_USER = "sousa"
TAR_GROUP = "sousa"
TAR_MODE = 0o444
TAR_BLOCK = 512  # tar stores everything in 512-byte blocks


def tar_padded(size: int) -> int:
    """Bytes a member of `size` bytes of data occupies in a tar, padding included."""
    return -(-size // TAR_BLOCK) * TAR_BLOCK


MANIFEST = "manifest.json"
# Top-level folders a pack writes and readers glob (the card's data_files, the loader): a file
# there that the manifest does not list would be read as data.
FORMAT_FOLDERS: tuple[str, ...] = ("data", "metadata", "labels", "index", "audio", "midi")
CARD = "README.md"
LABEL_TABLES: tuple[str, ...] = ("strokes", "measures")

# Hugging Face Hub limits (its documented guidance): beyond these, commits fail or crawl.
HUB_MAX_FILES = 100_000
HUB_MAX_FILES_PER_FOLDER = 10_000
HUB_MAX_FILE_BYTES = 50 * 10**9

# Keys are SOUSA sample ids: ASCII letters, digits, '_' and '-'. Anything else either breaks
# WebDataset's name splitting ('.', '/') or tar member names (NUL, control characters), or
# makes URLs and shell use fragile.
_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BAD_KEY_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.tar"


def shard_path(split: str, index: int) -> str:
    return f"data/{shard_name(split, index)}"


def metadata_path(split: str) -> str:
    return f"metadata/{split}.parquet"


def labels_path(table: str, split: str) -> str:
    return f"labels/{table}/{split}.parquet"


def index_path(split: str) -> str:
    return f"index/{split}.json"


def loose_audio_path(split: str, key: str) -> str:
    return f"audio/{split}/{key}.flac"


def loose_midi_path(split: str, key: str) -> str:
    return f"midi/{split}/{key}.mid"


def key_problem(key: object) -> str | None:
    """Why `key` cannot be a WebDataset key, or None when it can.

    WebDataset splits a member name at the first dot of its basename, so a dot, a slash or
    whitespace would silently produce a different sample on read; the allowed set is the
    one SOUSA ids use.
    """
    if not isinstance(key, str) or key == "":
        return "is empty"
    if _KEY.fullmatch(key):
        return None
    bad = _BAD_KEY_CHAR.search(key)
    assert bad is not None
    return f"contains {bad.group()!r}"


# --- Column schemas --------------------------------------------------------------------------
# The canonical output type of every input label column. Input files vary (large_string under
# pandas 3, string under pandas 2, the arrow null type for columns that happen to be all null);
# output always uses these, so every split and every release has one schema.

SAMPLE_COLUMNS: dict[str, pa.DataType] = {
    "sample_id": pa.string(),
    "profile_id": pa.string(),
    "rudiment_slug": pa.string(),
    "tempo_bpm": pa.int64(),
    "duration_sec": pa.float64(),
    "num_cycles": pa.int64(),
    "skill_tier": pa.string(),
    "skill_tier_binary": pa.string(),
    "dominant_hand": pa.string(),
    "midi_path": pa.string(),
    "audio_path": pa.string(),
    "num_strokes": pa.int64(),
    "num_measures": pa.int64(),
    "soundfont": pa.string(),
    "augmentation_preset": pa.string(),
    "augmentation_group_id": pa.string(),
    "aug_soundfont": pa.string(),
    "aug_room_type": pa.string(),
    "aug_room_wet_dry": pa.float64(),
    "aug_mic_distance": pa.float64(),
    "aug_mic_type": pa.string(),
    "aug_compression_ratio": pa.float64(),
    "aug_noise_level_db": pa.float64(),
    "aug_bit_depth": pa.int64(),
    "aug_sample_rate": pa.int64(),
}

EXERCISE_COLUMNS: dict[str, pa.DataType] = {
    name: pa.float64()
    for name in (
        "timing_accuracy",
        "timing_consistency",
        "tempo_stability",
        "subdivision_evenness",
        "velocity_control",
        "accent_differentiation",
        "accent_accuracy",
        "hand_balance",
        "weak_hand_index",
        "flam_quality",
        "diddle_quality",
        "roll_sustain",
        "groove_feel_proxy",
        "overall_score",
        "tier_confidence",
    )
} | {"sample_id": pa.string()}

MEASURE_COLUMNS: dict[str, pa.DataType] = {
    "index": pa.int64(),
    "stroke_start": pa.int64(),
    "stroke_end": pa.int64(),
    "timing_mean_error_ms": pa.float64(),
    "timing_std_ms": pa.float64(),
    "timing_max_error_ms": pa.float64(),
    "velocity_mean": pa.float64(),
    "velocity_std": pa.float64(),
    "velocity_consistency": pa.float64(),
    "lr_velocity_ratio": pa.float64(),
    "lr_timing_diff_ms": pa.float64(),
    "sample_id": pa.string(),
}

STROKE_COLUMNS: dict[str, pa.DataType] = {
    "index": pa.int64(),
    "hand": pa.string(),
    "stroke_type": pa.string(),
    "intended_time_ms": pa.float64(),
    "actual_time_ms": pa.float64(),
    "timing_error_ms": pa.float64(),
    "intended_velocity": pa.int64(),
    "actual_velocity": pa.int64(),
    "velocity_error": pa.int64(),
    "is_grace_note": pa.bool_(),
    "is_accent": pa.bool_(),
    "diddle_position": pa.float64(),
    "flam_spacing_ms": pa.float64(),
    "parent_stroke_index": pa.float64(),
    "buzz_count": pa.float64(),
    "sample_id": pa.string(),
}

LABEL_TABLE_COLUMNS: dict[str, dict[str, pa.DataType]] = {
    "strokes": STROKE_COLUMNS,
    "measures": MEASURE_COLUMNS,
}

# Source-only columns: paths into the generator's folder mean nothing after packing.
SOURCE_ONLY_COLUMNS: tuple[str, ...] = ("audio_path", "midi_path")

# The label record: every samples + exercises column but the source-only ones. It is the
# content of {key}.json and the first columns of metadata/{split}.parquet.
LABEL_COLUMNS: dict[str, pa.DataType] = {
    name: typ for name, typ in SAMPLE_COLUMNS.items() if name not in SOURCE_ONLY_COLUMNS
} | {name: typ for name, typ in EXERCISE_COLUMNS.items() if name != "sample_id"}

# Columns that pack adds to locate each sample; offsets are of member *data* in the shard.
LOCATION_COLUMNS: dict[str, pa.DataType] = {
    "split": pa.string(),
    "key": pa.string(),
    "shard": pa.string(),
    "shard_path": pa.string(),
    "index_in_shard": pa.int64(),
    "flac_offset": pa.int64(),
    "flac_size": pa.int64(),
    "mid_offset": pa.int64(),
    "mid_size": pa.int64(),
    "json_offset": pa.int64(),
    "json_size": pa.int64(),
    "flac_sha256": pa.string(),
    "sample_rate": pa.int64(),
    "channels": pa.int64(),
    "num_frames": pa.int64(),
    "audio_shard": pa.string(),
    "audio_filename": pa.string(),
    "midi_shard": pa.string(),
    "midi_filename": pa.string(),
}

METADATA_SCHEMA = pa.schema(
    [pa.field(n, t) for n, t in LABEL_COLUMNS.items()]
    + [pa.field(n, t) for n, t in LOCATION_COLUMNS.items()]
)


def castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether input columns of type `source` convert to the canonical `target` type.

    The generator's files vary in the ways SOUSA_INPUT.md lists (string flavours, the null
    type, optional integers stored as double); anything else is a real schema problem.
    """
    if source == target or pa.types.is_null(source):
        return True
    if pa.types.is_string(target):
        return pa.types.is_string(source) or pa.types.is_large_string(source)
    if pa.types.is_integer(target) or pa.types.is_floating(target):
        return pa.types.is_integer(source) or pa.types.is_floating(source)
    return False


def conform(data: pa.Table | pa.RecordBatch, columns: dict[str, pa.DataType]):
    """Select `columns` in order, cast to their canonical types, and turn float NaN into null."""
    arrays = []
    for name, typ in columns.items():
        col = data.column(name)
        if col.type != typ:
            col = col.cast(typ)
        if pa.types.is_floating(typ):
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, typ), col)
        arrays.append(col)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, names=list(columns))
    return pa.table(arrays, names=list(columns))


def json_safe(value: Any) -> Any:
    """Nulls stay null and NaN/Infinity become null, so records are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode_record(record: Mapping[str, Any]) -> bytes:
    """The bytes of {key}.json: strict JSON, keys sorted, compact, UTF-8."""
    clean = {k: json_safe(v) for k, v in record.items()}
    return json.dumps(clean, sort_keys=True, allow_nan=False, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
