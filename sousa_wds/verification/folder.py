"""`verify(OUT)`: check a packed folder against its manifest, shard by shard.

How it works:
- The manifest is the truth: every file it lists must exist with its size (and, with `deep`,
  its sha256); a file in the format's folders that it does not list is a problem too.
- The metadata of each split is read (only the columns verify compares) and every row's value
  types are checked, so damaged Parquet pages are named instead of raising later.
- Each split's data (shards and index, or loose files) is compared with its rows
  (`verification.shards`), every key must appear once in the whole pack, and the manifest's own
  fields must describe the folder (`verification.consistency`).
- Problems are collected, not raised, so one run names every broken file and key; only a
  missing or unparseable manifest raises `VerifyError`, since nothing can be checked without it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..errors import VerifyError
from ..format import FORMAT_FOLDERS, MANIFEST, SPLITS, FileEntry, Manifest, metadata_path
from ..parallel import process_map
from .consistency import check_manifest_fields
from .report import VerifyReport, load_manifest, local_file_problems
from .shards import (
    PinnedRun,
    check_index,
    check_loose,
    check_shard,
    pinned_runs,
    run_matches,
    shard_sample_counts,
)

# The metadata columns verify compares, with the Python type each value must have.
ROW_COLUMNS: dict[str, type] = {
    "key": str, "shard_path": str, "index_in_shard": int, "flac_offset": int, "flac_size": int,
    "json_offset": int, "json_size": int, "mid_offset": int, "mid_size": int, "flac_sha256": str,
    "audio_filename": str, "midi_filename": str,
}
# Columns that are null in the loose layout (no tar, no JSON member).
LOOSE_NULLS = frozenset({"shard_path", "index_in_shard", "flac_offset", "json_offset",
                         "json_size", "json_sha256", "mid_offset"})
# Member hashes added by format version 2, compared by `deep` when the metadata has them.
EXTRA_HASH_COLUMNS = ("mid_sha256", "json_sha256")
MAX_ROW_PROBLEMS = 5

Progress = Callable[[int, int], None]  # (shards checked, shards in the pack)


def verify(target: str | os.PathLike, *, deep: bool = False,
           progress: Progress | None = None) -> VerifyReport:
    """Verify the packed folder `target`; the report lists every problem found."""
    root = Path(target).absolute()
    if not root.is_dir():
        raise VerifyError(f"{os.fspath(target)}: no such folder; verify checks a local packed "
                          "folder, or a Hub copy given as hf://datasets/USER/NAME[@REVISION]")
    manifest = load_manifest(root)
    report = VerifyReport(str(root), deep=deep)
    if (root / MANIFEST).read_bytes() != manifest.to_json():
        report.add(f"{MANIFEST}: not the bytes pack writes for its content (edited or damaged "
                   "after packing); pack again with --overwrite")
    problems: list[str] = []
    rows_by_split = {}
    for split in SPLITS:
        rows = _read_rows(root, split, manifest.layout, problems)
        if rows is not None:
            rows_by_split[split] = rows
    # The shards of a readable split are hashed by their shard check, in the same read.
    hashed_there = {f.path for split in rows_by_split for f in _split_shards(manifest, split)
                    } if manifest.layout == "shards" else set()
    _check_files(root, manifest, report, deep=deep, hashed_elsewhere=hashed_there)
    for problem in problems:
        report.add(problem)
    if manifest.layout == "loose":
        for rows in rows_by_split.values():
            check_loose(root, rows, report, deep=deep)
    else:
        _check_shards(root, manifest, rows_by_split, report, deep=deep, progress=progress)
    seen = Counter(r["key"] for rows in rows_by_split.values() for r in rows)
    for key, count in sorted(seen.items()):
        if count > 1:
            report.add(f"key {key}: {count} metadata rows (must be exactly one)")
    report.samples = len(seen)
    check_manifest_fields(manifest, rows_by_split, report)
    return report


def _check_files(root: Path, manifest: Manifest, report: VerifyReport, *, deep: bool,
                 hashed_elsewhere: set[str]) -> None:
    """Every manifest file (see local_file_problems); extra files in our folders."""
    entries = [(f.path, f.bytes, f.sha256) for f in manifest.files]
    problems = local_file_problems(root, entries, deep=deep, skip_sha256=hashed_elsewhere)
    report.files = len(entries) - sum(p.endswith(": missing") for p in problems)
    for problem in problems:
        report.add(problem)
    for folder in FORMAT_FOLDERS:
        for dirpath, _dirs, files in os.walk(root / folder):
            for name in files:
                rel = Path(dirpath, name).relative_to(root).as_posix()
                if manifest.file(rel) is None:
                    report.add(f"{rel}: not in the manifest (left over from another pack?)")


def _read_rows(root: Path, split: str, layout: str, report: list[str]) -> list[dict] | None:
    """The split's metadata rows whose values all have the expected types; None when the
    file is missing (reported by the file checks) or unreadable. Bad rows are reported and
    left out."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rel = metadata_path(split)
    if not (root / rel).is_file():
        return None
    try:
        parquet = pq.ParquetFile(root / rel)
        extra = [c for c in EXTRA_HASH_COLUMNS if c in parquet.schema_arrow.names]
        rows = parquet.read(columns=[*ROW_COLUMNS, *extra]).to_pylist()
    except (OSError, ValueError, pa.ArrowException) as exc:
        report.append(f"{rel}: unreadable ({str(exc).splitlines()[0] if str(exc) else exc!r})")
        return None
    good, bad = [], []
    for i, row in enumerate(rows):
        problem = _row_problem(row, layout, extra)
        if problem:
            bad.append(f"row {i}: {problem}")
        else:
            good.append(row)
    report += [f"{rel}: {problem}" for problem in bad[:MAX_ROW_PROBLEMS]]
    if len(bad) > MAX_ROW_PROBLEMS:
        report.append(f"{rel}: ... and {len(bad) - MAX_ROW_PROBLEMS} more damaged rows")
    return good


