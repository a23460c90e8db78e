"""A simulated performance of a rudiment: the stroke rows of strokes.parquet (pure, seeded).

How it works:
- **Grid**: the rudiment's cycle (`rudiments.cycle`) is repeated from LEAD_IN_MS until the
  performance's duration; each note gets its intended time on the tempo's grid.
- **Play**: the player's tier sets timing and velocity errors (the weak hand is later and
  softer, the whole take drifts); grace notes sit a tier-dependent spacing before their primary,
  and their timing error is scored against the ideal spacing, as the generator does.
- **Buzz**: each buzz primary bounces `buzz_count` times. The bounces after the first become
  rows of their own, exactly as the generator writes them (see `expand_buzz`): numbered after
  all primaries, written in time order right after their primary.
Returns columns (numpy arrays, one entry per row, rows in the order written); `labels.py`
derives measures and scores from them, `render.py` plays them.
"""

from __future__ import annotations

import numpy as np

from .rudiments import cycle, cycle_slots, slots_per_beat

LEAD_IN_MS = 150.0  # first beat; leaves room for drag grace notes played early by a beginner
IDEAL_GRACE_SPACING_MS = 30.0  # the generator scores grace notes against this spacing
TIMING_SIGMA_MS = {"beginner": 18.0, "intermediate": 11.0, "advanced": 6.0, "professional": 3.0}
VELOCITY_SIGMA = {"beginner": 14.0, "intermediate": 9.0, "advanced": 6.0, "professional": 3.0}
INTENDED_VELOCITY = {"accent": 115, "tap": 80, "diddle": 80, "grace": 45, "buzz": 72}
BUZZ_COUNT = (3, 8)  # strokes per buzz, primary included (the generator's buzz_strokes_range)
BUZZ_SPACING_MS = (2.0, 5.0)  # the generator's gap between one buzz's bounces
BUZZ_VELOCITY_DECAY = 0.85  # each bounce is this much softer than the one before

Strokes = dict[str, np.ndarray]


def perform(rudiment: str, tempo: int, duration_sec: float, tier: str, dominant_hand: str,
            rng: np.random.Generator, buzz_rng: np.random.Generator) -> tuple[int, Strokes]:
    """Play the rudiment for duration_sec with the tier's errors: (num_cycles, stroke rows).

    `buzz_rng` draws only the buzz bounces, so adding them changed no other rudiment's take.
    """
    num_cycles, intended, notes = _grid(rudiment, tempo, duration_sec)
    primaries = _play(intended, notes, tier, dominant_hand, rng)
    return num_cycles, expand_buzz(primaries, buzz_rng)


def _grid(rudiment: str, tempo: int, duration_sec: float) -> tuple[int, np.ndarray, list]:
    """(num_cycles, intended times, [(note, index of its cycle's first note)]) in time order."""
    slot_ms = 60000.0 / tempo / slots_per_beat(rudiment)
    slots = cycle_slots(rudiment)
    end_ms = duration_sec * 1000.0
    times: list[float] = []
    notes: list = []
    num_cycles = 0
    while LEAD_IN_MS + num_cycles * slots * slot_ms < end_ms:
        base = len(notes)
        for note in cycle(rudiment):
            t = LEAD_IN_MS + (num_cycles * slots + note.slot) * slot_ms
            if t < end_ms:
                times.append(t - note.grace_offset_ms)
                notes.append((note, base))
        num_cycles += 1
    return num_cycles, np.array(times), notes


