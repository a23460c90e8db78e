"""The 40 PAS rudiments as the example plays them: family, grid and sticking pattern.

How it works:
- Each rudiment is one cycle of a sticking pattern on a grid of slots (`slots_per_beat`);
  `cycle()` parses it once into `Note`s in time order, grace notes before their primary.
- The family (roll, diddle, flam, drag) decides which rudiment-specific scores the generator
  fills (flam_quality, diddle_quality, roll_sustain), see `labels.py`.
- Pure data and parsing; `perform.py` turns a cycle into a timed performance.

Token = one grid slot: "R"/"L" tap, ">" suffix accent, "." rest, "d" suffix diddle stroke
(consecutive ones by one hand number 1, 2, ...), "f"/"g" prefix flam/drag (grace notes by the
other hand just before), "z" prefix buzz stroke (its bounces are added by `perform.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

GRACE_OFFSETS_MS = {"f": (30.0,), "g": (60.0, 30.0)}  # flam: one grace; drag: a diddle

# slug: (the generator's category, slots per beat, sticking pattern of one cycle)
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
# ...), so even an 11-sample example has them as double columns with real nulls, and its third
# group is a buzz roll (stroke indexes not increasing row by row, as the generator writes them).
DEFAULT_RUDIMENTS = (
    "single_paradiddle", "flam_tap", "multiple_bounce_roll", "double_stroke_open_roll",
    "single_drag_tap", "five_stroke_roll", "flam", "single_stroke_four", "double_paradiddle",
    "flamacue", "single_stroke_roll", "lesson_25",
)


@dataclass(frozen=True)
class Note:
    """One stroke of a pattern cycle; graces point at their primary by position in the cycle."""

    slot: int
    grace_offset_ms: float
    hand: str
    stroke_type: str
    diddle_position: int | None
    parent: int | None


def family(rudiment: str) -> str:
    return RUDIMENTS[rudiment][0]


def slots_per_beat(rudiment: str) -> int:
    return RUDIMENTS[rudiment][1]


def cycle_slots(rudiment: str) -> int:
    """Grid slots in one cycle, rests included."""
    return len(RUDIMENTS[rudiment][2].split())


@cache
def cycle(rudiment: str) -> tuple[Note, ...]:
    """The strokes of one cycle of `rudiment`, in time order (grace notes before their primary).

    Its length is also the generator's strokes-per-measure (`len(rudiment.pattern.strokes)`).
    """
    return tuple(parse_pattern(RUDIMENTS[rudiment][2]))


def parse_pattern(pattern: str) -> list[Note]:
    """The strokes of one cycle written as tokens (see the module docstring)."""
    notes: list[Note] = []
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
            notes.append(Note(slot, offset, other, "grace", None, primary))
        kind = ("accent" if accent else "diddle" if diddle else "buzz" if prefix == "z"
                else "tap")
        notes.append(Note(slot, 0.0, hand, kind, diddle_count if diddle else None, None))
    return notes
