"""Read throughput of the sousa-wds loader against its baselines, on the same shards, in one run.

How it works:
- Generates its own data (`make_example`, 4-8 s performances, ~1 MB of FLAC per sample) and
  packs it, or reuses `--data DIR` from an earlier run. Everything is read once before timing,
  so all contenders read from the page cache: the figures compare CPU work, not disks.
- Contenders over the train split, interleaved (every contender once per round, `--repeats`
  rounds, medians reported): raw `tarfile` iteration (no decode); the loader without decode;
  the decode floor: soundfile on the same FLAC bytes held in memory (no I/O), also on a thread
  pool and in 2 forked processes (the ceilings of `decode_threads` and of 2 DataLoader workers
  on this machine at this moment), and followed by the hand-off of the decoded tensor to
  another process (what every DataLoader worker adds); the loader with decode in one process
  (inline, and with its default `decode_threads`), with MIDI parsed, and through a torch
  DataLoader with 2 workers;
  `datasets` streaming of the packed folder (its webdataset builder) with the same decoder
  (soundfile on the FLAC bytes it hands out).
- Throughput is MB of FLAC per second of wall time. Each target of issue 10 (read side) is a
  ratio of median throughputs, printed with its min-max over rounds (the two contenders paired
  by round, so both saw the same neighbours) and PASS/FAIL. CPU seconds (this process and its
  finished children) are shown too: on a shared machine they move less than wall time, and the
  load average printed before and after says how shared it was. Set-up (metadata read, plan)
  is timed once and shown apart: it is paid once per run, not per epoch.

    python benchmarks/bench_read.py                  # ~300 MB, about 6 minutes on 2 cores
    python benchmarks/bench_read.py --data /tmp/bench --samples 120 --repeats 3
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import resource
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
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


def _decode_bytes(flac: bytes) -> None:
    soundfile.read(io.BytesIO(flac), dtype="float32", always_2d=True)


_FORKED: list[bytes] = []  # the FLAC bytes a forked floor process inherits


def _decode_forked(part: slice) -> int:
    for flac in _FORKED[part]:
        _decode_bytes(flac)
    return len(_FORKED[part])


def contenders(packed: Path, threads: int
               ) -> tuple[dict[str, tuple[Callable[[], int], int]], dict]:
    """name → (function reading the train split once and returning the samples it read,
    passes per timing)."""
    meta = sousa_wds.metadata(packed, "train")
    shards = [packed / p for p in dict.fromkeys(meta.shard_path)]
    # The floor decodes the very FLAC bytes the loader reads, held in memory: no I/O at all.
    flacs = [s["flac"] for s in sousa_wds.stream(packed, "train", decode=False, shuffle=False)]
    _FORKED[:] = flacs
    halves = [slice(0, len(flacs) // 2), slice(len(flacs) // 2, None)]
    forked = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))

    def raw_tarfile() -> int:
        count = 0
        for shard in shards:
            with tarfile.open(shard) as tar:
                for member in tar:
                    tar.extractfile(member).read()
                    count += 1
        return count // 3

    def decode_floor() -> int:
        for flac in flacs:
            _decode_bytes(flac)
        return len(flacs)

    def decode_floor_threads() -> int:
        with ThreadPoolExecutor(threads) as pool:
            return sum(1 for _ in pool.map(_decode_bytes, flacs))

    def decode_floor_processes() -> int:
        return sum(forked.map(_decode_forked, halves))

    def decode_floor_handoff() -> int:
        """Decode, then what a DataLoader worker and the training process add: the tensor
        pickled into shared memory (torch's ForkingPickler) and rebuilt on the other side."""
        import pickle
        from multiprocessing.reduction import ForkingPickler

        import torch
        import torch.multiprocessing  # noqa: F401 - registers torch's shared-memory reductions

        for flac in flacs:
            data, _ = soundfile.read(io.BytesIO(flac), dtype="float32", always_2d=True)
            pickle.loads(ForkingPickler.dumps(torch.from_numpy(data.T)))
        return len(flacs)

    setup: dict[str, float] = {}

    def timed_stream(name: str, **options):
        started = time.perf_counter()
        stream = sousa_wds.stream(packed, "train", **options)
        setup[name] = time.perf_counter() - started
        return stream

    import webdataset  # noqa: F401 - imports torch (seconds): not part of any set-up time

    raw = timed_stream(LOADER_RAW, decode=False)
    decoded = timed_stream(LOADER, decode_threads=1)
    default = timed_stream(LOADER_DEFAULT)
    with_mido = timed_stream("loader, decode, MIDI parsed (mido)", decode_threads=1,
                             midi="mido")
    tensors = timed_stream(LOADER_WORKERS, tensors=True)
    loader = tensors.loader(batch_size=BATCH, num_workers=2, collate_fn=_as_list)

    def count(stream) -> Callable[[], int]:
        return lambda: sum(1 for _ in stream)

    def dataloader() -> int:
        return sum(len(batch) for batch in loader)

    def datasets_streaming() -> int:
        """`datasets`' webdataset builder over the same shards, the same decoder (soundfile
        on the FLAC bytes), the labels parsed by it as well."""
        from datasets import Audio, load_dataset

        # The shards themselves: the folder's card points `datasets` at the metadata Parquet.
        files = [str(shard) for shard in shards]
        ds = load_dataset("webdataset", data_files={"train": files}, split="train",
                          streaming=True)
        ds = ds.cast_column("flac", Audio(decode=False))
        n = 0
        for sample in ds:
            _decode_bytes(sample["flac"]["bytes"])
            n += 1
        return n

    runs = {
        TARFILE: (raw_tarfile, UNDECODED_PASSES),
        LOADER_RAW: (count(raw), UNDECODED_PASSES),
        FLOOR: (decode_floor, 1),
        FLOOR_THREADS: (decode_floor_threads, 1),
        FLOOR_PROCESSES: (decode_floor_processes, 1),
        FLOOR_HANDOFF: (decode_floor_handoff, 1),
        LOADER: (count(decoded), 1),
        LOADER_DEFAULT: (count(default), 1),
        "loader, decode, MIDI parsed (mido)": (count(with_mido), 1),
        LOADER_WORKERS: (dataloader, 1),
        DATASETS: (datasets_streaming, 1),
    }
    return runs, {"setup": setup, "flac_bytes": int(meta.flac_size.sum()), "samples": len(meta)}


TARFILE = "raw tarfile (no decode)"
LOADER_RAW = "loader, no decode"
FLOOR = "decode floor (soundfile, FLAC bytes in memory)"
FLOOR_THREADS = "decode floor, thread pool"
FLOOR_PROCESSES = "decode floor, 2 processes"
FLOOR_HANDOFF = "decode floor + tensor hand-off to another process"
LOADER = "loader, decode, decode_threads=1 (inline)"
LOADER_DEFAULT = "loader, decode (default decode_threads)"
LOADER_WORKERS = "loader, decode, DataLoader 2 workers"
DATASETS = "datasets streaming (same decoder)"

# (contender, baseline, target ratio of throughputs): the targets of issue 10, read side.
TARGETS = [
    (LOADER_RAW, TARFILE, 0.9),
    (LOADER_DEFAULT, FLOOR, 0.95),
    (LOADER, FLOOR, 0.95),
    (LOADER_WORKERS, LOADER, 1.8),
    (LOADER_WORKERS, LOADER_DEFAULT, 1.8),
    (LOADER_DEFAULT, DATASETS, 1.3),
    (LOADER, DATASETS, 1.3),
]
# What the machine allows at the moment of the run: the ceiling of each scaling target.
CEILINGS = [
    (FLOOR_PROCESSES, FLOOR, "2 processes on the same bytes, no transfer (ceiling of 2 workers)"),
    (FLOOR_THREADS, FLOOR, "a thread pool on the same bytes (ceiling of decode_threads)"),
]


def _time_all(runs: dict, repeats: int, samples: int) -> tuple[dict, dict]:
    """Every contender once per round, interleaved, `repeats` rounds: wall and CPU seconds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (fn, passes) in runs.items():
            started, cpu_started = time.perf_counter(), _cpu_seconds()
            counts = [fn() for _ in range(passes)]
            times[name].append((time.perf_counter() - started) / passes)
            cpu[name].append((_cpu_seconds() - cpu_started) / passes)
            if set(counts) != {samples}:
                raise SystemExit(f"{name} read {counts} samples, expected {samples}")
    return times, cpu


def _report(times: dict, cpu: dict, mb: float) -> None:
    rate = {name: mb / statistics.median(ts) for name, ts in times.items()}
    print(f"\n{'contender (one pass)':<48} {'median s':>9} {'MB/s':>7} {'min-max s':>13} "
          f"{'CPU s':>6}   (wall s of each run)")
    for name, ts in times.items():
        runs_text = ", ".join(f"{t:.3f}" for t in ts)
        print(f"{name:<48} {statistics.median(ts):>9.3f} {rate[name]:>7.1f} "
              f"{min(ts):>6.3f}-{max(ts):<6.3f} {statistics.median(cpu[name]):>6.2f}   "
              f"({runs_text})")
    # Ratios of medians decide; the range over rounds (each contender's runs paired by round,
    # so both saw the same neighbours) shows how much the shared machine moved them.
    print(f"\n{'target: throughput ratio':<82} {'median':>6} {'min-max':>11} {'target':>7}")
    for a, b, target in TARGETS:
        value = rate[a] / rate[b]
        paired = [tb / ta for ta, tb in zip(times[a], times[b])]
        verdict = "PASS" if value >= target else "FAIL"
        print(f"{a + ' / ' + b:<82} {value:>6.2f} {min(paired):>5.2f}-{max(paired):<5.2f} "
              f"{'>= ' + str(target):>7}  {verdict}")
    print("\nceilings measured in the same run (what this machine gave at the time):")
    for a, b, what in CEILINGS:
        print(f"  {rate[a] / rate[b]:.2f}x  {what}")
    print(f"  {rate[FLOOR_HANDOFF] / rate[FLOOR]:.2f}x  decode + tensor hand-off (both sides "
          "in this process) vs decode alone: the extra work DataLoader workers bring")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="folder for the generated data (kept; reused when it exists)")
    parser.add_argument("--samples", type=int, default=300, help="samples to generate (~1 MB each)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of the thread-pool floor")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
        _, packed = prepare(args.data or Path(tmp), args.samples)
        runs, facts = contenders(packed, args.threads)
        mb = facts["flac_bytes"] / 1e6
        print(f"train split: {facts['samples']} samples, {mb:.0f} MB of FLAC, "
              f"{len(list((packed / 'data').glob('train-*.tar')))} shards; "
              f"commit {_commit()}; {os.cpu_count()} cores")
        for fn, _ in runs.values():  # warm the page cache and every import
            fn()
        load_before = _load()
        times, cpu = _time_all(runs, args.repeats, facts["samples"])
    print(f"load average (1, 5, 15 min) before / after timing: {load_before} / {_load()}")
    print("set-up paid once per run (metadata + plan):",
          ", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in facts["setup"].items()))
    _report(times, cpu, mb)


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
