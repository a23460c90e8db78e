"""The verification report, the manifest reader and the per-file check every copy shares.

`local_file_problems` is what both `verify` and `upload`'s pre-flight run: each file the
manifest lists must be a relative path inside the folder, present, of its size and (deep) of
its sha256.
"""

from __future__ import annotations

from collections.abc import Iterable
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
        elif deep and file_sha256(path) != sha256:
            problems.append(f"{rel}: sha256 differs from the manifest (content changed)")
    return problems
