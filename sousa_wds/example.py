"""Write a small, realistic SOUSA dataset (what sousa-wds packs) for tests, demos and benchmarks.

How it works:
- **Plan** (pure, seeded): profiles get a random UUID4, a skill tier and a split; each
  augmentation group (profile, rudiment, tempo) gets one performance, made by playing the
  rudiment's sticking pattern on a grid with the tier's timing and velocity errors. Stroke,
  measure and exercise labels are computed from that performance, the way the generator does.
- **Render**: every sample of a group renders the *same* strokes (the ones in strokes.parquet
  and the group's MIDI) with its own soundfont colour, room, microphone and noise floor, so a
  group's five files differ like the generator's augmentations do.
- **Write**: into a `<out>.tmp-<pid>` sibling that is renamed into place at the end, so a crash
  never leaves a folder that looks like a complete dataset.

Why it is realistic, quirk by quirk (the generator's real output): `<tier3><NNN>_<slug>_<tempo>bpm_
<soundfont8>_<preset>` ids with underscores inside the slug; splits only through splits.json; one
MIDI per group, on the group's first row, whose preset is random (not always clean_studio);
labels repeated per sample of a group; Parquet written by pandas → pyarrow with large_string
strings, optional integers as double, the arrow null type for columns that are all null
(aug_bit_depth, aug_sample_rate, and rudiment-specific scores when no such rudiment is present);
label files mode 0600; stereo PCM_24 FLAC peaking at -1 dBFS with a 0.5 s tail. The audio is a
snare-like hit per stroke (decaying noise burst + damped drum-head modes) through a synthetic
room over a coloured noise floor, so FLAC compresses it like recorded drums (60-65% of raw
PCM), not like silence or white noise.

Rendering is vectorised per sample (numpy FFT convolution; Python loops only over strokes), and
each sample's audio has its own seed, so output is byte-identical for a seed.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
import pandas as pd
import pyarrow as pa
import soundfile as sf
from tqdm import tqdm

from .errors import SousaWdsError
from .format import EXERCISE_COLUMNS, MEASURE_COLUMNS, SAMPLE_COLUMNS, STROKE_COLUMNS

SAMPLE_RATE = 44100
TAIL_SEC = 0.5  # the generator renders this much decay after the last stroke
PEAK_DBFS = -1.0  # the generator normalises every file to this peak
TICKS_PER_BEAT = 480
SNARE_NOTE = 38  # General MIDI acoustic snare
DRUM_CHANNEL = 9  # General MIDI percussion channel (10, zero-based 9)
NOTE_TICKS = 60  # a drum hit's note_off comes soon after note_on; samplers ignore the length

LEAD_IN_MS = 150.0  # first beat; leaves room for drag grace notes played early by a beginner
MIN_DURATION_SEC = 0.25  # every pattern starts with a stroke, so this always holds one
IDEAL_GRACE_SPACING_MS = 30.0  # the generator scores grace notes against this spacing
GRACE_OFFSETS_MS = {"f": (30.0,), "g": (60.0, 30.0)}  # flam: one grace; drag: a diddle
TEMPOS = tuple(range(60, 181, 10))
GROUPS_PER_PROFILE = 2  # small datasets still get several profiles, so every split is filled
SPLIT_RATIOS = (0.70, 0.15, 0.15)  # the generator's train/val/test ratios
DEFAULT_AUGMENTATIONS = 5

HIT_FRAMES = 15360  # one rendered hit, 0.35 s (2^10*3*5 keeps its FFT fast); the room adds the rest
TEMPLATES_PER_SAMPLE = 6  # hits cycle through a few variants instead of one frozen sound
WIRE_CUTOFF_HZ = 4000.0  # snare-wire noise rolls off above this (4th order)
# Noise floor levels, tuned with WIRE_CUTOFF_HZ so FLAC files are 60-65% of raw PCM, near the
# generator's: the floor sits this far below the preset's noise level...
NOISE_FLOOR_HEADROOM_DB = 36.0
QUIET_FLOOR_DBFS = -84.0  # ...and presets without degradation still have mic/preamp noise

# A fixed build path and time: the real report has both, but ours must not change between runs.
REPORT_BUILD_PATH = "/home/sousa/SOUSA/output/dataset"
REPORT_TIMESTAMP = "2025-01-15T12:00:00.000000"

TIERS = ("beginner", "intermediate", "advanced", "professional")
TIER_CODES = {"beginner": "beg", "intermediate": "int", "advanced": "adv", "professional": "pro"}
TIER_BINARY = {"beginner": "novice", "intermediate": "novice", "advanced": "skilled",
               "professional": "skilled"}
TIMING_SIGMA_MS = {"beginner": 18.0, "intermediate": 11.0, "advanced": 6.0, "professional": 3.0}
VELOCITY_SIGMA = {"beginner": 14.0, "intermediate": 9.0, "advanced": 6.0, "professional": 3.0}
INTENDED_VELOCITY = {"accent": 115, "tap": 80, "diddle": 80, "grace": 45, "buzz": 72}

# (name in the generator, head tone Hz, tone decay s, snare-wire decay s): a soundfont's colour.
SOUNDFONTS = (
    ("FluidR3_GM", 196.0, 0.09, 0.045),
    ("GeneralUser_GS", 228.0, 0.07, 0.060),
    ("MuseScore_General", 181.0, 0.11, 0.035),
)


@dataclass(frozen=True)
class Preset:
    """One of the generator's augmentation presets: its recorded parameters and how it sounds."""

    name: str
    room_type: str
    room_wet_dry: float
    mic_type: str
    mic_distance: float
    compression_ratio: float | None
    noise_level_db: float | None
    rt60_sec: float
    lowpass_hz: float


