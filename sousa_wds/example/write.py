"""Write the example dataset folder: media, the four label Parquet files and the JSON files.

How it works:
- `make_example` checks the options, plans every sample (`plan.py`, pure), then writes into a
  `<out>.tmp-<pid>` sibling that is renamed into place at the end (`io.replace_durably`), so a
  crash never leaves a folder that looks like a complete dataset. Files inside that private
  folder are written plainly and made durable by one `os.sync()` before the rename: an fsync
  per file (`io.write_bytes_atomic`) cost ~10 ms each, 12 s for 1000 samples.
- Media: one FLAC per sample, one MIDI per augmentation group on the group's first row
  (`render.py`); `progress(1, bytes)` is called after each sample.
- Labels are written the way the generator's pandas → pyarrow writer leaves them: large_string
  strings, optional integers as double, the arrow null type for a column whose values are all
  null (aug_bit_depth, aug_sample_rate, and rudiment-specific columns such as buzz_count when
  no sample of that family is present), snappy compression, mode 0600. Stroke, measure and
  exercise rows are repeated for every sample of a group, in samples.parquet's order.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..errors import ExampleError
from ..format import EXERCISE_COLUMNS, MEASURE_COLUMNS, SAMPLE_COLUMNS, STROKE_COLUMNS
from ..io import replace_durably
from .plan import DEFAULT_AUGMENTATIONS, PRESETS, TIER_BINARY, Sample, plan_dataset
from .render import SAMPLE_RATE, flac_bytes, midi_bytes
from .rudiments import DEFAULT_RUDIMENTS, RUDIMENTS

MIN_DURATION_SEC = 0.25  # every pattern starts with a stroke by then (perform.LEAD_IN_MS)

# A fixed build path and time: the real report has both, but ours must not change between runs.
REPORT_BUILD_PATH = "/home/sousa/SOUSA/output/dataset"
REPORT_TIMESTAMP = "2025-01-15T12:00:00.000000"

Progress = Callable[[int, int], None]  # (samples done, bytes written), like pack's


@dataclass(frozen=True)
class ExampleSummary:
    """What make_example wrote; printed by the CLI."""

    path: Path
    num_samples: int
    num_groups: int
    num_profiles: int
    num_strokes: int
    audio_bytes: int
    total_bytes: int

    def __str__(self) -> str:
        return (f"{self.num_samples} samples ({self.num_groups} groups, {self.num_profiles} "
                f"profiles, {self.audio_bytes / 1e6:.1f} MB of FLAC) to {self.path}")


def _input_type(canonical: pa.DataType, values: pd.Series) -> pa.DataType:
    """The type pandas → pyarrow gives the generator's column: null if all null, else large
    strings and, for integers with nulls, double."""
    if values.isna().all():
        return pa.null()
    if pa.types.is_string(canonical):
        return pa.large_string()
    if pa.types.is_integer(canonical) and values.isna().any():
        return pa.float64()
    return canonical


def _write_parquet(path: Path, columns: dict[str, object],
                   canonical: dict[str, pa.DataType]) -> None:
    frame = pd.DataFrame({name: columns[name] for name in canonical})
    fields = []
    for name, typ in canonical.items():
        arrow = _input_type(typ, frame[name])
        if pa.types.is_null(arrow):
            frame[name] = pd.Series([None] * len(frame), dtype=object)
        fields.append(pa.field(name, arrow))
    frame.to_parquet(path, engine="pyarrow", compression="snappy", schema=pa.schema(fields))
    path.chmod(0o600)


def _sample_row(s: Sample) -> dict[str, object]:
    g, p = s.group, s.preset
    return {
        "sample_id": s.sample_id, "profile_id": g.profile.profile_id,
        "rudiment_slug": g.rudiment, "tempo_bpm": g.tempo, "duration_sec": g.duration_sec,
        "num_cycles": g.num_cycles, "skill_tier": g.profile.tier,
        "skill_tier_binary": TIER_BINARY[g.profile.tier],
        "dominant_hand": g.profile.dominant_hand, "midi_path": s.midi_path,
        "audio_path": s.audio_path, "num_strokes": len(g.strokes["index"]),
        "num_measures": len(g.measures["index"]), "soundfont": s.soundfont.name,
        "augmentation_preset": p.name, "augmentation_group_id": g.group_id,
        "aug_soundfont": s.soundfont.name, "aug_room_type": p.room_type,
        "aug_room_wet_dry": p.room_wet_dry, "aug_mic_distance": p.mic_distance,
        "aug_mic_type": p.mic_type, "aug_compression_ratio": p.compression_ratio,
        "aug_noise_level_db": p.noise_level_db, "aug_bit_depth": None,
        "aug_sample_rate": None,
    }


def _repeated(planned: list[Sample], table: str) -> dict[str, object]:
    """A group's stroke or measure rows, repeated under each of its samples' ids."""
    parts = [getattr(s.group, table) for s in planned]
    cols: dict[str, object] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    counts = [len(p["index"]) for p in parts]
    cols["sample_id"] = np.repeat([s.sample_id for s in planned], counts)
    return cols


def _write_labels(labels: Path, planned: list[Sample]) -> int:
    """The four label files, rows in sample order; returns the number of stroke rows."""
    rows = [_sample_row(s) for s in planned]
    samples = {k: [r[k] for r in rows] for k in SAMPLE_COLUMNS}
    exercises = {k: [s.group.scores[k] for s in planned] for k in EXERCISE_COLUMNS
                 if k != "sample_id"} | {"sample_id": [s.sample_id for s in planned]}
    strokes = _repeated(planned, "strokes")
    _write_parquet(labels / "samples.parquet", samples, SAMPLE_COLUMNS)
    _write_parquet(labels / "exercises.parquet", exercises, EXERCISE_COLUMNS)
    _write_parquet(labels / "measures.parquet", _repeated(planned, "measures"), MEASURE_COLUMNS)
    _write_parquet(labels / "strokes.parquet", strokes, STROKE_COLUMNS)
    return len(strokes["sample_id"])


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_media(root: Path, planned: list[Sample], seed: int, channels: int,
                 progress: Progress | None) -> int:
    """Every FLAC and MIDI file; returns the FLAC bytes."""
    audio_bytes = 0
    for s in planned:
        flac = flac_bytes(s, seed, channels)
        _write_file(root / s.audio_path, flac)
        audio_bytes += len(flac)
        if s.midi_path is not None:
            _write_file(root / s.midi_path, midi_bytes(s.group))
        if progress is not None:
            progress(1, len(flac))
    return audio_bytes


def _write(root: Path, planned: list[Sample], splits: dict, seed: int, channels: int,
           progress: Progress | None) -> tuple[int, int]:
    """Everything under root; returns (FLAC bytes, stroke rows)."""
    (root / "labels").mkdir(parents=True)
    audio_bytes = _write_media(root, planned, seed, channels, progress)
    num_strokes = _write_labels(root / "labels", planned)
    ids = [s.sample_id for s in planned]
    _write_json(root / "index.json", {"num_samples": len(ids), "sample_ids": ids,
                                      "config": {"audio_format": "flac",
                                                 "sample_rate": SAMPLE_RATE}})
    _write_json(root / "splits.json", splits)
    _write_json(root / "validation_report.json", {
        "dataset_path": REPORT_BUILD_PATH,
        "generated_at": REPORT_TIMESTAMP,
        "num_samples": len(ids),
        "checks": {"audio_files_exist": True, "midi_files_exist": True,
                   "labels_consistent": True, "splits_disjoint": True},
        "errors": [],
        "passed": True,
    })
    return audio_bytes, num_strokes


def _check_options(samples: int, duration_sec: tuple[float, float], channels: int,
                   rudiments: tuple[str, ...], augmentations: int) -> None:
    low, high = duration_sec
    unknown = [r for r in rudiments if r not in RUDIMENTS]
    problems = [
        (samples < 1, f"samples must be at least 1, got {samples}"),
        (not MIN_DURATION_SEC <= low <= high,
         f"duration_sec must be (min, max) with {MIN_DURATION_SEC} <= min <= max, got "
         f"{duration_sec}"),
        (channels not in (1, 2), f"channels must be 1 or 2, got {channels}"),
        (not rudiments, "rudiments must name at least one rudiment"),
        (bool(unknown), f"unknown rudiments {unknown}; known: {', '.join(RUDIMENTS)}"),
        (not 1 <= augmentations <= len(PRESETS),
         f"augmentations must be 1..{len(PRESETS)}, got {augmentations}"),
    ]
    for bad, message in problems:
        if bad:
            raise ExampleError(message)


def make_example(
    out: str | os.PathLike[str],
    *,
    samples: int = 60,
    seed: int = 0,
    duration_sec: tuple[float, float] = (1.0, 2.0),
    channels: int = 2,
    flat: bool = False,
    progress: Progress | None = None,
    rudiments: tuple[str, ...] = DEFAULT_RUDIMENTS,
    augmentations: int = DEFAULT_AUGMENTATIONS,
) -> ExampleSummary:
    """Write a SOUSA dataset of exactly `samples` samples to `out` (absent or empty).

    `duration_sec` bounds each performance before the 0.5 s tail; `flat` writes the older
    `audio/<id>.flac` layout; `rudiments` are cycled over the groups; `augmentations` presets
    per group (the generator uses 5; the last group is cut short to hit `samples`);
    `progress(samples, bytes)` is called as samples are written. Same arguments, same bytes.
    """
    rudiments = tuple(rudiments)
    _check_options(samples, duration_sec, channels, rudiments, augmentations)
    root = Path(os.path.abspath(out))  # "." or "x/" still name a sibling for the temp folder
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ExampleError(f"{root} exists and is not an empty folder; choose a new path or "
                           f"remove it first")
    planned, splits = plan_dataset(samples, seed, duration_sec, rudiments, augmentations, flat)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    try:
        audio_bytes, num_strokes = _write(tmp, planned, splits, seed, channels, progress)
        os.sync()
        replace_durably(tmp, root)  # replaces an empty folder: complete or not there at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return ExampleSummary(
        path=root,
        num_samples=len(planned),
        num_groups=len({s.group.group_id for s in planned}),
        num_profiles=len({s.group.profile.profile_id for s in planned}),
        num_strokes=num_strokes,
        audio_bytes=audio_bytes,
        total_bytes=total,
    )
