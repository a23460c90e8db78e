"""The verification report, the manifest reader and the per-file check every copy shares.

`local_file_problems` is what both `verify` and `upload`'s pre-flight run: each file the
manifest lists must be a relative path inside the folder, present, of its size and (deep) of
its sha256.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import VerifyError
from ..format import MANIFEST, Manifest, pack_path_problem
from ..io import file_sha256

MAX_REPORTED = 50


@dataclass
class VerifyReport:
    """Every problem found in one copy of a pack, and what was looked at."""

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
    """The folder's manifest, parsed and checked by `Manifest.from_json` (a `VerifyError`
    naming the file and the fix otherwise)."""
    path = root / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        from ..source.checks import source_folder_hint  # only on this error: source/ is heavy

        hint = (source_folder_hint(root)
                or "an interrupted pack continues with `sousa-wds pack --resume`")
        raise VerifyError(
            f"{path} is missing: {root} is not a finished sousa-wds pack ({hint})") from None
    except OSError as exc:
        raise VerifyError(f"{path} is unreadable ({exc}); pack again with --overwrite") from exc
    return Manifest.from_json(raw, str(path))


def local_file_problems(
    root: Path, entries: Iterable[tuple[str, int, str]], *, deep: bool,
    skip_sha256: Container[str] = (),
) -> list[str]:
    """Each (path, bytes, sha256) the manifest lists, checked in `root`: a relative path
    inside the folder, present, that size and, with `deep`, that sha256 (hashed on a thread
    per core; `skip_sha256`: paths the caller hashes itself)."""
    problems = []
    to_hash: list[tuple[str, Path, str]] = []
    for rel, size, sha256 in entries:
        if rel != MANIFEST and pack_path_problem(rel):
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
        elif deep and rel not in skip_sha256:
            to_hash.append((rel, path, sha256))
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        actual_sha256 = pool.map(lambda item: file_sha256(item[1]), to_hash)
        problems += [f"{rel}: sha256 differs from the manifest (content changed)"
                     for (rel, _path, sha256), actual in zip(to_hash, actual_sha256)
                     if actual != sha256]
    return problems