# The generator's five default presets with its parameters (None = stage disabled there).
PRESETS = (
    Preset("clean_studio", "studio", 0.2, "condenser", 0.4, 3.0, None, 0.3, 18000.0),
    Preset("practice_room", "practice_room", 0.15, "dynamic", 0.5, 4.0, -45.0, 0.4, 16000.0),
    Preset("gym", "gym", 0.35, "dynamic", 2.0, 4.0, -40.0, 1.0, 14000.0),
    Preset("garage", "garage", 0.3, "dynamic", 0.8, 4.0, -35.0, 0.7, 15000.0),
    Preset("marching_field", "outdoor", 0.05, "dynamic", 5.0, None, -35.0, 0.15, 10000.0),
)

# The 40 PAS rudiments with the generator's category and a sticking pattern on a grid of
# (slots per beat, tokens). Token = one grid slot: "R"/"L" tap, ">" suffix accent, "." rest,
# "d" suffix diddle stroke (consecutive ones by one hand number 1, 2, ...), "f"/"g" prefix
# flam/drag (grace notes by the other hand just before), "z" prefix buzz stroke.
RUDIMENTS: dict[str, tuple[str, int, str]] = {
    "single_stroke_roll": ("roll", 4, "R L R L R L R L"),
    "single_stroke_four": ("roll", 3, "R L R L> . . L R L R> . ."),
    "single_stroke_seven": ("roll", 6, "R L R L R L R> . . . . ."),
    "multiple_bounce_roll": ("roll", 4, "zR zL zR zL zR zL zR zL"),
    "triple_stroke_roll": ("roll", 3, "Rd Rd Rd Ld Ld Ld"),
    "double_stroke_open_roll": ("roll", 4, "Rd Rd Ld Ld Rd Rd Ld Ld"),
    "five_stroke_roll": ("roll", 4, "Rd Rd Ld Ld R> . . . Ld Ld Rd Rd L> . . ."),
    "six_stroke_roll": ("roll", 4, "R> Ld Ld Rd Rd L> . ."),
    "seven_stroke_roll": ("roll", 6, "Rd Rd Ld Ld Rd Rd L> . . . . ."),
    "nine_stroke_roll": ("roll", 4, "Rd Rd Ld Ld Rd Rd Ld Ld R> . . . . . . ."),
    "ten_stroke_roll": ("roll", 4, "Rd Rd Ld Ld Rd Rd Ld Ld R> L> . . . . . ."),
    "eleven_stroke_roll": ("roll", 4, "Rd Rd Ld Ld Rd Rd Ld Ld Rd Rd L> . . . . ."),
    "thirteen_stroke_roll": ("roll", 4, "Rd Rd Ld Ld Rd Rd Ld Ld Rd Rd Ld Ld R> . . ."),
    "fifteen_stroke_roll": ("roll", 4, "Rd Rd Ld Ld Rd Rd Ld Ld Rd Rd Ld Ld Rd Rd L> ."),
    "seventeen_stroke_roll": (
        "roll", 4, "Rd Rd Ld Ld Rd Rd Ld Ld Rd Rd Ld Ld Rd Rd Ld Ld R> . . ."),
    "single_paradiddle": ("diddle", 4, "R> L Rd Rd L> R Ld Ld"),
    "double_paradiddle": ("diddle", 6, "R> L R L Rd Rd L> R L R Ld Ld"),
    "triple_paradiddle": ("diddle", 4, "R> L R L R L Rd Rd L> R L R L R Ld Ld"),
    "paradiddle_diddle": ("diddle", 6, "R> L Rd Rd Ld Ld R> L Rd Rd Ld Ld"),
    "flam": ("flam", 1, "fR fL"),
    "flam_accent": ("flam", 3, "fR> L R fL> R L"),
    "flam_tap": ("flam", 4, "fR> R fL> L"),
    "flamacue": ("flam", 4, "fR L> R L fR . . ."),
    "flam_paradiddle": ("flam", 4, "fR> L Rd Rd fL> R Ld Ld"),
    "single_flammed_mill": ("flam", 4, "fR> R L R fL> L R L"),
    "flam_paradiddle_diddle": ("flam", 6, "fR> L Rd Rd Ld Ld fL> R Ld Ld Rd Rd"),
    "pataflafla": ("flam", 4, "fR L R fL fR L R fL"),
    "swiss_army_triplet": ("flam", 3, "fR R L fR R L"),
    "inverted_flam_tap": ("flam", 4, "fR L fL R"),
    "flam_drag": ("flam", 3, "fR> gL R fL> gR L"),
    "drag": ("drag", 1, "gR gL"),
    "single_drag_tap": ("drag", 2, "gR R> gL L>"),
    "double_drag_tap": ("drag", 4, "gR gR R> . gL gL L> ."),
    "lesson_25": ("drag", 4, "gR L R> . gL R L> ."),
    "single_dragadiddle": ("drag", 4, "R> gR L R L> gL R L"),
    "drag_paradiddle_1": ("drag", 6, "R> gL R L Rd Rd L> gR L R Ld Ld"),
    "drag_paradiddle_2": ("drag", 4, "R> gL R> gL R L Rd Rd L> gR L> gR L R Ld Ld"),
    "single_ratamacue": ("drag", 4, "gR L R L> gL R L R>"),
    "double_ratamacue": ("drag", 3, "gR gR L R L> . gL gL R L R> ."),
    "triple_ratamacue": ("drag", 6, "gR gR gR L R L> gL gL gL R L R>"),
}

