"""Fetch single samples by key, reading only their bytes (a seek, an HTTP Range request).

    python examples/random_access.py PACKED_FOLDER_OR_REPO
    python examples/random_access.py PACKED_FOLDER_OR_REPO OUT_DIR   # writes its files too

How it works: the metadata gives each sample's shard and the byte offset of each member, so
`SampleMap` reads one byte range per sample and checks every member against its sha256. A
SampleMap is also a map-style torch Dataset: an integer index is a metadata row.
`load_audio(row)` reads just one FLAC member and returns it as `soundfile.read` does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import sousa_wds


def main() -> None:
    source = sys.argv[1]
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else None

    view = sousa_wds.SampleMap(source, "test", midi="mido")  # reads the test metadata once
    print(f"{len(view)} test samples; metadata columns: {len(view.metadata.columns)}")

    best = view.metadata.sort_values("overall_score", ascending=False).key.iloc[0]
    started = time.perf_counter()
    sample = view[best]  # one range read
    channels, frames = sample["audio"].shape
    print(f"best-scored: {best} in {(time.perf_counter() - started) * 1000:.1f} ms: {channels} ch "
          f"x {frames} frames @ {sample['sample_rate']} Hz, tier {sample['labels']['skill_tier']}, "
          f"{len(sample['midi'].tracks[0])} MIDI events")

    first = view[0]  # by metadata row, as a torch map-style Dataset would ask
    print(f"row 0: {first['key']}, overall score {first['labels']['overall_score']:.3f}")

    audio, rate = sousa_wds.load_audio(view.metadata.iloc[1], source=source)  # the FLAC only
    print(f"row 1 via load_audio: {audio.shape} {audio.dtype} @ {rate} Hz")

    if out is not None:
        raw = sousa_wds.get_sample(source, best, split="test", decode=False)  # the member bytes
        out.mkdir(parents=True, exist_ok=True)
        for member in ("flac", "json", "mid"):
            (out / f"{best}.{member}").write_bytes(raw[member])
        print(f"wrote {best}.flac/.json/.mid to {out}")


if __name__ == "__main__":
    main()
