"""What an upload adds, skips and deletes, decided from plain values: no I/O, no Hub client.

How it works:
- `manifest_specs` turns the manifest into the files the Hub must end up serving (each with size
  and sha256), `manifest.json` itself last.
- `plan_upload` compares them with a listing of the remote repo: a file is skipped when the
  listing proves it identical (same size and sha256 for LFS/Xet files, same git blob id for
  regular ones), remote files the manifest does not list are stale (never `.gitattributes`).
- `RepoShape` counts what the Hub's limits count for the repo as it will be after the upload.
- `upload_patterns` and `deletion_paths` turn file lists into the few patterns and folder
  operations that keep a 100k-file upload or clean-up cheap.
- `remote_problems` is the verification: every way a listing (plus the hashes of bytes actually
  downloaded) differs from what the manifest promises; `leftover_problems` adds the stale files
  readers would take for data.
"""

from __future__ import annotations

import glob
import hashlib
import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..format import (
    FORMAT_FOLDERS,
    HUB_MAX_FILE_BYTES,
    HUB_MAX_FILES,
    HUB_MAX_FILES_PER_FOLDER,
    MANIFEST,
    Manifest,
)
from ..io import human_bytes

# Created by the Hub with every repo (LFS patterns); it is never ours to delete.
HUB_OWNED = frozenset({".gitattributes"})
# Lines of file names printed per plan section; the counts and totals are always complete.
MAX_LISTED = 20