# Cycled through by the default dataset. The first three groups already cover every family
# and every rudiment-specific column (diddle_position, flam_spacing_ms, buzz_count, roll_sustain,
# ...), so even an 11-sample example has them as double columns with real nulls.
DEFAULT_RUDIMENTS = (
    "single_paradiddle", "flam_tap", "multiple_bounce_roll", "double_stroke_open_roll",
    "single_drag_tap", "five_stroke_roll", "flam", "single_stroke_four", "double_paradiddle",
    "flamacue", "single_stroke_roll", "lesson_25",
)


class ExampleError(SousaWdsError, ValueError):
    """The example cannot be written as asked (output folder in use, bad option)."""


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


# --- Plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profile:
    profile_id: str
    number: int
    tier: str
    dominant_hand: str


@dataclass(frozen=True)
class _Note:
    """One stroke of a pattern cycle; graces point at their primary by position in the cycle."""

    slot: int
    grace_offset_ms: float
    hand: str
    stroke_type: str
    diddle_position: int | None
    parent: int | None


@dataclass(frozen=True)
class _Group:
    """One performance (profile, rudiment, tempo) and its labels, shared by its samples."""

    profile: _Profile
    rudiment: str
    tempo: int
    duration_sec: float
    num_cycles: int
    strokes: dict[str, np.ndarray]
    measures: dict[str, np.ndarray]
    scores: dict[str, float | None]
    presets: tuple[Preset, ...]

    @property
    def group_id(self) -> str:
        return f"{self.profile.profile_id[:8]}_{self.rudiment}_{self.tempo}"


@dataclass(frozen=True)
class _Sample:
    number: int
    sample_id: str
    group: _Group
    preset: Preset
    soundfont: tuple[str, float, float, float]
    audio_path: str
    midi_path: str | None


def _parse_pattern(pattern: str) -> list[_Note]:
    """The strokes of one cycle, in time order (grace notes before their primary)."""
    notes: list[_Note] = []
    diddle_hand, diddle_count = "", 0
    for slot, token in enumerate(pattern.split()):
        if token == ".":
            diddle_hand, diddle_count = "", 0
            continue
        prefix = token[0] if token[0] in "fgz" else ""
        body = token[len(prefix):]
        hand, accent, diddle = body[0], body.endswith(">"), body.endswith("d")
        if hand not in "RL" or body[1:] not in ("", ">", "d"):
            raise ValueError(f"bad pattern token {token!r}")
        if diddle:
            diddle_count = diddle_count + 1 if hand == diddle_hand else 1
            diddle_hand = hand
        else:
            diddle_hand, diddle_count = "", 0
        other = "L" if hand == "R" else "R"
        primary = len(notes) + len(GRACE_OFFSETS_MS.get(prefix, ()))
        for offset in GRACE_OFFSETS_MS.get(prefix, ()):
            notes.append(_Note(slot, offset, other, "grace", None, primary))
        kind = ("accent" if accent else "diddle" if diddle else "buzz" if prefix == "z"
                else "tap")
        notes.append(_Note(slot, 0.0, hand, kind, diddle_count if diddle else None, None))
    return notes


