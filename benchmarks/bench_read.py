"""Read throughput of the sousa-wds loader against its baselines, on the same shards, in one run.

How it works:
- Generates its own data (`make_example`, 4-8 s performances, ~1 MB of FLAC per sample) and
  packs it, or reuses `--data DIR` from an earlier run. Everything is read once before timing,
  so all contenders read from the page cache: the figures compare CPU work, not disks.
- Contenders over the train split, each timed `--repeats` times (median reported):
  raw `tarfile` iteration (no decode); the loader without decode; soundfile decoding of the same
  loose FLACs (the decode floor); the loader with decode in one process, and through a torch
  DataLoader with 2 workers; `datasets` streaming of the packed folder (its webdataset builder,
  audio decoded by its torchcodec Audio feature).
- Throughput is MB of FLAC per second of wall time; ratios of median throughputs are checked
  against the targets of the loader issue, and shown on best runs too. CPU seconds (this
  process and its finished children: the DataLoader workers) are shown as well: on a shared
  machine they move less than wall time, and the load average printed before and after says
  how shared it was. Set-up (metadata read, plan) is timed once and shown apart: it is paid
  once per run, not per epoch.

    python benchmarks/bench_read.py                  # ~300 MB, about 4 minutes on 2 cores
    python benchmarks/bench_read.py --data /tmp/bench --samples 120 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import soundfile

import sousa_wds
from sousa_wds.example import make_example
from sousa_wds.pack import pack

SHARD_SIZE = 64_000_000  # several shards per split at ~300 MB, as a real pack has many
BATCH = 8
# Reading without decoding takes ~50 ms a pass from the page cache: time several passes so the
# figure is not scheduler noise.
UNDECODED_PASSES = 10


def _as_list(batch: list) -> list:
    return batch


def _cpu_seconds() -> float:
    """CPU of this process and of its finished children (the DataLoader's workers)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def prepare(data: Path, samples: int) -> tuple[Path, Path]:
    source, packed = data / "source", data / "packed"
    if not (packed / "manifest.json").exists():
        print(f"generating {samples} samples in {data} ...", flush=True)
        started = time.perf_counter()
        make_example(source, samples=samples, seed=7, duration_sec=(4.0, 8.0))
        pack(source, packed, shard_size=SHARD_SIZE, workers=2, progress=False)
        print(f"  generated and packed in {time.perf_counter() - started:.0f} s", flush=True)
    return source, packed


def contenders(source: Path, packed: Path
               ) -> tuple[dict[str, tuple[Callable[[], int], int]], dict]:
    """name → (function reading the train split once and returning the samples it read,
    passes per timing)."""
    meta = sousa_wds.metadata(packed, "train")
    shards = [packed / p for p in dict.fromkeys(meta.shard_path)]
    by_stem = {p.stem: p for p in (source / "audio").rglob("*.flac")}
    loose = [by_stem[key] for key in meta.key]

    def raw_tarfile() -> int:
        count = 0
        for shard in shards:
            with tarfile.open(shard) as tar:
                for member in tar:
                    tar.extractfile(member).read()
                    count += 1
        return count // 3

    def decode_floor() -> int:
        for path in loose:
            soundfile.read(path, dtype="float32", always_2d=True)
        return len(loose)

    setup: dict[str, float] = {}

    def timed_stream(name: str, **options):
        started = time.perf_counter()
        stream = sousa_wds.stream(packed, "train", **options)
        setup[name] = time.perf_counter() - started
        return stream

    import webdataset  # noqa: F401 - imports torch (seconds): not part of any set-up time

    raw = timed_stream("loader, no decode", decode=False)
    decoded = timed_stream("loader, decode")
    with_mido = timed_stream("loader, decode, MIDI parsed (mido)", midi="mido")
    tensors = timed_stream("loader, decode, DataLoader 2 workers", tensors=True)
    loader = tensors.loader(batch_size=BATCH, num_workers=2, collate_fn=_as_list)

    def count(stream) -> Callable[[], int]:
        return lambda: sum(1 for _ in stream)

    def dataloader() -> int:
        return sum(len(batch) for batch in loader)

    def datasets_streaming() -> int:
        from datasets import load_dataset

        ds = load_dataset(str(packed), split="train", streaming=True)
        n = 0
        for sample in ds:
            sample["flac"].get_all_samples()  # torchcodec: the decoded waveform
            n += 1
        return n

    runs = {
        "raw tarfile (no decode)": (raw_tarfile, UNDECODED_PASSES),
        "loader, no decode": (count(raw), UNDECODED_PASSES),
        "decode floor (soundfile, loose FLAC)": (decode_floor, 1),
        "loader, decode": (count(decoded), 1),
        "loader, decode, MIDI parsed (mido)": (count(with_mido), 1),
        "loader, decode, DataLoader 2 workers": (dataloader, 1),
        "datasets streaming (decode)": (datasets_streaming, 1),
    }
    return runs, {"setup": setup, "flac_bytes": int(meta.flac_size.sum()), "samples": len(meta)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="folder for the generated data (kept; reused when it exists)")
    parser.add_argument("--samples", type=int, default=300, help="samples to generate (~1 MB each)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        source, packed = prepare(args.data or Path(tmp), args.samples)
        runs, facts = contenders(source, packed)
        mb = facts["flac_bytes"] / 1e6
        print(f"train split: {facts['samples']} samples, {mb:.0f} MB of FLAC, "
              f"{len(list((packed / 'data').glob('train-*.tar')))} shards")
        for fn, _ in runs.values():  # warm the page cache and every import
            fn()
        load_before = _load()
        times: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, (fn, passes) in runs.items():
                started, cpu_started = time.perf_counter(), _cpu_seconds()
                counts = [fn() for _ in range(passes)]
                times[name].append((time.perf_counter() - started) / passes)
                cpu[name].append((_cpu_seconds() - cpu_started) / passes)
                if set(counts) != {facts["samples"]}:
                    raise SystemExit(f"{name} read {counts} samples, expected {facts['samples']}")

    rate = {name: mb / statistics.median(ts) for name, ts in times.items()}
    best = {name: mb / min(ts) for name, ts in times.items()}
    print(f"load average before / after timing: {load_before} / {_load()} (2 cores)")
    print(f"\n{'contender (one pass)':<40} {'median s':>9} {'MB/s':>7} {'best s':>7} "
          f"{'CPU s':>6}   (wall s of each run)")
    for name, ts in times.items():
        runs_text = ", ".join(f"{t:.3f}" for t in ts)
        print(f"{name:<40} {statistics.median(ts):>9.3f} {rate[name]:>7.1f} {min(ts):>7.3f} "
              f"{statistics.median(cpu[name]):>6.2f}   ({runs_text})")
    print("\nset-up paid once per run (metadata + plan):",
          ", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in facts["setup"].items()))

    checks = [
        ("loader, no decode", "raw tarfile (no decode)", 0.9),
        ("loader, decode", "decode floor (soundfile, loose FLAC)", 0.9),
        ("loader, decode, DataLoader 2 workers", "loader, decode", 1.7),
        ("loader, decode", "datasets streaming (decode)", 1.5),
        ("loader, decode, DataLoader 2 workers", "datasets streaming (decode)", 1.5),
    ]
    # Other processes on the machine only ever slow a run down: the best run is the steadier
    # estimate of a contender's own cost, so ratios are shown on medians and on best runs.
    print(f"\n{'throughput ratio':<78} {'median':>6} {'best':>6} {'target':>7}")
    for a, b, target in checks:
        value, steady = rate[a] / rate[b], best[a] / best[b]
        verdict = "ok" if value >= target else "MISSED"
        print(f"{a + ' / ' + b:<78} {value:>6.2f} {steady:>6.2f} {'>= ' + str(target):>7}  "
              f"{verdict}")


if __name__ == "__main__":
    main()
