"""Measure rows and exercise scores from a performance's stroke rows (pure), as the generator.

How it works:
- **Measures** (`measures`): the generator cuts a sample's stroke rows, in the order it
  writes them, into consecutive chunks of `len(rudiment.pattern.strokes)` rows (one cycle's
  strokes, grace notes included) and aggregates each. `stroke_start`/`stroke_end` are ROW
  positions inside the sample (end exclusive), not stroke indexes: for a buzz roll, whose
  bounces are rows of their own, a chunk holds a primary's bounces too and its positions
  differ from the indexes of its strokes. For every other rudiment positions and indexes agree.
- **Scores** (`scores`): the generator's formulas (sigmoid timing scores, stability from the
  drift slope, hand balance, ...); family scores (flam_quality, diddle_quality, roll_sustain)
  only for the families they apply to, null elsewhere.
"""

from __future__ import annotations

import numpy as np

from ..format import MEASURE_COLUMNS
from .perform import Strokes
from .rudiments import family

OVERALL_WEIGHTS = (0.2, 0.15, 0.1, 0.1, 0.1, 0.1, 0.1, 0.15)  # the generator's, in parts order


def measures(strokes: Strokes, per_measure: int) -> dict[str, np.ndarray]:
    """Per-measure statistics over consecutive chunks of `per_measure` rows."""
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


def _timing_parts(strokes: Strokes) -> dict[str, float]:
    err = strokes["timing_error_ms"]
    main = ~strokes["is_grace_note"]
    times = strokes["intended_time_ms"]
    if main.sum() > 1:
        slope = np.polyfit(times[main], err[main], 1)[0] * 1000.0
        stability = max(0.0, 100.0 - abs(slope) * 10.0)
        ratio = np.diff(strokes["actual_time_ms"]) / np.maximum(np.diff(times), 1.0)
        evenness = max(0.0, 100.0 - float(np.std(ratio)) * 100.0)
    else:
        stability = evenness = 100.0
    return {
        "timing_accuracy": _sigmoid_score(float(np.abs(err).mean()), 25.0, 10.0),
        "timing_consistency": _sigmoid_score(float(err.std()), 15.0, 8.0),
        "tempo_stability": stability,
        "subdivision_evenness": evenness,
    }


def _dynamics_parts(strokes: Strokes) -> dict[str, float]:
    vel = strokes["actual_velocity"].astype(np.float64)
    kinds = strokes["stroke_type"]
    accents, taps = vel[kinds == "accent"], vel[kinds == "tap"]
    differentiation = 80.0
    if accents.size and taps.size:
        differentiation = min(100.0, max(0.0, (accents.mean() - taps.mean()) / 127 * 160))
    accuracy = 100.0 * float(np.mean(accents > vel.mean())) if accents.size else 100.0
    return {
        "velocity_control": max(0.0, 100.0 - float(vel.std()) * 2.0),
        "accent_differentiation": differentiation,
        "accent_accuracy": accuracy,
    }


def _hand_balance(strokes: Strokes) -> tuple[float, float]:
    """(hand_balance, weak_hand_index): velocity and timing of the two hands compared."""
    err = strokes["timing_error_ms"]
    vel = strokes["actual_velocity"].astype(np.float64)
    hands = strokes["hand"]
    if not ((hands == "L").any() and (hands == "R").any()):
        return 100.0, 50.0
    lv, rv = vel[hands == "L"].mean(), vel[hands == "R"].mean()
    le, re = np.abs(err[hands == "L"]).mean(), np.abs(err[hands == "R"]).mean()
    balance = 50.0 * min(lv, rv) / max(lv, rv) + 50.0 * min(le, re) / max(le, re, 1.0)
    return balance, 100.0 * le / (le + re) if le + re > 0 else 50.0


def _family_scores(strokes: Strokes) -> tuple[float, float, float]:
    """(flam_quality, diddle_quality, roll_sustain) as if every family applied."""
    vel = strokes["actual_velocity"].astype(np.float64)
    times = strokes["intended_time_ms"]
    spacing = strokes["flam_spacing_ms"][strokes["is_grace_note"]]
    flam = float(np.mean(np.clip(100.0 - np.maximum(20.0 - spacing, spacing - 40.0).clip(0) * 4,
                                 0.0, 100.0))) if spacing.size else 80.0
    second = np.flatnonzero(strokes["diddle_position"] == 2)
    gaps = strokes["actual_time_ms"][second] - strokes["actual_time_ms"][second - 1]
    want = np.maximum(times[second] - times[second - 1], 1.0)
    diddle = max(0.0, 100.0 - float(np.mean(np.abs(gaps / want - 1.0))) * 200.0) \
        if second.size else 80.0
    quarter = max(1, len(vel) // 4)
    sustain = min(100.0, 100.0 * vel[-quarter:].mean() / vel[:quarter].mean())
    return flam, diddle, sustain


def scores(rudiment: str, strokes: Strokes, rng: np.random.Generator) -> dict[str, float | None]:
    """Exercise scores after the generator's formulas; family scores only where they apply."""
    kind = family(rudiment)
    parts = _timing_parts(strokes) | _dynamics_parts(strokes)
    balance, weak_index = _hand_balance(strokes)
    parts["hand_balance"] = balance
    flam, diddle, sustain = _family_scores(strokes)
    return parts | {
        "weak_hand_index": weak_index,
        "flam_quality": flam if kind == "flam" else None,
        "diddle_quality": diddle if kind in ("diddle", "roll") else None,
        "roll_sustain": sustain if kind == "roll" else None,
        "groove_feel_proxy": float(1.0 / (1.0 + strokes["timing_error_ms"].std() / 20.0)),
        "overall_score": float(sum(w * v for w, v in zip(OVERALL_WEIGHTS, parts.values()))),
        "tier_confidence": float(rng.uniform(0.3, 0.95)),
    }
