"""Column schemas of the sousa-wds format and the JSON encoding of {key}.json.

Input files vary (large_string under pandas 3, string under pandas 2, the arrow null type for
columns that happen to be all null); output always uses the canonical types here, so every split
and every release has one schema.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from ..arrays import null_scalar

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
    "mid_sha256": pa.string(),
    "json_sha256": pa.string(),
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


def column_mismatches(schema: pa.Schema, columns: Mapping[str, pa.DataType]
                      ) -> tuple[list[str], list[str]]:
    """The `columns` a file's `schema` lacks, and those whose type does not convert to the
    canonical one (`castable`): what every reader of an input table checks off its footer."""
    absent = [name for name in columns if name not in schema.names]
    wrong = [name for name, typ in columns.items()
             if name in schema.names and not castable(schema.field(name).type, typ)]
    return absent, wrong


def conform(data: pa.Table | pa.RecordBatch, columns: dict[str, pa.DataType]):
    """Select `columns` in order, cast to their canonical types, NaN and ±Infinity to null.

    JSON has no NaN or Infinity (`encode_record`), so the Parquet files hold null there too: a
    value reads the same from `{key}.json` and from the metadata.
    """
    import pyarrow.compute as pc  # here, not at the top: verify never needs it (~0.09 s)

    arrays = []
    for name, typ in columns.items():
        col = data.column(name)
        if col.type != typ:
            col = col.cast(typ)
        # Rebuilt only when it holds NaN or Infinity: label tables stream ~45M rows through
        # here, and each new column is memory handed back to the OS a moment later.
        if pa.types.is_floating(typ) and not pc.all(pc.is_finite(col)).as_py():
            col = pc.if_else(pc.is_finite(col), col, null_scalar(typ))
        arrays.append(col)
    if isinstance(data, pa.RecordBatch):
        return pa.RecordBatch.from_arrays(arrays, names=list(columns))
    return pa.table(arrays, names=list(columns))


# One encoder for every record: `json.dumps` with options builds a new one per call (20% of
# the encoding time of a ~40-field record).
_RECORD_ENCODER = json.JSONEncoder(sort_keys=True, allow_nan=False, separators=(",", ":"),
                                   ensure_ascii=False)


def encode_record(record: Mapping[str, Any]) -> bytes:
    """The bytes of {key}.json: strict JSON, keys sorted, compact, UTF-8.

    Records come from tables made by `conform`, where NaN and Infinity are already null: one
    that is not raises here rather than being written as invalid JSON.
    """
    return _RECORD_ENCODER.encode(record).encode("utf-8")

__all__ = [
    "SAMPLE_COLUMNS",
    "EXERCISE_COLUMNS",
    "MEASURE_COLUMNS",
    "STROKE_COLUMNS",
    "LABEL_TABLE_COLUMNS",
    "SOURCE_ONLY_COLUMNS",
    "LABEL_COLUMNS",
    "LOCATION_COLUMNS",
    "METADATA_SCHEMA",
    "castable",
    "column_mismatches",
    "conform",
    "encode_record",
]