def _row_problem(row: dict, layout: str, extra: list[str]) -> str | None:
    columns = {**ROW_COLUMNS, **dict.fromkeys(extra, str)}
    for name, kind in columns.items():
        value = row[name]
        if value is None and layout == "loose" and name in LOOSE_NULLS:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{name} is {repr(value)[:40]}, not a {kind.__name__}"
        if kind is int and value < 0:
            return f"{name} is negative ({value})"
    return None


def _split_shards(manifest: Manifest, split: str) -> list[FileEntry]:
    return [f for f in manifest.files if f.path.startswith(f"data/{split}-")]


def _check_shards(root: Path, manifest: Manifest, rows_by_split: dict[str, list[dict]],
                  report: VerifyReport, *, deep: bool, progress: Progress | None) -> None:
    """Each split's index, then every shard against its rows; problems are reported in shard
    order whatever order the workers finish in."""
    jobs: list[tuple[FileEntry, list[dict]]] = []
    for split, rows in rows_by_split.items():
        by_shard: dict[str, list[dict]] = {}
        for row in rows:
            by_shard.setdefault(row["shard_path"], []).append(row)
        shards = _split_shards(manifest, split)
        report.shards += len(shards)
        check_index(root, split, shards, shard_sample_counts(rows), report)
        for entry in shards:
            rows_here = by_shard.pop(entry.path, [])
            if (root / entry.path).is_file():  # a missing one is reported by the file checks
                jobs.append((entry, rows_here))
        for rel, orphans in by_shard.items():
            report.add(f"{metadata_path(split)}: {len(orphans)} rows point at {rel}, which is "
                       f"not a shard of the {MANIFEST} (first key {orphans[0]['key']})")
    total = sum(1 for f in manifest.files if f.path.startswith("data/"))

    def step(done: int) -> None:
        if progress is not None:
            progress(done, total)

    for problems in _shard_problems(root, jobs, deep=deep, progress=step):
        for problem in problems:
            report.add(problem)


# Deep runs: about this many per worker, so one large shard does not leave a core idle.
RUNS_PER_WORKER = 4
MIN_RUN_BYTES = 32 << 20


def _shard_problems(root: Path, jobs: list[tuple[FileEntry, list[dict]]], *, deep: bool,
                    progress: Callable[[int], None]) -> list[list[str]]:
    """Each job's problems, in job order; `progress(shards done)` as they finish.

    Deep: shards whose rows pin every byte (`pinned_runs`) are read first, in runs of even
    size over a process per core; the rest, and any that did not match, get the full
    `check_shard`. Processes, not threads: a thread parsing tar headers holds the GIL the
    other needs between two hashed blocks (2.3 GB: 1.9-2.3 s with two threads, 1.5-1.7 s with
    two processes, 3.1 s in one thread).
    """
    workers = os.cpu_count() or 1
    target = max(MIN_RUN_BYTES, sum(entry.bytes for entry, _ in jobs)
                 // (workers * RUNS_PER_WORKER))
    plans = [pinned_runs(entry, rows, target) if deep else None for entry, rows in jobs]
    runs = [(i, run) for i, plan in enumerate(plans) if plan for run in plan]
    results: list[list[str]] = [[] for _ in jobs]
    done = 0
    died = VerifyError(f"a verify process died while reading the shards of {root} (killed or "
                       "out of memory); run verify again")
    with process_map(min(workers, len(runs) + len(jobs)), died) as run_all:
        matched = [plan is not None for plan in plans]
        left = Counter(i for i, _ in runs)
        for (i, _), same in zip(runs, run_all(_run_job, [(root / jobs[i][0].path, run)
                                                         for i, run in runs])):
            matched[i] = matched[i] and same
            left[i] -= 1
            if not left[i] and matched[i]:
                done += 1
                progress(done)
        full = [i for i, ok in enumerate(matched) if not ok]
        for i, problems in zip(full, run_all(_check_shard_job, [(root, *jobs[i], deep)
                                                                for i in full])):
            results[i] = problems
            done += 1
            progress(done)
    return results


def _run_job(job: tuple[Path, PinnedRun]) -> bool:
    return run_matches(*job)


def _check_shard_job(job: tuple[Path, FileEntry, list[dict], bool]) -> list[str]:
    root, entry, rows, deep = job
    return check_shard(root, entry, rows, deep=deep)
