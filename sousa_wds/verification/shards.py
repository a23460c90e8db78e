"""Check what a split's data files hold against its metadata rows: tar shards, shard index,
or loose files.

How it works:
- Every shard is parsed with tarfile; member names are split with webdataset's own key rule,
  so a name WebDataset would read differently is caught. Each key must form one contiguous
  group of exactly flac/json/mid and match its metadata row: same shard, position, member
  offsets and sizes. JSON members must be strict JSON objects naming their key.
- With `deep`, a shard whose metadata rows pin every byte (`pinned_runs`: the tar framing
  pack writes, rebuilt from the rows, and each member's sha256) is read once against them,
  in runs a process per core can share; one digest per byte. If all match, so does
  everything the structure check parses and the shard's own sha256 (the manifest's), which is
  then not computed. Otherwise (damage, or a format without member digests) `check_shard`
  reads it in full: structure, then one pass feeding the shard's digest and each member's, so
  a damaged shard is reported the same way either way.
- `index/{split}.json` is parsed defensively (any bytes may be damaged): a document that is not
  UTF-8, not JSON, nested too deep or of the wrong shape is one named problem, and its shard
  list must match the manifest's shards, sizes, hashes and per-shard sample counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..format import (
    MEMBERS,
    TAR_BLOCK,
    FileEntry,
    index_path,
    key_problem,
    pack_path_problem,
    tar_framing,
)
from ..io import drop_cached, file_sha256, is_cached
from .report import VerifyReport

MEMBER_HASHES = {"flac": "flac_sha256", "mid": "mid_sha256", "json": "json_sha256"}


def check_shard(root: Path, entry: FileEntry, rows: list[dict], *, deep: bool) -> list[str]:
    """One tar shard against the metadata rows that point at it (and, with `deep`, against its
    manifest `entry`'s sha256); returns the problems found."""
    from webdataset.tariterators import base_plus_ext

    rel = entry.path
    report = VerifyReport(rel)
    expected = {r["key"]: r for r in rows}
    groups: list[tuple[str, dict[str, tarfile.TarInfo]]] = []
    started: set[str] = set()
    try:
        with tarfile.open(root / rel, "r:") as tar:
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
            hashed: list[tuple[str, str, tarfile.TarInfo, str]] = []
            for position, (key, members) in enumerate(groups):
                row = expected.pop(key, None)
                if _check_sample(tar, rel, position, key, members, row, report) and deep:
                    assert row is not None
                    hashed += [(key, ext, members[ext], row[column])
                               for ext, column in MEMBER_HASHES.items() if column in row]
        if deep:
            _check_digests(root / rel, entry, hashed, report)
    except (tarfile.TarError, OSError, EOFError) as exc:
        report.add(f"{rel}: not a readable tar ({exc}); after key "
                   f"{groups[-1][0] if groups else '(none)'}")
        return report.problems
    for key in expected:
        report.add(f"{rel}: key {key}: in the metadata but not in the shard")
    return report.problems


def _check_sample(
    tar: tarfile.TarFile, rel: str, position: int, key: str, members: dict[str, tarfile.TarInfo],
    row: dict | None, report: VerifyReport,
) -> bool:
    """Structure, position, offsets and JSON of one key group; False when its members or
    its row are missing (nothing to compare digests with)."""
    if sorted(members) != sorted(MEMBERS):
        report.add(f"{rel}: key {key}: members {sorted(members)}, expected {sorted(MEMBERS)}")
        return False
    if row is None:
        report.add(f"{rel}: key {key}: in the shard but not in the metadata (extra sample)")
        return False
    if row["index_in_shard"] != position:
        report.add(f"{rel}: key {key}: at position {position}, metadata says "
                   f"{row['index_in_shard']}")
    for ext, info in members.items():
        if (row[f"{ext}_offset"], row[f"{ext}_size"]) != (info.offset_data, info.size):
            report.add(f"{rel}: key {key}: .{ext} at {info.offset_data}+{info.size}, metadata "
                       f"says {row[f'{ext}_offset']}+{row[f'{ext}_size']}")
    problem = json_record_problem(_member_bytes(tar, members["json"]), key)
    if problem:
        report.add(f"{rel}: key {key}: .json {problem}")
    return True


HASH_BLOCK = 1 << 20  # bytes read at a time by the deep pass: small enough to stay in cache
DROP_EVERY = 32 << 20  # bytes read before they leave the page cache (`io.drop_cached`)


@dataclass(frozen=True)
class PinnedRun:
    """A run of consecutive samples of a shard, covering bytes [start, end): each member
    (name, size, data offset, sha256), and whether the run ends the shard."""

    start: int
    end: int
    members: tuple[tuple[str, int, int, str], ...]
    last: bool


def pinned_runs(entry: FileEntry, rows: list[dict], target: int) -> list[PinnedRun] | None:
    """The shard cut into runs of about `target` bytes whose metadata pins every byte, or
    None when the rows cannot (a format without member digests, keys or positions not as
    pack writes them): then `check_shard` reads the shard in full.

    The framing pack writes (`format.tar_framing`: headers, padding, the end), rebuilt from
    the rows, and each member's digest determine the whole file: if all match, so does
    everything `check_shard` parses (names, order, offsets, JSON content) and the shard's own
    sha256 (the manifest's), which then is not computed. Cheap and pure: the framing is built
    by the worker that checks the run (`run_matches`).
    """
    ordered = sorted(rows, key=lambda r: r["index_in_shard"])
    if (not ordered or [r["index_in_shard"] for r in ordered] != list(range(len(ordered)))
            or any(r.get(c) is None for r in ordered for c in MEMBER_HASHES.values())
            or any(key_problem(r["key"]) for r in ordered)):
        return None
    runs: list[PinnedRun] = []
    members: list[tuple[str, int, int, str]] = []
    start = 0
    for i, row in enumerate(ordered):
        members += [(f"{row['key']}.{ext}", row[f"{ext}_size"], row[f"{ext}_offset"],
                     row[MEMBER_HASHES[ext]]) for ext in MEMBERS]
        if i + 1 == len(ordered):
            runs.append(PinnedRun(start, entry.bytes, tuple(members), last=True))
        else:
            # The next sample's header (one block for the format's short names) starts here;
            # a longer header makes its run's framing differ, and the full check decides.
            end = ordered[i + 1]["flac_offset"] - TAR_BLOCK
            if end - start >= target:
                runs.append(PinnedRun(start, end, tuple(members), last=False))
                members, start = [], end
    return runs


def run_matches(path: Path, run: PinnedRun) -> bool:
    """Whether `path` holds exactly `run`'s bytes: framing compared, members hashed, one read."""
    framing, starts, end = tar_framing([(name, size) for name, size, _, _ in run.members],
                                       at=run.start, last=run.last)
    if end != run.end or starts != [offset for _, _, offset, _ in run.members]:
        return False
    digests = [hashlib.sha256() for _ in run.members]
    regions: list[tuple[int, int, hashlib._Hash | bytes]] = [
        (at, len(data), data) for at, data in framing]
    regions += [(offset, size, digest)
                for (_, size, offset, _), digest in zip(run.members, digests)]
    regions.sort(key=lambda region: region[0])
    _, same = _scan(path, regions, None)
    return same and all(digest.hexdigest() == sha
                        for (_, _, _, sha), digest in zip(run.members, digests))


def _check_digests(path: Path, entry: FileEntry,
                   hashed: list[tuple[str, str, tarfile.TarInfo, str]],
                   report: VerifyReport) -> None:
    """One read of the shard: its sha256 against the manifest, each member's against the
    metadata. A shard whose size differs is already reported by the file checks."""
    digests = [hashlib.sha256() for _ in hashed]
    regions = sorted(((m[2].offset_data, m[2].size, d) for m, d in zip(hashed, digests)),
                     key=lambda region: region[0])
    whole = hashlib.sha256()
    read, _ = _scan(path, regions, whole)
    if read == entry.bytes and whole.hexdigest() != entry.sha256:
        report.add(f"{entry.path}: sha256 differs from the manifest (content changed)")
    for (key, ext, _info, wanted), digest in zip(hashed, digests):
        if digest.hexdigest() != wanted:
            report.add(f"{entry.path}: key {key}: .{ext} sha256 differs from the metadata")


def _scan(path: Path, regions: list[tuple[int, int, hashlib._Hash | bytes]],
          whole: hashlib._Hash | None) -> tuple[int, bool]:
    """Read `path` once, each region's bytes fed to its digest or compared with its bytes.

    With `whole`, the whole file is read and fed to it too; without, only from the first
    region to the end of the last. Returns the end offset reached and whether every region
    was read in full and every compared one matched."""
    block = bytearray(HASH_BLOCK)
    view = memoryview(block)
    start = 0 if whole is not None or not regions else regions[0][0]
    stop = None if whole is not None or not regions else regions[-1][0] + regions[-1][1]
    first = 0  # first region not fully seen yet
    same = True
    with open(path, "rb", buffering=0) as fh:
        fd, end_of_read = fh.fileno(), stop if stop is not None else os.fstat(fh.fileno()).st_size
        # What this read brought into the page cache leaves it as the read goes, every
        # DROP_EVERY bytes, this read's range only (other processes read other runs). A window
        # whose last byte was cached before the read reached it was there already (a folder
        # read or verified just before): it stays.
        kept = start
        warm = is_cached(fd, min(kept + DROP_EVERY, end_of_read) - 1)
        fh.seek(start)
        while n := fh.readinto(block if stop is None else view[:min(HASH_BLOCK, stop - start)]):
            end = start + n
            if whole is not None:
                whole.update(view[:n])
            for i in range(first, len(regions)):
                lo, size, sink = regions[i]
                if lo >= end:
                    break
                a, b = max(lo, start), min(lo + size, end)
                if b > a:
                    if isinstance(sink, bytes):
                        same = same and view[a - start:b - start] == sink[a - lo:b - lo]
                    else:
                        sink.update(view[a - start:b - start])
                if lo + size <= end:
                    first = i + 1
            start = end
            if start - kept >= DROP_EVERY:
                if not warm:
                    drop_cached(fd, kept, start - kept)
                kept = start
                warm = is_cached(fd, min(kept + DROP_EVERY, end_of_read) - 1)
        if start > kept and not warm:
            drop_cached(fd, kept, start - kept)
    return start, same and first == len(regions)


def json_record_problem(data: bytes, key: str) -> str | None:
    """Why a `.json` member is not the strict JSON object of sample `key`, or None."""
    try:
        record = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return f"is not strict JSON ({type(exc).__name__}: {str(exc)[:80]})"
    if not isinstance(record, dict):
        return f"is a JSON {type(record).__name__}, not an object"
    if record.get("sample_id") != key:
        return f"says sample_id {str(record.get('sample_id'))[:80]!r}"
    return None


def _member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(info)
    if handle is None:
        raise tarfile.TarError(f"{info.name} is not a regular file")
    return handle.read()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def check_index(root: Path, split: str, shards: Sequence[FileEntry],
                rows_per_shard: Mapping[str, int], report: VerifyReport) -> None:
    """`index/{split}.json` lists exactly the manifest's shards, with their sizes, sha256 and
    sample counts."""
    rel = index_path(split)
    try:
        entries = _index_entries(root / rel)
    except ValueError as exc:
        report.add(f"{rel}: {exc}")
        return
    except OSError:
        return  # a missing index is reported by the file checks
    urls = [PurePosixPath(e["url"]).as_posix().removeprefix("../") for e in entries]
    wanted = [f.path for f in shards]
    if urls != wanted:
        report.add(f"{rel}: lists {urls[:5]}{' ...' if len(urls) > 5 else ''}, the manifest has "
                   f"{wanted[:5]}{' ...' if len(wanted) > 5 else ''}")
        return
    for entry, shard in zip(entries, shards, strict=True):
        listed = (entry["filesize"], entry["sha256"], entry["nsamples"])
        actual = (shard.bytes, shard.sha256, rows_per_shard.get(shard.path, 0))
        for name, a, b in zip(("filesize", "sha256", "nsamples"), listed, actual, strict=True):
            if a != b:
                report.add(f"{rel}: {shard.path}: {name} {a!r}, the manifest and metadata "
                           f"say {b!r}")


_INDEX_FIELDS = {"url": str, "filesize": int, "sha256": str, "nsamples": int}


def _index_entries(path: Path) -> list[dict[str, Any]]:
    """The shard list of an index file; ValueError saying what is wrong with its shape."""
    raw = path.read_bytes()
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    shardlist = doc.get("shardlist") if isinstance(doc, dict) else None
    if not isinstance(shardlist, list):
        raise ValueError("not a wids shard index (no 'shardlist' list)")
    for i, entry in enumerate(shardlist):
        if not isinstance(entry, dict):
            raise ValueError(f"shardlist[{i}] is not an object")
        for name, kind in _INDEX_FIELDS.items():
            value = entry.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"shardlist[{i}].{name} is {value!r}, not a {kind.__name__}")
    return shardlist


def check_loose(root: Path, rows: list[dict], report: VerifyReport, *, deep: bool) -> None:
    """Loose layout: each row's FLAC and MIDI file, by size and (deep) sha256."""
    for row in rows:
        for ext, name in (("flac", row["audio_filename"]), ("mid", row["midi_filename"])):
            if not isinstance(name, str) or pack_path_problem(name):
                report.add(f"metadata: key {row['key']}: {ext} file name {name!r} is not a "
                           "path inside the pack")
                continue
            path = root / name
            if not path.is_file():
                report.add(f"{name}: missing (key {row['key']})")
            elif path.stat().st_size != row[f"{ext}_size"]:
                report.add(f"{name}: size differs from the metadata (key {row['key']})")
            elif deep and MEMBER_HASHES[ext] in row and \
                    file_sha256(path) != row[MEMBER_HASHES[ext]]:
                report.add(f"{name}: sha256 differs from the metadata (key {row['key']})")


def shard_sample_counts(rows: Sequence[dict]) -> Counter[str]:
    return Counter(r["shard_path"] for r in rows)