def _perform(rudiment: str, tempo: int, duration_sec: float, profile: _Profile,
             rng: np.random.Generator) -> tuple[int, dict[str, np.ndarray]]:
    """Play the rudiment for duration_sec with the profile's errors: (num_cycles, strokes)."""
    _, per_beat, pattern = RUDIMENTS[rudiment]
    cycle = _parse_pattern(pattern)
    slot_ms = 60000.0 / tempo / per_beat
    cycle_slots = len(pattern.split())
    end_ms = duration_sec * 1000.0
    notes: list[tuple[float, _Note, int]] = []  # (intended time, note, index of its cycle start)
    num_cycles = 0
    while LEAD_IN_MS + num_cycles * cycle_slots * slot_ms < end_ms:
        base = len(notes)
        for note in cycle:
            t = LEAD_IN_MS + (num_cycles * cycle_slots + note.slot) * slot_ms
            if t < end_ms:
                notes.append((t - note.grace_offset_ms, note, base))
        num_cycles += 1

    n = len(notes)
    sigma = TIMING_SIGMA_MS[profile.tier]
    weak = "L" if profile.dominant_hand == "right" else "R"
    hands = np.array([note.hand for _, note, _ in notes])
    kinds = np.array([note.stroke_type for _, note, _ in notes])
    intended = np.array([t for t, _, _ in notes])
    hand_sigma = np.where(hands == weak, sigma * 1.3, sigma)
    drift = rng.normal(0.0, sigma * 0.3)  # ms per second: rushing or dragging
    error = np.clip(rng.normal(0.0, 1.0, n), -3.0, 3.0) * hand_sigma
    error += np.where(hands == weak, sigma * 0.25, 0.0) + drift * intended / 1000.0
    actual = intended + error

    parent = np.array([np.nan if note.parent is None else base + note.parent
                       for _, note, base in notes])
    grace = kinds == "grace"
    parent_idx = parent[grace].astype(np.int64)
    ideal = np.array([note.grace_offset_ms for _, note, _ in notes])[grace]
    spacing = np.maximum(ideal + rng.normal(0.0, sigma * 0.5, grace.sum()), 4.0)
    actual[grace] = actual[parent_idx] - spacing
    flam_spacing = np.full(n, np.nan)
    flam_spacing[grace] = spacing
    timing_error = actual - intended
    timing_error[grace] = spacing - IDEAL_GRACE_SPACING_MS  # the generator's rule for graces

    want = np.array([INTENDED_VELOCITY[k] for k in kinds], dtype=np.int64)
    played = want * np.where(hands == weak, 0.93, 1.0)
    played += rng.normal(0.0, VELOCITY_SIGMA[profile.tier], n)
    got = np.clip(np.rint(played), 1, 127).astype(np.int64)
    buzz = np.where(kinds == "buzz", rng.integers(3, 9, n), np.nan)
    diddle = np.array([np.nan if note.diddle_position is None else note.diddle_position
                       for _, note, _ in notes])
    return num_cycles, {
        "index": np.arange(n, dtype=np.int64),
        "hand": hands,
        "stroke_type": kinds,
        "intended_time_ms": intended,
        "actual_time_ms": actual,
        "timing_error_ms": timing_error,
        "intended_velocity": want,
        "actual_velocity": got,
        "velocity_error": got - want,
        "is_grace_note": grace,
        "is_accent": kinds == "accent",
        "diddle_position": diddle,
        "flam_spacing_ms": flam_spacing,
        "parent_stroke_index": parent,
        "buzz_count": buzz.astype(np.float64),
    }


def _measures(strokes: dict[str, np.ndarray], per_measure: int) -> dict[str, np.ndarray]:
    """Per-measure statistics over consecutive chunks of strokes, as the generator computes."""
    rows: list[tuple[float, ...]] = []
    n = len(strokes["index"])
    for start in range(0, n, per_measure):
        part = slice(start, min(start + per_measure, n))
        err = strokes["timing_error_ms"][part]
        vel = strokes["actual_velocity"][part].astype(np.float64)
        hands = strokes["hand"][part]
        left, right = hands == "L", hands == "R"
        ratio = lr_diff = np.nan
        if left.any() and right.any():
            ratio = vel[left].mean() / vel[right].mean()
            lr_diff = err[left].mean() - err[right].mean()
        rows.append((start, part.stop, err.mean(), err.std(), np.abs(err).max(), vel.mean(),
                     vel.std(), 1.0 - vel.std() / vel.mean(), ratio, lr_diff))
    table = np.array(rows, dtype=np.float64).reshape(-1, 10)
    names = [c for c in MEASURE_COLUMNS if c not in ("index", "sample_id")]
    out = {"index": np.arange(len(rows), dtype=np.int64)}
    for i, name in enumerate(names):
        column = table[:, i]
        out[name] = column.astype(np.int64) if name.startswith("stroke_") else column
    return out


def _sigmoid_score(value: float, centre: float, width: float) -> float:
    return float(100.0 / (1.0 + np.exp((value - centre) / width)))


