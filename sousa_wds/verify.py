"""`sousa-wds verify`: check a packed folder against its manifest, shard by shard.

How it works:
- The manifest is the truth: every file it lists must exist with its size (and, with `deep`,
  its sha256); a shard or sample it does not know is a problem too.
- Every shard is parsed with tarfile; member names are split with webdataset's own key rule,
  so a name WebDataset would read differently is caught here. Each key must form one
  contiguous group of exactly flac/json/mid, appear once in the whole dataset, and match its
  metadata row: same shard, position and member offsets and sizes. JSON members must be
  strict JSON. With `deep`, each FLAC's sha256 is compared with `flac_sha256`.
- Problems are collected, not raised, so one run names every broken file and key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import VerifyError
from .format import FORMAT_FOLDERS, MANIFEST, MEMBERS, SPLITS, Manifest, index_path, metadata_path
from .io import file_sha256

MAX_REPORTED = 50
# The metadata columns verify compares; reading only these keeps 100k rows cheap.
ROW_COLUMNS = ["key", "shard_path", "index_in_shard", "flac_offset", "flac_size", "json_offset",
               "json_size", "mid_offset", "mid_size", "flac_sha256", "audio_filename",
               "midi_filename"]


@dataclass
class VerifyReport:
    target: str
    problems: list[str] = field(default_factory=list)
    files: int = 0
    shards: int = 0
    samples: int = 0
    deep: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str) -> None:
        self.problems.append(problem)

    def __str__(self) -> str:
        what = (f"{self.files} files, {self.shards} shards, {self.samples} samples"
                + (", sha256 checked" if self.deep else ""))
        if self.ok:
            return f"{self.target}: OK ({what})"
        shown = self.problems[:MAX_REPORTED]
        more = len(self.problems) - len(shown)
        lines = [f"{self.target}: {len(self.problems)} problem(s) ({what})"]
        lines += [f"  - {p}" for p in shown]
        if more:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)


def load_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VerifyError(
            f"{path} is missing: {root} is not a finished sousa-wds pack (an interrupted pack "
            "continues with `sousa-wds pack --resume`)"
        ) from None
    except OSError as exc:
        raise VerifyError(f"{path} is unreadable ({exc}); pack again with --overwrite") from exc
    return Manifest.from_json(raw, str(path))


def local_file_problems(
    root: Path, entries: Iterable[tuple[str, int, str]], *, deep: bool
) -> list[str]:
    """Each (path, bytes, sha256) the manifest lists, checked in `root`: a relative path
    inside the folder, present, that size and, with `deep`, that sha256."""
    problems = []
    for rel, size, sha256 in entries:
        if rel.startswith("/") or ".." in PurePosixPath(rel).parts or "\\" in rel:
            problems.append(f"{rel}: not a relative path inside the folder")
            continue
        path = root / rel
        try:
            actual = path.stat().st_size
        except OSError:
            problems.append(f"{rel}: missing")
            continue
        if actual != size:
            problems.append(f"{rel}: {actual} bytes, manifest says {size}")
        elif deep and file_sha256(path) != sha256:
            problems.append(f"{rel}: sha256 differs from the manifest (content changed)")
    return problems


def check_files(root: Path, manifest: Manifest, report: VerifyReport, *, deep: bool) -> None:
    """Every manifest file (see local_file_problems); extra files in our folders."""
    entries = [(f.path, f.bytes, f.sha256) for f in manifest.files]
    problems = local_file_problems(root, entries, deep=deep)
    report.files = len(entries) - sum(p.endswith(": missing") for p in problems)
    for problem in problems:
        report.add(problem)
    listed = {rel for rel, _, _ in entries}
    for folder in FORMAT_FOLDERS:
        for dirpath, _dirs, files in os.walk(root / folder):
            for name in files:
                rel = Path(dirpath, name).relative_to(root).as_posix()
                if rel not in listed:
                    report.add(f"{rel}: not in the manifest (left over from another pack?)")


def verify(
    target: str | os.PathLike, *, deep: bool = False, progress: bool = False
) -> VerifyReport:
    """Verify the packed folder `target`; the report lists every problem found."""
    root = Path(target).absolute()
    if not root.is_dir():
        raise VerifyError(f"{root}: no such folder")
    manifest = load_manifest(root)
    report = VerifyReport(str(root), deep=deep)
    check_files(root, manifest, report, deep=deep)
    sizes = {f.path: f.bytes for f in manifest.files}
    seen: Counter[str] = Counter()
    for split in SPLITS:
        meta_file = root / metadata_path(split)
        if not meta_file.is_file():
            continue  # already reported as missing
        try:
            rows = pq.ParquetFile(meta_file).read(columns=ROW_COLUMNS).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            report.add(f"{metadata_path(split)}: unreadable ({str(exc).splitlines()[0]})")
            continue
        counts = manifest.splits.get(split)
        if counts is None:
            report.add(f"{MANIFEST}: no sample count for split {split}")
        elif len(rows) != counts.samples:
            report.add(f"{metadata_path(split)}: {len(rows)} rows, manifest says "
                       f"{counts.samples}")
        seen.update(r["key"] for r in rows)
        if manifest.layout == "loose":
            _check_loose(root, rows, report, deep=deep)
            continue
        by_shard: dict[str, list[dict]] = {}
        for row in rows:
            by_shard.setdefault(row["shard_path"], []).append(row)
        shard_paths = sorted(p for p in sizes if p.startswith(f"data/{split}-"))
        _check_index(root, split, shard_paths, report)
        for rel in _progress(shard_paths, sizes, progress):
            report.shards += 1
            _check_shard(root, rel, by_shard.pop(rel, []), report, deep=deep)
        for rel, orphans in by_shard.items():
            report.add(f"{metadata_path(split)}: {len(orphans)} rows point at {rel}, which is "
                       f"not a shard of the manifest (first key {orphans[0]['key']})")
    for key, count in sorted(seen.items()):
        if count > 1:
            report.add(f"key {key}: {count} metadata rows (must be exactly one)")
    report.samples = len(seen)
    return report


def _progress(paths: list[str], sizes: dict[str, int], enabled: bool) -> Iterable[str]:
    if not enabled:
        return paths
    from tqdm import tqdm

    return tqdm(paths, desc="verifying shards", unit="shard")


def _check_index(root: Path, split: str, shard_paths: list[str], report: VerifyReport) -> None:
    path = root / index_path(split)
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return  # a missing or damaged index is reported by the size/hash checks
    urls = [Path(e["url"]).as_posix().removeprefix("../") for e in index.get("shardlist", [])]
    if urls != shard_paths:
        report.add(f"{index_path(split)}: lists {urls}, the manifest has {shard_paths}")


def _check_shard(
    root: Path, rel: str, rows: list[dict], report: VerifyReport, *, deep: bool
) -> None:
    from webdataset.tariterators import base_plus_ext

    path = root / rel
    if not path.is_file():
        return  # reported as missing
    expected = {r["key"]: r for r in rows}
    groups: list[tuple[str, dict[str, tarfile.TarInfo]]] = []
    started: set[str] = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                key, ext = base_plus_ext(info.name)
                if key is None:
                    report.add(f"{rel}: member {info.name!r} has no WebDataset key")
                    continue
                if groups and groups[-1][0] == key:
                    members = groups[-1][1]
                    if ext in members:
                        report.add(f"{rel}: key {key}: member .{ext} appears twice")
                    members[ext] = info
                else:
                    if key in started:
                        report.add(f"{rel}: key {key}: its members are not contiguous")
                    started.add(key)
                    groups.append((key, {ext: info}))
            for position, (key, members) in enumerate(groups):
                _check_sample(tar, rel, position, key, members, expected.pop(key, None),
                              report, deep=deep)
    except (tarfile.TarError, OSError, EOFError) as exc:
        report.add(f"{rel}: not a readable tar ({exc}); after key "
                   f"{groups[-1][0] if groups else '(none)'}")
        return
    for key in expected:
        report.add(f"{rel}: key {key}: in the metadata but not in the shard")


def _check_sample(
    tar: tarfile.TarFile, rel: str, position: int, key: str, members: dict[str, tarfile.TarInfo],
    row: dict | None, report: VerifyReport, *, deep: bool,
) -> None:
    if sorted(members) != sorted(MEMBERS):
        report.add(f"{rel}: key {key}: members {sorted(members)}, expected {sorted(MEMBERS)}")
        return
    if row is None:
        report.add(f"{rel}: key {key}: in the shard but not in the metadata (extra sample)")
        return
    if row["index_in_shard"] != position:
        report.add(f"{rel}: key {key}: at position {position}, metadata says "
                   f"{row['index_in_shard']}")
    for ext, info in members.items():
        if (row[f"{ext}_offset"], row[f"{ext}_size"]) != (info.offset_data, info.size):
            report.add(f"{rel}: key {key}: .{ext} at {info.offset_data}+{info.size}, metadata "
                       f"says {row[f'{ext}_offset']}+{row[f'{ext}_size']}")
    try:
        record = json.loads(_member_bytes(tar, members["json"]), parse_constant=_reject_constant)
    except ValueError as exc:
        report.add(f"{rel}: key {key}: .json is not strict JSON ({exc})")
    else:
        if record.get("sample_id") != key:
            report.add(f"{rel}: key {key}: .json says sample_id {record.get('sample_id')!r}")
    if deep:
        digest = hashlib.sha256(_member_bytes(tar, members["flac"])).hexdigest()
        if digest != row["flac_sha256"]:
            report.add(f"{rel}: key {key}: .flac sha256 differs from the metadata")


def _member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(info)
    if handle is None:
        raise tarfile.TarError(f"{info.name} is not a regular file")
    return handle.read()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _check_loose(root: Path, rows: list[dict], report: VerifyReport, *, deep: bool) -> None:
    for row in rows:
        for ext, name in (("flac", row["audio_filename"]), ("mid", row["midi_filename"])):
            path = root / name
            if not path.is_file():
                report.add(f"{name}: missing (key {row['key']})")
            elif path.stat().st_size != row[f"{ext}_size"]:
                report.add(f"{name}: size differs from the metadata (key {row['key']})")
            elif deep and ext == "flac" and file_sha256(path) != row["flac_sha256"]:
                report.add(f"{name}: sha256 differs from the metadata (key {row['key']})")