@dataclass(frozen=True)
class FileSpec:
    """A file the manifest promises: the Hub must end up serving exactly these bytes."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RemoteFile:
    """A file of the remote listing. The Hub reports a sha256 for LFS/Xet files only; regular
    (small text) files have just their git blob id."""

    path: str
    size: int
    git_oid: str
    sha256: str | None


@dataclass(frozen=True)
class RemoteState:
    """One commit of the repo as listed: what plans and verifications compare against."""

    exists: bool
    private: bool
    commit: str | None
    files: Mapping[str, RemoteFile]


def manifest_specs(manifest: Manifest, raw: bytes) -> list[FileSpec]:
    """The manifest's files, then manifest.json itself (hashed from `raw`, its bytes: it cannot
    list itself)."""
    specs = [FileSpec(f.path, f.bytes, f.sha256) for f in manifest.files]
    return [*specs, FileSpec(MANIFEST, len(raw), hashlib.sha256(raw).hexdigest())]


def is_identical(spec: FileSpec, remote: RemoteFile | None, local_git_oid: str | None) -> bool:
    """Same bytes as far as the listing can tell, without downloading anything."""
    if remote is None or remote.size != spec.size:
        return False
    if remote.sha256 is not None:
        return remote.sha256 == spec.sha256
    return local_git_oid is not None and remote.git_oid == local_git_oid


def stale_files(expected: Iterable[str], remote: Mapping[str, RemoteFile]) -> list[RemoteFile]:
    """Remote files the manifest does not list (the Hub's own `.gitattributes` excepted)."""
    keep = set(expected) | HUB_OWNED
    return [remote[p] for p in sorted(remote) if p not in keep]


def leftovers(stale: Iterable[RemoteFile]) -> list[RemoteFile]:
    """The stale files in the format's folders: readers glob those folders (the card's
    `data/{split}-*.tar`, the loader), so a copy serving them is not the manifest's. The one
    rule of the upload plan, `upload` and `verify hf://`; stale files elsewhere (a LICENSE)
    are fine."""
    return [entry for entry in stale if entry.path.split("/", 1)[0] in FORMAT_FOLDERS]


def leftover_problems(expected: Iterable[str], remote: Mapping[str, RemoteFile]) -> list[str]:
    """`leftovers` of a listing, one problem each."""
    return [f"{entry.path}: on the Hub but not in the manifest (left over from another "
            "upload? `sousa-wds upload --delete-stale` removes it)"
            for entry in leftovers(stale_files(expected, remote))]


def deletion_paths(stale: Iterable[str], remote: Iterable[str]) -> list[str]:
    """Paths for one delete commit: a folder whose every file is stale becomes `folder/`.

    An old loose layout is tens of thousands of files under `audio/` and `midi/`; two folder
    operations make a small commit where one operation per file could time out.
    """
    stale = sorted(set(stale))
    in_folder: Counter[str] = Counter()
    stale_in_folder: Counter[str] = Counter()
    for counter, paths in ((in_folder, remote), (stale_in_folder, stale)):
        for path in paths:
            for parent in PurePosixPath(path).parents:
                if str(parent) != ".":
                    counter[str(parent)] += 1
    chosen: list[str] = []
    for path in stale:
        parents = [str(p) for p in reversed(PurePosixPath(path).parents) if str(p) != "."]
        whole = next((p for p in parents if stale_in_folder[p] == in_folder[p]), None)
        target = f"{whole}/" if whole else path
        if not chosen or chosen[-1] != target:
            chosen.append(target)
    return chosen


def remote_problems(
    expected: Sequence[FileSpec], remote: Mapping[str, RemoteFile], served: Mapping[str, str]
) -> list[str]:
    """Every way the remote copy differs from `expected`; `served` maps a path to the sha256
    of the bytes the Hub actually returned, for the files that were downloaded."""
    problems = []
    for spec in expected:
        entry = remote.get(spec.path)
        if entry is None:
            problems.append(f"{spec.path}: missing on the Hub")
        elif entry.size != spec.size:
            problems.append(
                f"{spec.path}: {entry.size} bytes on the Hub, manifest says {spec.size}"
            )
        elif entry.sha256 is not None and entry.sha256 != spec.sha256:
            problems.append(f"{spec.path}: sha256 on the Hub differs from the manifest")
        elif spec.path in served and served[spec.path] != spec.sha256:
            problems.append(
                f"{spec.path}: the Hub serves bytes whose sha256 differs from the manifest "
                "although its listing matches; delete the file on the Hub (`hf repos "
                "delete-files`) and upload again"
            )
    return problems


def to_download(expected: Sequence[FileSpec], remote: RemoteState, *, deep: bool) -> list[str]:
    """Paths whose bytes a verification must read: regular files (the listing has no sha256
    for them) and, with `deep`, every file present with the right size."""
    paths = []
    for spec in expected:
        entry = remote.files.get(spec.path)
        if entry is not None and entry.size == spec.size and (deep or entry.sha256 is None):
            paths.append(spec.path)
    return paths


@dataclass(frozen=True)
class RepoShape:
    """What the Hub's limits count, for the repo as it will be after the upload."""

    files: int
    biggest_folder: str
    biggest_folder_files: int
    biggest_file: str
    biggest_file_bytes: int

    @classmethod
    def of(cls, sizes: Mapping[str, int]) -> RepoShape:
        per_folder = Counter(posixpath.dirname(p) or "/" for p in sizes)
        folder, in_folder = max(per_folder.items(), key=lambda kv: (kv[1], kv[0]),
                                default=("/", 0))
        biggest = max(sizes, key=lambda p: (sizes[p], p), default="")
        return cls(len(sizes), folder, in_folder, biggest, sizes.get(biggest, 0))

    def problems(self) -> list[str]:
        found = []
        if self.files > HUB_MAX_FILES:
            found.append(f"{self.files:,} files in the repo; the Hub allows {HUB_MAX_FILES:,}")
        if self.biggest_folder_files > HUB_MAX_FILES_PER_FOLDER:
            found.append(f"{self.biggest_folder_files:,} files in {self.biggest_folder}; the Hub "
                         f"allows {HUB_MAX_FILES_PER_FOLDER:,} per folder")
        if self.biggest_file_bytes > HUB_MAX_FILE_BYTES:
            found.append(f"{self.biggest_file} is {human_bytes(self.biggest_file_bytes)}; the Hub "
                         f"allows {human_bytes(HUB_MAX_FILE_BYTES)} per file")
        return found

    def __str__(self) -> str:
        return (f"{self.files:,} files in the repo (limit {HUB_MAX_FILES:,}); "
                f"{self.biggest_folder_files:,} in {self.biggest_folder} "
                f"(limit {HUB_MAX_FILES_PER_FOLDER:,} per folder); largest file "
                f"{human_bytes(self.biggest_file_bytes)} (limit {human_bytes(HUB_MAX_FILE_BYTES)})")


@dataclass(frozen=True)
class UploadPlan:
    """Which files an upload adds, skips and deletes; printable, computed without I/O.

    `card` says what happens to the dataset card (see `publish.repo_card`); `card_problem`
    is set when the card cannot be made to name the target repo, which blocks the upload.
    """

    repo_url: str
    add: tuple[FileSpec, ...]
    skip: tuple[FileSpec, ...]
    stale: tuple[RemoteFile, ...]
    delete_stale: bool
    shape: RepoShape
    remote_note: str | None = None  # why the plan assumes an empty remote
    repo_exists: bool | None = None  # None: the Hub was not asked
    card: str | None = None
    card_problem: str | None = None
    remote_refusal: str | None = None  # what the Hub said that refuses the real run

    @property
    def problems(self) -> list[str]:
        """What refuses the upload, each with its fix: the dry run shows the same."""
        problems = [f"{p}: pack with larger shards (--shard-size) or without --no-sharding, "
                    "or delete stale files (--delete-stale)" for p in self.shape.problems()]
        if self.remote_refusal:
            problems.append(self.remote_refusal)
        if self.card_problem:
            problems.append(self.card_problem)
        # Kept, they would make the upload fail its verification: refused before it sends.
        if kept := ([] if self.delete_stale else [f.path for f in leftovers(self.stale)]):
            names = ", ".join(kept[:MAX_LISTED]) + (" ..." if len(kept) > MAX_LISTED else "")
            problems.append(
                f"{len(kept)} file(s) on the Hub in the format's folders are not in this "
                f"pack ({names}): readers of those folders would take them for its own. Upload "
                "with --delete-stale (it deletes them once the new files verify) or to another "
                "repo")
        return problems

    def __str__(self) -> str:
        lines = [f"plan for {self.repo_url}"]
        if self.remote_note:
            lines.append(f"  the Hub was not asked: {self.remote_note}")
            lines.append("  local plan: every file counted as new")
        elif self.repo_exists is False:
            lines.append("  the repo does not exist yet: the upload creates it")
        if self.card:
            lines.append(f"  card: {self.card}")
        lines += section("add", "new or changed", [(f.path, f.size) for f in self.add])
        lines += section("skip", "already identical on the Hub",
                         [(f.path, f.size) for f in self.skip], listed=False)
        verb = "delete" if self.delete_stale else "stale"
        why = ("on the Hub, not in the manifest" if self.delete_stale else
               "on the Hub, not in the manifest: kept, --delete-stale deletes them")
        lines += section(verb, why, [(f.path, f.size) for f in self.stale])
        lines.append(f"  after upload: {self.shape}")
        lines += [f"  refused: {p}" for p in self.problems]
        return "\n".join(lines)


def plan_upload(
    repo_url: str,
    expected: Sequence[FileSpec],
    remote: RemoteState | None,
    local_git_oids: Mapping[str, str],
    *,
    delete_stale: bool,
    remote_note: str | None = None,
    card: str | None = None,
    card_problem: str | None = None,
    remote_refusal: str | None = None,
) -> UploadPlan:
    """Split `expected` into add/skip against `remote` (None: not known) and list stale files.

    `local_git_oids` holds the git blob id of each local file whose remote copy is a regular
    file of the same size: the only hash the Hub lists for those.
    """
    files = remote.files if remote is not None else {}
    add, skip = [], []
    for spec in expected:
        same = is_identical(spec, files.get(spec.path), local_git_oids.get(spec.path))
        (skip if same else add).append(spec)
    stale = stale_files((f.path for f in expected), files)
    after = {f.path: f.size for f in expected}
    after |= {p: f.size for p, f in files.items() if p in HUB_OWNED}
    if not delete_stale:
        after |= {f.path: f.size for f in stale}
    return UploadPlan(repo_url, tuple(add), tuple(skip), tuple(stale), delete_stale,
                      RepoShape.of(after), remote_note,
                      None if remote is None else remote.exists, card, card_problem,
                      remote_refusal)


def git_oid_candidates(expected: Sequence[FileSpec], remote: RemoteState | None) -> list[str]:
    """Paths whose remote copy is a regular file of the same size: only their git blob id
    can prove them identical, so only they are hashed that way locally."""
    if remote is None:
        return []
    return [spec.path for spec in expected
            if (entry := remote.files.get(spec.path)) is not None
            and entry.sha256 is None and entry.size == spec.size]


def upload_patterns(upload: Iterable[str], local: Iterable[str]) -> tuple[list[str], list[str]]:
    """`allow_patterns` and `ignore_patterns` that make `upload_folder` take exactly `upload`.

    huggingface_hub matches every local file against every pattern, so one pattern per file
    costs files² matches (10^10 for a 100k-file loose layout). Instead: one pattern per
    top-level entry of `upload`, and an ignore pattern for each local file those would also
    take (a stray file, a `.partial` left by an interrupted pack). Names are glob-escaped.
    """
    upload = set(upload)
    tops = {p.split("/", 1)[0]: "/" in p for p in sorted(upload)}  # name -> is a folder
    allow = [glob.escape(top) + ("/*" if is_dir else "") for top, is_dir in tops.items()]
    ignore = []
    for path in sorted(local):
        top, _, below = path.partition("/")
        if top in tops and bool(below) == tops[top] and path not in upload:
            ignore.append(glob.escape(path))
    return allow, ignore


def section(verb: str, why: str, items: Sequence[tuple[str, int]], listed: bool = True
            ) -> list[str]:
    """Lines of one plan section: a count and total, then up to MAX_LISTED names."""
    total = human_bytes(sum(s for _, s in items))
    lines = [f"  {verb:<6} {len(items):>6,} files {total:>9}  ({why})"]
    if listed:
        lines += [f"           {path}  {human_bytes(size)}" for path, size in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"           ... and {len(items) - MAX_LISTED:,} more")
    return lines