def _scores(rudiment: str, strokes: dict[str, np.ndarray],
            rng: np.random.Generator) -> dict[str, float | None]:
    """Exercise scores after the generator's formulas; family scores only where they apply."""
    family = RUDIMENTS[rudiment][0]
    err = strokes["timing_error_ms"]
    vel = strokes["actual_velocity"].astype(np.float64)
    kinds, hands = strokes["stroke_type"], strokes["hand"]
    main = ~strokes["is_grace_note"]
    times = strokes["intended_time_ms"]
    if main.sum() > 1:
        slope = np.polyfit(times[main], err[main], 1)[0] * 1000.0
        stability = max(0.0, 100.0 - abs(slope) * 10.0)
        ratio = np.diff(strokes["actual_time_ms"]) / np.maximum(np.diff(times), 1.0)
        evenness = max(0.0, 100.0 - float(np.std(ratio)) * 100.0)
    else:
        stability = evenness = 100.0
    accents, taps = vel[kinds == "accent"], vel[kinds == "tap"]
    differentiation = 80.0
    if accents.size and taps.size:
        differentiation = min(100.0, max(0.0, (accents.mean() - taps.mean()) / 127 * 160))
    accuracy = 100.0 * float(np.mean(accents > vel.mean())) if accents.size else 100.0
    balance, weak_index = 100.0, 50.0
    if (hands == "L").any() and (hands == "R").any():
        lv, rv = vel[hands == "L"].mean(), vel[hands == "R"].mean()
        le, re = np.abs(err[hands == "L"]).mean(), np.abs(err[hands == "R"]).mean()
        balance = 50.0 * min(lv, rv) / max(lv, rv) + 50.0 * min(le, re) / max(le, re, 1.0)
        weak_index = 100.0 * le / (le + re) if le + re > 0 else 50.0
    parts = {
        "timing_accuracy": _sigmoid_score(float(np.abs(err).mean()), 25.0, 10.0),
        "timing_consistency": _sigmoid_score(float(err.std()), 15.0, 8.0),
        "tempo_stability": stability,
        "subdivision_evenness": evenness,
        "velocity_control": max(0.0, 100.0 - float(vel.std()) * 2.0),
        "accent_differentiation": differentiation,
        "accent_accuracy": accuracy,
        "hand_balance": balance,
    }
    weights = (0.2, 0.15, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15)
    spacing = strokes["flam_spacing_ms"][strokes["is_grace_note"]]
    flam = float(np.mean(np.clip(100.0 - np.maximum(20.0 - spacing, spacing - 40.0).clip(0) * 4,
                                 0.0, 100.0))) if spacing.size else 80.0
    didd = strokes["diddle_position"]
    second = np.flatnonzero(didd == 2)
    gaps = strokes["actual_time_ms"][second] - strokes["actual_time_ms"][second - 1]
    want = np.maximum(times[second] - times[second - 1], 1.0)
    diddle = max(0.0, 100.0 - float(np.mean(np.abs(gaps / want - 1.0))) * 200.0) \
        if second.size else 80.0
    quarter = max(1, len(vel) // 4)
    sustain = min(100.0, 100.0 * vel[-quarter:].mean() / vel[:quarter].mean())
    return parts | {
        "weak_hand_index": weak_index,
        "flam_quality": flam if family == "flam" else None,
        "diddle_quality": diddle if family in ("diddle", "roll") else None,
        "roll_sustain": sustain if family == "roll" else None,
        "groove_feel_proxy": float(1.0 / (1.0 + err.std() / 20.0)),
        "overall_score": float(sum(w * v for w, v in zip(weights, parts.values()))),
        "tier_confidence": float(rng.uniform(0.3, 0.95)),
    }


def _profiles(count: int, rng: np.random.Generator) -> list[_Profile]:
    tiers = [TIERS[i % len(TIERS)] for i in range(count)]
    order = rng.permutation(count)
    return [
        _Profile(
            profile_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)),
            number=i,
            tier=tiers[order[i]],
            dominant_hand="left" if rng.random() < 0.15 else "right",
        )
        for i in range(count)
    ]


def _splits(profiles: list[_Profile], rng: np.random.Generator) -> dict:
    """splits.json: profiles shuffled into train/val/test, none empty once there are 3."""
    ids = [profiles[i].profile_id for i in rng.permutation(len(profiles))]
    n = len(ids)
    n_val = max(1, round(n * SPLIT_RATIOS[1])) if n >= 2 else 0
    n_test = max(1, round(n * SPLIT_RATIOS[2])) if n >= 3 else 0
    n_train = n - n_val - n_test
    parts = {"train": ids[:n_train], "val": ids[n_train:n_train + n_val],
             "test": ids[n_train + n_val:]}
    tier_of = {p.profile_id: p.tier for p in profiles}
    stats: dict = {"total_profiles": n} | {f"{k}_profiles": len(v) for k, v in parts.items()}
    for name, members in parts.items():
        stats[f"{name}_skill_distribution"] = {t: sum(tier_of[m] == t for m in members)
                                               for t in TIERS}
    return {f"{k}_profile_ids": v for k, v in parts.items()} | {"stats": stats}


