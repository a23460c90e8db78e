"""Bytes sent and wall time per epoch over an HTTP mirror, without and with the local cache.

How it works:
- Generates and packs an example dataset (or reuses `--data DIR`), serves the packed folder with
  `tests/httpserver.py` on 127.0.0.1 (which counts the body bytes it sends), and streams the
  train split without decoding (`decode=False`: the figures are transport and cache, not FLAC).
- Rows: two epochs without a cache, then two with `cache_dir=` in a fresh folder: epoch 1 fills
  the cache (each shard fetched whole, hashed, written, renamed), epoch 2 reads local files only;
  then one more pass as a new process would make it (the per-process record of files already
  hashed cleared, so each cached file is hashed once before use).
  The stream is made once per row, so its manifest and metadata reads are in set-up, not timed.

    python benchmarks/bench_cache.py                      # from the checkout's root
    python benchmarks/bench_cache.py --data /tmp/bench-cache --samples 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sousa_wds  # noqa: E402
from sousa_wds.example import make_example  # noqa: E402
from sousa_wds.io import human_bytes  # noqa: E402
from sousa_wds.pack import pack  # noqa: E402
from sousa_wds.read import cache as cache_module  # noqa: E402
from tests.httpserver import FolderServer  # noqa: E402


def _packed(data: Path, samples: int) -> Path:
    out = data / "packed"
    if not (out / "manifest.json").exists():
        make_example(data / "dataset", samples=samples, seed=1, duration_sec=(4.0, 8.0))
        pack(data / "dataset", out, shard_size=20_000_000, workers=1, progress=False)
    return out


def _epochs(server: FolderServer, cache: Path | None,
            epochs: int = 2) -> list[tuple[float, int, int]]:
    """(seconds, bytes sent, samples) of each epoch of one stream."""
    ds = sousa_wds.stream(server.url, "train", decode=False, seed=0, cache_dir=cache or False)
    rows = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        server.clear()
        started = time.perf_counter()
        count = sum(1 for _ in ds)
        rows.append((time.perf_counter() - started, server.bytes_sent(), count))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="reuse or create data here")
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        packed = _packed(args.data or Path(tmp), args.samples)
        with FolderServer(packed) as server:
            results = [("no cache", _epochs(server, None)),
                       ("cache_dir", _epochs(server, Path(tmp) / "cache"))]
            cache_module._verified.clear()  # as in a new process: hash each file once
            results.append(("cache_dir, new process", _epochs(server, Path(tmp) / "cache", 1)))
    print("| stream | epoch | samples | bytes sent | seconds |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in results:
        for epoch, (seconds, sent, count) in enumerate(rows, 1):
            print(f"| {name} | {epoch} | {count} | {human_bytes(sent)} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