def _play(intended: np.ndarray, notes: list, tier: str, dominant_hand: str,
          rng: np.random.Generator) -> Strokes:
    """One row per note: the tier's timing and velocity errors, grace spacing, buzz counts."""
    n = len(notes)
    sigma = TIMING_SIGMA_MS[tier]
    weak = "L" if dominant_hand == "right" else "R"
    hands = np.array([note.hand for note, _ in notes])
    kinds = np.array([note.stroke_type for note, _ in notes])
    hand_sigma = np.where(hands == weak, sigma * 1.3, sigma)
    drift = rng.normal(0.0, sigma * 0.3)  # ms per second: rushing or dragging
    error = np.clip(rng.normal(0.0, 1.0, n), -3.0, 3.0) * hand_sigma
    error += np.where(hands == weak, sigma * 0.25, 0.0) + drift * intended / 1000.0
    actual = intended + error

    parent = np.array([np.nan if note.parent is None else base + note.parent
                       for note, base in notes])
    grace = kinds == "grace"
    ideal = np.array([note.grace_offset_ms for note, _ in notes])[grace]
    spacing = np.maximum(ideal + rng.normal(0.0, sigma * 0.5, grace.sum()), 4.0)
    actual[grace] = actual[parent[grace].astype(np.int64)] - spacing
    flam_spacing = np.full(n, np.nan)
    flam_spacing[grace] = spacing
    timing_error = actual - intended
    timing_error[grace] = spacing - IDEAL_GRACE_SPACING_MS  # the generator's rule for graces

    want = np.array([INTENDED_VELOCITY[k] for k in kinds], dtype=np.int64)
    played = want * np.where(hands == weak, 0.93, 1.0)
    played += rng.normal(0.0, VELOCITY_SIGMA[tier], n)
    got = np.clip(np.rint(played), 1, 127).astype(np.int64)
    buzz = np.where(kinds == "buzz", rng.integers(BUZZ_COUNT[0], BUZZ_COUNT[1] + 1, n), np.nan)
    return {
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
        "diddle_position": np.array([np.nan if note.diddle_position is None
                                     else note.diddle_position for note, _ in notes]),
        "flam_spacing_ms": flam_spacing,
        "parent_stroke_index": parent,
        "buzz_count": buzz.astype(np.float64),
    }


def expand_buzz(primaries: Strokes, rng: np.random.Generator) -> Strokes:
    """Add each buzz primary's bounces as rows, the way the generator writes buzz rolls.

    The generator's articulation step keeps the P primaries numbered 0..P-1 and gives the
    bounces the next numbers (P, P+1, ...) in the order it meets them, but keeps every
    bounce right after its primary: rows read primary 0, its bounces, primary 1, ... so a
    buzz roll's indexes are unique and cover 0..n-1 without increasing row by row. A bounce
    j (1..buzz_count-1) of a primary comes j * spacing later with velocity decay**j, has
    `is_grace_note`, `parent_stroke_index` = its primary and no `buzz_count`; being a grace
    note with a parent, its `flam_spacing_ms` is primary - bounce time (negative) and its
    timing error that minus the ideal grace spacing, as the generator's label step computes.
    """
    count = np.nan_to_num(primaries["buzz_count"], nan=1.0).astype(np.int64)
    if (count == 1).all():
        return primaries
    p = len(count)
    src = np.repeat(np.arange(p), count)  # the primary each row belongs to
    bounce = np.arange(len(src)) - np.repeat(np.cumsum(count) - count, count)
    sub = bounce > 0
    first_sub = p + np.cumsum(count - 1) - (count - 1)  # index of each primary's first bounce
    rows = {name: column[src] for name, column in primaries.items()}
    rows["index"] = np.where(sub, first_sub[src] + bounce - 1, src)
    gap = rng.uniform(*BUZZ_SPACING_MS, p)[src] * bounce
    decay = BUZZ_VELOCITY_DECAY ** bounce
    rows["intended_time_ms"] = rows["intended_time_ms"] + gap
    rows["actual_time_ms"] = rows["actual_time_ms"] + gap
    rows["flam_spacing_ms"] = np.where(sub, -gap, rows["flam_spacing_ms"])
    rows["timing_error_ms"] = np.where(sub, -gap - IDEAL_GRACE_SPACING_MS,
                                       rows["timing_error_ms"])
    want = np.where(sub, (rows["intended_velocity"] * decay).astype(np.int64),
                    rows["intended_velocity"])
    got = np.where(sub, np.clip(rows["actual_velocity"] * decay, 1, 127).astype(np.int64),
                   rows["actual_velocity"])
    rows |= {"intended_velocity": want, "actual_velocity": got, "velocity_error": got - want}
    rows["is_grace_note"] = rows["is_grace_note"] | sub
    rows["is_accent"] = rows["is_accent"] & ~sub
    rows["parent_stroke_index"] = np.where(sub, src, rows["parent_stroke_index"])
    rows["buzz_count"] = np.where(sub, np.nan, rows["buzz_count"])
    return rows