def _sample_id(profile: _Profile, rudiment: str, tempo: int, soundfont: str, preset: str) -> str:
    """The generator's id: soundfont cut to 8 characters, underscores dropped from the preset."""
    short = soundfont.replace("_GM_GS", "").replace("_GS", "").replace("_", "").replace("-", "")
    return (f"{TIER_CODES[profile.tier]}{profile.number:03d}_{rudiment}_{tempo}bpm_"
            f"{short[:8].lower()}_{preset.replace('_', '')}")


def _plan(samples: int, seed: int, duration_sec: tuple[float, float], rudiments: tuple[str, ...],
          augmentations: int, flat: bool) -> tuple[list[_Sample], dict]:
    """Every sample of the dataset and splits.json, from the seed alone (no I/O)."""
    rng = np.random.default_rng(seed)
    num_groups = -(-samples // augmentations)
    num_profiles = min(num_groups, max(3, -(-num_groups // GROUPS_PER_PROFILE)))
    profiles = _profiles(num_profiles, rng)
    splits = _splits(profiles, rng)
    out: list[_Sample] = []
    group_number = 0
    for profile, block in zip(profiles, np.array_split(np.arange(num_groups), num_profiles)):
        tempos = rng.choice(TEMPOS, size=len(block), replace=False)
        for tempo in tempos:
            rudiment = rudiments[group_number % len(rudiments)]
            group_number += 1
            duration = round(float(rng.uniform(*duration_sec)), 3)
            num_cycles, strokes = _perform(rudiment, int(tempo), duration, profile, rng)
            per_measure = len(_parse_pattern(RUDIMENTS[rudiment][2]))
            presets = tuple(PRESETS[i] for i in rng.permutation(len(PRESETS))[:augmentations])
            group = _Group(profile, rudiment, int(tempo), duration, num_cycles, strokes,
                           _measures(strokes, per_measure), _scores(rudiment, strokes, rng),
                           presets)
            for k, preset in enumerate(presets[:samples - len(out)]):
                soundfont = SOUNDFONTS[k % len(SOUNDFONTS)]
                sid = _sample_id(profile, rudiment, group.tempo, soundfont[0], preset.name)
                folder = "" if flat else f"{rudiment}/"
                out.append(_Sample(len(out), sid, group, preset, soundfont,
                                   f"audio/{folder}{sid}.flac",
                                   f"midi/{folder}{sid}.mid" if k == 0 else None))
    return out, splits


# --- Render --------------------------------------------------------------------------------


def _hits(strokes: dict[str, np.ndarray], slot_ms: float) -> tuple[np.ndarray, ...]:
    """(time s, amplitude, is right hand) per sounding hit; a buzz bounces buzz_count times."""
    count = np.where(np.isnan(strokes["buzz_count"]), 1, strokes["buzz_count"]).astype(np.int64)
    stroke = np.repeat(np.arange(len(count)), count)
    bounce = np.arange(len(stroke)) - np.repeat(np.cumsum(count) - count, count)
    gap = slot_ms * 0.8 / count[stroke]
    times = (strokes["actual_time_ms"][stroke] + bounce * gap) / 1000.0
    amps = (strokes["actual_velocity"][stroke] / 127.0) ** 1.6 * 0.7 ** bounce
    return times, amps, strokes["hand"][stroke] == "R"


def _templates(rng: np.random.Generator, tone_hz: float, tone_decay: float,
               wire_decay: float) -> np.ndarray:
    """A few snare hits: drum-head modes plus a snare-wire noise burst, each slightly different.

    The wires are band-limited like a real snare's (little energy above a few kHz); white
    noise bursts would make FLAC files far larger than the generator's.
    """
    t = np.arange(HIT_FRAMES) / SAMPLE_RATE
    detune = rng.uniform(0.97, 1.03, (TEMPLATES_PER_SAMPLE, 1))
    head = (np.sin(2 * np.pi * tone_hz * detune * t) * np.exp(-t / tone_decay)
            + 0.5 * np.sin(2 * np.pi * tone_hz * 1.59 * detune * t) * np.exp(-t / tone_decay / 1.6))
    band = 1.0 / (1.0 + (np.fft.rfftfreq(t.size, 1.0 / SAMPLE_RATE) / WIRE_CUTOFF_HZ) ** 4)
    noise = rng.standard_normal((TEMPLATES_PER_SAMPLE, t.size))
    wires = np.fft.irfft(np.fft.rfft(noise) * band, t.size)
    wires *= np.exp(-t / wire_decay) / wires.std()
    attack = np.minimum(1.0, t / 0.0008)
    return (0.8 * head + 0.6 * wires) * attack


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fast on those, and they pad less than 2^k."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            best = min(best, p35 << (-(-n // p35) - 1).bit_length())
            p35 *= 3
        p5 *= 5
    return best


def _render(sample: _Sample, seed: int, channels: int) -> np.ndarray:
    """The sample's audio, (frames, channels) float32 peaking at PEAK_DBFS."""
    rng = np.random.default_rng([seed, 1, sample.number])
    group, preset = sample.group, sample.preset
    frames = int(round((group.duration_sec + TAIL_SEC) * SAMPLE_RATE))
    slot_ms = 60000.0 / group.tempo / RUDIMENTS[group.rudiment][1]
    times, amps, right = _hits(group.strokes, slot_ms)
    bank = _templates(rng, *sample.soundfont[1:])
    pick = rng.integers(0, len(bank), len(times))
    amps = amps * rng.uniform(0.9, 1.1, len(times))
    pan = np.where(right, 0.58, 0.42)  # a stroke sits a little towards the hand that plays it
    gains = np.stack([1.0 - pan, pan]) if channels == 2 else np.ones((1, len(times)))
    delay = int(rng.integers(0, 24))  # the second microphone is a few centimetres further
    dry = np.zeros((channels, frames))
    starts = np.rint(times * SAMPLE_RATE).astype(np.int64)
    for i, start in enumerate(starts):
        for c in range(channels):
            s = start + delay * c
            n = min(bank.shape[1], frames - s)
            if n > 0:
                dry[c, s:s + n] += gains[c, i] * amps[i] * bank[pick[i], :n]

    # Room, microphone roll-off and noise floor in one pass through the frequency domain.
    ir_len = int(min(preset.rt60_sec, 1.0) * SAMPLE_RATE)
    nfft = _fft_size(frames + ir_len)  # no wrap-around: the room tail past the end is dropped
    t = np.arange(ir_len) / SAMPLE_RATE
    # Mostly one room heard by both microphones, partly decorrelated (a spaced pair).
    diffuse = rng.standard_normal((channels + 1, ir_len))
    ir = (diffuse[:1] + 0.5 * diffuse[1:]) * np.exp(-6.9 * t / preset.rt60_sec)
    ir *= 1.0 / np.sqrt((ir**2).sum(axis=1, keepdims=True))
    freqs = np.fft.rfftfreq(nfft, 1.0 / SAMPLE_RATE)
    mic = 1.0 / (1.0 + (freqs / preset.lowpass_hz) ** 4) * (freqs / np.hypot(freqs, 40.0))
    room = (1.0 - preset.room_wet_dry) + preset.room_wet_dry * 3.0 * np.fft.rfft(ir, nfft)
    spectrum = np.fft.rfft(dry, nfft) * room * mic
    floor_db = (QUIET_FLOOR_DBFS if preset.noise_level_db is None
                else preset.noise_level_db - NOISE_FLOOR_HEADROOM_DB)
    shape = mic / np.sqrt(np.maximum(freqs, 50.0))  # pink, through the same microphone
    rms = np.abs(dry).max() * 10 ** (floor_db / 20)
    shape *= rms * nfft / (2.0 * np.sqrt((shape**2).sum()))
    # Uniform real and imaginary parts (variance 1, and 4x cheaper than normals) still give
    # Gaussian noise in time: every output sample sums the whole spectrum.
    noise = (rng.random((2, channels, shape.size)) - 0.5) * (np.sqrt(12.0) * shape)
    spectrum += noise[0] + 1j * noise[1]
    audio = np.fft.irfft(spectrum, nfft)[:, :frames]
    audio *= 10 ** (PEAK_DBFS / 20) / np.abs(audio).max()
    return np.ascontiguousarray(audio.T, dtype=np.float32)


def _midi(group: _Group) -> mido.MidiFile:
    """Type-1 MIDI with one track: the performance as played (actual times and velocities)."""
    beat_ms = 60000.0 / group.tempo
    on = np.rint(group.strokes["actual_time_ms"] / beat_ms * TICKS_PER_BEAT).astype(np.int64)
    order = np.argsort(on, kind="stable")
    on, vel = on[order], group.strokes["actual_velocity"][order]
    nxt = np.append(on[1:], on[-1] + NOTE_TICKS)
    off = np.maximum(on + 1, np.minimum(on + NOTE_TICKS, nxt))
    events = sorted([(int(t), 1, i) for i, t in enumerate(on)]
                    + [(int(t), 0, i) for i, t in enumerate(off)])
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(group.tempo))])
    now = 0
    for tick, is_on, i in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, channel=DRUM_CHANNEL, note=SNARE_NOTE,
                                  velocity=int(vel[i]) if is_on else 0, time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track"))
    return mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT, tracks=[track])


