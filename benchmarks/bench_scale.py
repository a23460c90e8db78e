"""What grows with the number of samples, measured here: metadata size and load time, a rank's
set-up (metadata read + where + epoch plan), and the pack planner's time. docs/scale.md uses it.

How it works:
- Metadata: a synthetic split of `--rows` samples with the real `METADATA_SCHEMA` (unique keys and
  sha256 hex, ~1 MB FLAC members in ~1 GB shards, labels drawn from small vocabularies like
  SOUSA's, scores as random floats), written with the pack's own Parquet options into a folder
  with a real manifest, so the public API reads it: `sousa_wds.metadata()` (one rank's
  download-free parse), `sousa_wds.stream(..., rank=0, world_size=64)` up to its epoch plan
  (what every rank does before its workers start), `len(stream.loader(num_workers=8))` (the plan
  each DataLoader worker computes), with and without a `where=`. No shard is written: none is
  read before the first sample.
- Projection only (not the loader): the same file read with the location columns alone, the
  cost a reader that skips the labels would pay.
- Pack planning: `plan_shards` over synthetic source samples (100k and `--plan-rows`).
- Every figure is the median of `--repeats` runs; the load average before and after says how
  shared the machine was. Peak RSS is of this process (ru_maxrss), so it includes the largest step.

    python benchmarks/bench_scale.py                       # 1M rows: ~5 minutes on 2 busy cores
    python benchmarks/bench_scale.py --rows 100000 --plan-rows 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import os
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import sousa_wds
from sousa_wds.format import (
    LOCATION_COLUMNS,
    METADATA_SCHEMA,
    FileEntry,
    Manifest,
    PackOptions,
    SplitCounts,
    metadata_path,
    shard_path,
)
from sousa_wds.source import SourceSample

SAMPLE_BYTES = 1_000_000  # SOUSA: ~100 GB of FLAC over ~100k samples
SHARD_BYTES = 1_000_000_000  # the pack's default shard size
VOCABULARY = 32  # distinct values per label string column (SOUSA: 40 rudiments, 4 tiers, ...)
RANKS, WORKERS = 64, 8  # the DDP job of docs/scale.md


def _module(*names: str) -> object:
    """The first of `names` that imports: modules move between releases (plan.py, index.py)."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(f"none of {', '.join(names)}")


def _keys(rows: int, rng: np.random.Generator) -> np.ndarray:
    """Unique keys shaped like SOUSA's sample ids (~50 characters)."""
    tiers = np.array(["beg", "int", "adv", "pro"])[rng.integers(0, 4, rows)]
    rudiments = np.array(["single_paradiddle", "flam_accent", "five_stroke_roll",
                          "single_drag_tap"])[rng.integers(0, 4, rows)]
    return np.array([f"{t}{i // 1000:05d}_{r}_{100 + i % 97}bpm_fluidr3g_{i % 1000:03d}"
                     for i, (t, r) in enumerate(zip(tiers, rudiments))], object)


