"""Write a small, realistic SOUSA dataset (what sousa-wds packs) for tests, demos and benchmarks.

How it works (one module per job, in flow order):
- `rudiments.py`: the 40 PAS rudiments as sticking patterns on a grid, and their families.
- `plan.py` (pure, seeded): profiles with a random UUID4, a skill tier and a split; each
  augmentation group (profile, rudiment, tempo) gets one performance shared by its samples.
- `perform.py` (pure): the performance's stroke rows, the rudiment played with the tier's
  timing and velocity errors; buzz rolls written as the generator writes them (bounces
  numbered after the primaries, rows in time order).
- `labels.py` (pure): measure rows and exercise scores from the stroke rows.
- `render.py`: every sample of a group renders the *same* strokes (the ones in strokes.parquet
  and the group's MIDI) with its own soundfont colour, room, microphone and noise floor, so a
  group's five files differ like the generator's augmentations do; FLAC and MIDI bytes.
- `write.py`: `make_example`, the folder written into a temporary sibling and renamed into
  place at the end, so a crash never leaves a folder that looks like a complete dataset.

Why it is realistic, quirk by quirk (the generator's real output, docs: SOUSA input format):
`<tier3><NNN>_<slug>_<tempo>bpm_<soundfont8>_<preset>` ids with underscores inside the slug;
splits only through splits.json; one MIDI per group, on the group's first row, whose preset is
random (not always clean_studio); labels repeated per sample of a group; stroke indexes of a buzz
roll not increasing row by row; Parquet written by pandas → pyarrow with large_string strings,
optional integers as double, the arrow null type for columns that are all null; label files
mode 0600; stereo PCM_24 FLAC peaking at -1 dBFS with a 0.5 s tail, compressing like recorded
drums (60-65% of raw PCM), not like silence or white noise. Same arguments, same bytes.
"""

from ..errors import ExampleError
from .rudiments import DEFAULT_RUDIMENTS, RUDIMENTS
from .write import ExampleSummary, make_example

__all__ = ["DEFAULT_RUDIMENTS", "RUDIMENTS", "ExampleError", "ExampleSummary", "make_example"]