# --- Write ---------------------------------------------------------------------------------


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


def _write_labels(labels: Path, plan: list[_Sample]) -> int:
    """The four label files, rows in sample order; returns the number of stroke rows."""
    def repeated(table: str) -> dict[str, object]:
        parts = [getattr(s.group, table) for s in plan]
        cols: dict[str, object] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        counts = [len(p["index"]) for p in parts]
        cols["sample_id"] = np.repeat([s.sample_id for s in plan], counts)
        return cols

    rows = []
    for s in plan:
        g, p = s.group, s.preset
        rows.append({
            "sample_id": s.sample_id, "profile_id": g.profile.profile_id,
            "rudiment_slug": g.rudiment, "tempo_bpm": g.tempo, "duration_sec": g.duration_sec,
            "num_cycles": g.num_cycles, "skill_tier": g.profile.tier,
            "skill_tier_binary": TIER_BINARY[g.profile.tier],
            "dominant_hand": g.profile.dominant_hand, "midi_path": s.midi_path,
            "audio_path": s.audio_path, "num_strokes": len(g.strokes["index"]),
            "num_measures": len(g.measures["index"]), "soundfont": s.soundfont[0],
            "augmentation_preset": p.name, "augmentation_group_id": g.group_id,
            "aug_soundfont": s.soundfont[0], "aug_room_type": p.room_type,
            "aug_room_wet_dry": p.room_wet_dry, "aug_mic_distance": p.mic_distance,
            "aug_mic_type": p.mic_type, "aug_compression_ratio": p.compression_ratio,
            "aug_noise_level_db": p.noise_level_db, "aug_bit_depth": None,
            "aug_sample_rate": None,
        })
    samples = {k: [r[k] for r in rows] for k in SAMPLE_COLUMNS}
    exercises = {k: [s.group.scores[k] for s in plan] for k in EXERCISE_COLUMNS
                 if k != "sample_id"} | {"sample_id": [s.sample_id for s in plan]}
    strokes = repeated("strokes")
    _write_parquet(labels / "samples.parquet", samples, SAMPLE_COLUMNS)
    _write_parquet(labels / "exercises.parquet", exercises, EXERCISE_COLUMNS)
    _write_parquet(labels / "measures.parquet", repeated("measures"), MEASURE_COLUMNS)
    _write_parquet(labels / "strokes.parquet", strokes, STROKE_COLUMNS)
    return len(strokes["sample_id"])


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _write(root: Path, plan: list[_Sample], splits: dict, seed: int, channels: int,
           progress: bool) -> tuple[int, int]:
    """Everything under root; returns (FLAC bytes, stroke rows)."""
    (root / "labels").mkdir(parents=True)
    audio_bytes = 0
    for s in tqdm(plan, desc="example", unit="sample", disable=not progress):
        audio = root / s.audio_path
        audio.parent.mkdir(parents=True, exist_ok=True)
        sf.write(audio, _render(s, seed, channels), SAMPLE_RATE, subtype="PCM_24",
                 format="FLAC")
        audio_bytes += audio.stat().st_size
        if s.midi_path is not None:
            midi = root / s.midi_path
            midi.parent.mkdir(parents=True, exist_ok=True)
            _midi(s.group).save(midi)
    num_strokes = _write_labels(root / "labels", plan)
    ids = [s.sample_id for s in plan]
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
    progress: bool = False,
    rudiments: tuple[str, ...] = DEFAULT_RUDIMENTS,
    augmentations: int = DEFAULT_AUGMENTATIONS,
) -> ExampleSummary:
    """Write a SOUSA dataset of exactly `samples` samples to `out` (absent or empty).

    `duration_sec` bounds each performance before the 0.5 s tail; `flat` writes the older
    `audio/<id>.flac` layout; `rudiments` are cycled over the groups; `augmentations` presets
    per group (the generator uses 5; the last group is cut short to hit `samples`).
    Same arguments, same bytes.
    """
    rudiments = tuple(rudiments)
    _check_options(samples, duration_sec, channels, rudiments, augmentations)
    root = Path(os.path.abspath(out))  # "." or "x/" still name a sibling for the temp folder
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ExampleError(f"{root} exists and is not an empty folder; choose a new path or "
                           f"remove it first")
    plan, splits = _plan(samples, seed, duration_sec, rudiments, augmentations, flat)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    try:
        audio_bytes, num_strokes = _write(tmp, plan, splits, seed, channels, progress)
        tmp.rename(root)  # replaces an empty folder; the dataset appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    return ExampleSummary(
        path=root,
        num_samples=len(plan),
        num_groups=len({s.group.group_id for s in plan}),
        num_profiles=len({s.group.profile.profile_id for s in plan}),
        num_strokes=num_strokes,
        audio_bytes=audio_bytes,
        total_bytes=total,
    )