def _column(name: str, typ: pa.DataType, keys: np.ndarray, rng: np.random.Generator) -> pa.Array:
    rows = len(keys)
    per_shard = SHARD_BYTES // SAMPLE_BYTES
    shard = np.arange(rows) // per_shard
    if name in ("key", "sample_id"):
        return pa.array(keys, typ)
    if name.endswith("sha256"):
        digests = np.frombuffer(rng.bytes(32 * rows), np.uint8).reshape(rows, 32)
        return pa.array([bytes(d).hex() for d in digests], typ)
    if name in ("shard", "shard_path", "audio_shard", "midi_shard"):
        names = [shard_path("train", i) for i in range(int(shard[-1]) + 1)]
        names = [n.rsplit("/", 1)[-1] for n in names] if name == "shard" else names
        return pa.array(np.array(names, object)[shard], typ)
    if name in ("audio_filename", "midi_filename"):
        ext = ".flac" if name.startswith("audio") else ".mid"
        return pa.array([k + ext for k in keys], typ)
    if name == "split":
        return pa.array(["train"] * rows, typ)
    if name == "index_in_shard":
        return pa.array(np.arange(rows) % per_shard, typ)
    if name.endswith("_offset"):
        return pa.array((np.arange(rows) % per_shard) * SAMPLE_BYTES + 512, typ)
    if name.endswith("_size"):
        return pa.array(rng.integers(SAMPLE_BYTES // 2, SAMPLE_BYTES * 3 // 2, rows), typ)
    if pa.types.is_string(typ):
        vocabulary = np.array([f"{name}_{i}" for i in range(VOCABULARY)], object)
        return pa.array(vocabulary[rng.integers(0, VOCABULARY, rows)], typ)
    if pa.types.is_integer(typ):
        return pa.array(rng.integers(0, 300, rows), typ)
    if pa.types.is_floating(typ):
        return pa.array(rng.random(rows), typ)
    raise TypeError(f"no synthetic values for {name}: {typ}")


def synthetic_pack(out: Path, rows: int, seed: int = 0) -> Path:
    """A folder the loader opens: manifest + metadata/train.parquet of `rows` samples."""
    rng = np.random.default_rng(seed)
    keys = _keys(rows, rng)
    table = pa.table([_column(f.name, f.type, keys, rng) for f in METADATA_SCHEMA],
                     schema=METADATA_SCHEMA)
    index = _module("sousa_wds.pack.tables", "sousa_wds.index")
    path = out / metadata_path("train")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=index.ROW_GROUP_SIZE, **index.PARQUET_OPTIONS)
    data = path.read_bytes()
    shards = -(-rows // (SHARD_BYTES // SAMPLE_BYTES))
    manifest = Manifest(
        layout="shards", source_fingerprint="0" * 64,
        options=PackOptions("shards", SHARD_BYTES, None, 0, "shuffle"),
        splits={"train": SplitCounts(rows, shards, rows * SAMPLE_BYTES)},
        files=(FileEntry(metadata_path("train"), len(data), hashlib.sha256(data).hexdigest()),))
    (out / "manifest.json").write_bytes(manifest.to_json())
    return path


def _median(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        result = None  # the previous result is freed here, not inside the next timing
        gc.collect()
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def measure_metadata(folder: Path, rows: int, repeats: int) -> list[tuple[str, str]]:
    size = (folder / metadata_path("train")).stat().st_size
    where = "skill_tier == 'skill_tier_3' and tempo_bpm >= 150"  # ~1/64 of the rows
    read, frame = _median(lambda: sousa_wds.metadata(folder, "train"), repeats)
    memory = frame.memory_usage(deep=True).sum()
    del frame

    def rank_setup(**options: object) -> int:
        return sousa_wds.stream(folder, "train", decode=False, rank=0, world_size=RANKS,
                                **options).num_samples

    rank_setup()  # imports webdataset and torch: not part of any rank's per-run cost
    setup, share = _median(rank_setup, repeats)
    sparse, sparse_share = _median(lambda: rank_setup(where=where), repeats)
    ds = sousa_wds.stream(folder, "train", decode=False, rank=0, world_size=RANKS)
    warnings.filterwarnings("ignore", "This DataLoader will create")  # no worker is started
    worker_plan, _ = _median(lambda: len(ds.loader(batch_size=16, num_workers=WORKERS)), repeats)
    located, table = _median(lambda: pq.read_table(folder / metadata_path("train"),
                                                   columns=list(LOCATION_COLUMNS)), repeats)
    return [
        ("metadata Parquet size", f"{size / 1e6:.1f} MB ({size / rows:.0f} B/row)"),
        ("`metadata()`: read + to pandas", f"{read:.2f} s"),
        ("DataFrame in memory (deep)", f"{memory / 1e6:.0f} MB ({memory / rows:.0f} B/row)"),
        (f"rank set-up: `stream(rank=0, world_size={RANKS})` + plan",
         f"{setup:.2f} s ({share} samples for rank 0)"),
        (f"the same with `where=` (~1/64: {sparse_share} for rank 0)", f"{sparse:.2f} s"),
        (f"epoch plan for {WORKERS} workers (each worker repeats it)", f"{worker_plan:.2f} s"),
        ("location columns only (pyarrow, no pandas)",
         f"{located:.2f} s, {table.nbytes / 1e6:.0f} MB in memory"),
    ]


def measure_planner(rows: int, repeats: int) -> tuple[str, str]:
    plan = _module("sousa_wds.pack.plan", "sousa_wds.plan")
    keys = _keys(rows, np.random.default_rng(1))
    samples = [SourceSample(key, "train", i, f"audio/{key}.flac", f"midi/{key}.mid",
                              SAMPLE_BYTES, 4_000) for i, key in enumerate(keys)]
    del keys
    took, packed = _median(lambda: plan.plan_shards(samples), repeats)
    return (f"`plan_shards` over {rows:,} samples",
            f"{took:.2f} s ({len(packed.shards):,} shards)")


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="metadata rows")
    parser.add_argument("--plan-rows", type=int, nargs="+", default=[100_000, 1_000_000],
                        help="source samples given to plan_shards")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, help="folder for the synthetic pack (kept)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"load average before: {_load()} (1 / 5 / 15 min), {os.cpu_count()} CPUs")
    started = time.perf_counter()
    synthetic_pack(work / f"rows-{args.rows}", args.rows)
    print(f"wrote {args.rows:,} synthetic metadata rows in {time.perf_counter() - started:.1f} s")
    results = measure_metadata(work / f"rows-{args.rows}", args.rows, args.repeats)
    results += [measure_planner(n, args.repeats) for n in args.plan_rows]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"\n| measured ({args.rows:,} metadata rows, median of {args.repeats}) | value |")
    print("|---|---:|")
    for name, value in results + [("peak RSS of this process", f"{peak:.0f} MB")]:
        print(f"| {name} | {value} |")
    print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    main()
