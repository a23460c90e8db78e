"""How `check` and `pack` scale to the full 100k samples: time, and memory of every process.

Builds a dataset of `--samples` samples by replicating a small real example: label rows are
copied under new sample ids and profiles, and media files are hard links, so a 100k-sample
folder costs seconds and no disk. Then, at 1/10 and full size, it runs `read_dataset` in fresh
processes (median of `--repeats`), and `sousa-wds check` and `sousa-wds pack` (default workers)
under bench_pack's process watcher (GNU time + /proc VmHWM of every descendant), and prints the
issue 10 targets: every process <= 200 MB at full size, and flat (full / tenth <= 1.1x).
`--no-pack` skips the packs (they write ~`--samples` x 20 KB). `--full-labels` gives every sample
the stroke and measure rows of the generator's full set (350 and 100 a sample: 35M and 10M rows
at 100k samples, the base's rows tiled and renumbered) instead of the short base
performances' ~2.5 and ~1: what the label checks and label tables cost at the real scale.

    python benchmarks/bench_check.py --samples 100000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]  # this checkout's sousa_wds, bench_pack

from sousa_wds.example import make_example  # noqa: E402

BASE_SAMPLES = 500
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                 os.environ.get("PYTHONPATH")]))}
BASE_DURATION_S = (0.25, 0.26)  # the shortest make_example allows; mono: ~20 KB a FLAC
TARGET_RSS_MB = 200.0
TARGET_FLAT = 1.1


def _suffixed(column: pa.ChunkedArray, suffix: str) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(column, pa.scalar(suffix, column.type),
                                       pa.scalar("", column.type))


FULL_ROWS = {"strokes": 350, "measures": 100}  # rows a sample in the generator's full set


def _tiled(rows: pa.Table, ids: pa.ChunkedArray, per_sample: int) -> pa.Table:
    """`per_sample` rows for each of `ids`, values tiled from `rows`, indexes 0..n-1."""
    need = len(ids) * per_sample
    table = pa.concat_tables([rows] * (need // rows.num_rows + 1)).slice(0, need)
    index = pa.array(np.tile(np.arange(per_sample), len(ids)))
    sample_id = pc.take(ids, pa.array(np.repeat(np.arange(len(ids)), per_sample)))
    table = table.set_column(table.column_names.index("index"), "index", index)
    return table.set_column(table.column_names.index("sample_id"), "sample_id", sample_id)


def replicate(base: Path, out: Path, copies: int, full_labels: bool = False) -> None:
    """`copies` copies of `base`'s samples, each copy with its own profiles and file links;
    with `full_labels`, FULL_ROWS stroke and measure rows a sample (written a copy at a time)."""
    splits = json.loads((base / "splits.json").read_text())
    new_splits = {k: [] for k in splits if k.endswith("_profile_ids")}
    tables: dict[str, list[pa.Table]] = {n: [] for n in ("samples", "exercises", "measures",
                                                         "strokes")}
    source = {n: pq.read_table(base / "labels" / f"{n}.parquet") for n in tables}
    (out / "labels").mkdir(parents=True)
    streamed = {name: pq.ParquetWriter(out / "labels" / f"{name}.parquet", source[name].schema)
                for name in (FULL_ROWS if full_labels else ())}
    for c in range(copies):
        suffix = f"_c{c:04d}"
        for name, table in source.items():
            if name in streamed:
                sample_ids = _suffixed(source["samples"].column("sample_id"), suffix)
                streamed[name].write_table(_tiled(table, sample_ids, FULL_ROWS[name]))
                continue
            ids = _suffixed(table.column("sample_id"), suffix)
            table = table.set_column(table.column_names.index("sample_id"), "sample_id", ids)
            if name == "samples":
                for col in ("profile_id", "augmentation_group_id"):
                    renamed = _suffixed(table.column(col), suffix)
                    table = table.set_column(table.column_names.index(col), col, renamed)
                for col in ("audio_path", "midi_path"):
                    renamed = pc.replace_substring_regex(table.column(col), r"\.(flac|mid)$",
                                                         suffix + r".\1")
                    table = table.set_column(table.column_names.index(col), col, renamed)
            tables[name].append(table)
        for key, profiles in splits.items():
            if key in new_splits:
                new_splits[key] += [p + suffix for p in profiles]
    for writer in streamed.values():
        writer.close()
    for name, parts in tables.items():
        if name not in streamed:
            pq.write_table(pa.concat_tables(parts), out / "labels" / f"{name}.parquet")
    (out / "splits.json").write_text(json.dumps(new_splits))
    for folder in ("audio", "midi"):
        for path in (base / folder).rglob("*.*"):
            rel = path.relative_to(base)
            for c in range(copies):
                target = out / rel.with_name(f"{path.stem}_c{c:04d}{path.suffix}")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)


def time_read(root: Path, repeats: int) -> tuple[float, float]:
    """Median seconds of read_dataset in a fresh process, and its peak RSS in MB."""
    code = (
        "import resource, sys, time; t = time.perf_counter();"
        "from sousa_wds.source import read_dataset; d = read_dataset(sys.argv[1]);"
        "print(time.perf_counter() - t, len(d.samples),"
        " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code, str(root)], check=True,
                             capture_output=True, text=True, env=ENV).stdout.split()
        runs.append((float(out[0]), int(out[1]), float(out[2])))
    return statistics.median(r[0] for r in runs), max(r[2] for r in runs)


def watched(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MB) of the largest process of `cmd`'s tree."""
    from bench_pack import run

    result = run(cmd, env={"PYTHONPATH": ENV["PYTHONPATH"]})
    if result.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{result.stderr[-2000:]}")
    return result.seconds, result.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-pack", action="store_true", help="skip the pack runs")
    parser.add_argument("--full-labels", action="store_true",
                        help="350 stroke and 100 measure rows a sample, as the full dataset")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "sousa_wds.cli"]
    print(f"load average at start: {os.getloadavg()}")
    peaks: dict[str, list[float]] = {"check": [], "pack": []}
    with tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        base = Path(tmp, "base")
        make_example(base, samples=BASE_SAMPLES, seed=7, duration_sec=BASE_DURATION_S,
                     channels=1)
        print(f"{'samples':>8} {'build s':>8} {'read_dataset s':>15} {'RSS MB':>7} "
              f"{'check s':>8} {'check MB':>9} {'pack s':>7} {'pack MB (largest process)':>26}")
        for total in (args.samples // 10, args.samples):
            root = Path(tmp, f"x{total}")
            started = time.perf_counter()
            replicate(base, root, max(1, total // BASE_SAMPLES), args.full_labels)
            built = time.perf_counter() - started
            seconds, rss = time_read(root, args.repeats)
            check_s, check_mb = watched([*cli, "check", str(root)])
            peaks["check"].append(check_mb)
            pack_s = pack_mb = float("nan")
            if not args.no_pack:
                pack_s, pack_mb = watched([*cli, "pack", str(root), str(Path(tmp, "out")),
                                           "--quiet", "--overwrite"])
                peaks["pack"].append(pack_mb)
            print(f"{total:>8} {built:>8.1f} {seconds:>15.2f} {rss:>7.0f} {check_s:>8.1f} "
                  f"{check_mb:>9.0f} {pack_s:>7.1f} {pack_mb:>26.0f}", flush=True)
    print(f"load average at end: {os.getloadavg()}")
    for name, (small, big) in ((n, p) for n, p in peaks.items() if len(p) == 2):
        print(f"  {'PASS' if big <= TARGET_RSS_MB else 'FAIL'}  {name}: every process <= "
              f"{TARGET_RSS_MB:.0f} MB at {args.samples} samples: {big:.0f} MB")
        print(f"  {'PASS' if big <= TARGET_FLAT * small else 'FAIL'}  {name}: flat, "
              f"{args.samples // 10} -> {args.samples} samples <= {TARGET_FLAT}x: "
              f"{small:.0f} -> {big:.0f} MB ({big / small:.2f}x)")


if __name__ == "__main__":
    main()
