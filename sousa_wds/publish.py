"""`sousa-wds upload` and `sousa-wds verify hf://…`: publish a packed folder on the Hub.

How it works:
- Pre-flight, before any write request: the folder matches its manifest (sizes; sha256 with
  `deep`), the repo will fit the Hub's limits, and a write token is available and accepted
  (`whoami`). Each failure is one `UploadError` saying how to fix it.
- Planning is pure: `plan_upload` takes the files the manifest promises and the remote listing
  and says which files to add, which are already identical on the Hub (same size and sha256 for
  LFS files, same git blob id for regular ones) and which remote files are stale. `dry_run`
  stops there; without a token or a network it plans against an empty remote and says so.
- The transfer is huggingface_hub's `upload_folder` (with Xet: streamed, multi-commit; over
  LFS: one commit), limited to the manifest's files by patterns. `manifest.json` follows in its
  own commit, so a remote copy with a manifest holds every file it lists. Resuming is the
  library's: a rerun compares content hashes with the remote and sends only what is missing.
- Verification reads one pinned commit: every expected path, size and LFS sha256 from the
  listing, and the bytes of regular files (small; the Hub lists no sha256 for them). `deep`
  downloads and hashes every file. `verify_remote` runs the same check from the remote manifest.
- Stale remote files (not in the manifest; never `.gitattributes`) are listed; `delete_stale`
  removes them in one commit once the upload verified, whole folders collapsed to one operation.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import posixpath
import sys
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import SousaWdsError, UploadError, VerifyError
from .format import (
    FORMAT_FOLDERS,
    HUB_MAX_FILE_BYTES,
    HUB_MAX_FILES,
    HUB_MAX_FILES_PER_FOLDER,
    MANIFEST,
    Manifest,
)
from .io import HASH_CHUNK, human_bytes, stream_sha256
from .verify import VerifyReport, load_manifest, local_file_problems

if TYPE_CHECKING:
    from huggingface_hub import HfApi

REPO_TYPE = "dataset"
DEFAULT_REVISION = "main"
# Created by the Hub with every repo (LFS patterns); it is never ours to delete.
HUB_OWNED = frozenset({".gitattributes"})
# Lines of file names printed per plan section; the counts and totals are always complete.
MAX_LISTED = 20
# Problems quoted in a one-line pre-flight error; the rest are counted.
MAX_QUOTED = 5
LOGIN_HELP = (
    "log in with `hf auth login`, or set HF_TOKEN to a write token from "
    "https://huggingface.co/settings/tokens"
)
RESUME_HELP = "files already sent stay on the Hub: rerun the same command to resume"


# --- What is compared -------------------------------------------------------------------------


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


# --- Hub limits ---------------------------------------------------------------------------------


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


# --- The plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadPlan:
    """Which files an upload adds, skips and deletes; printable, computed without I/O."""

    repo_url: str
    add: tuple[FileSpec, ...]
    skip: tuple[FileSpec, ...]
    stale: tuple[RemoteFile, ...]
    delete_stale: bool
    shape: RepoShape
    remote_note: str | None = None  # why the plan assumes an empty remote
    repo_exists: bool | None = None  # None: the Hub was not asked

    @property
    def problems(self) -> list[str]:
        return self.shape.problems()

    def __str__(self) -> str:
        lines = [f"plan for {self.repo_url}"]
        if self.remote_note:
            lines.append(f"  the Hub was not asked: {self.remote_note}")
            lines.append("  local plan: every file counted as new")
        elif self.repo_exists is False:
            lines.append("  the repo does not exist yet: the upload creates it")
        lines += _section("add", "new or changed", [(f.path, f.size) for f in self.add])
        lines += _section("skip", "already identical on the Hub",
                          [(f.path, f.size) for f in self.skip], listed=False)
        verb = "delete" if self.delete_stale else "stale"
        why = ("on the Hub, not in the manifest" if self.delete_stale else
               "on the Hub, not in the manifest: kept, --delete-stale deletes them")
        lines += _section(verb, why, [(f.path, f.size) for f in self.stale])
        lines.append(f"  after upload: {self.shape}")
        lines += [f"  over the limit: {p}" for p in self.problems]
        return "\n".join(lines)


def plan_upload(
    repo_url: str,
    expected: Sequence[FileSpec],
    remote: RemoteState | None,
    local_git_oids: Mapping[str, str],
    *,
    delete_stale: bool,
    remote_note: str | None = None,
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
                      None if remote is None else remote.exists)


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


# --- Results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadResult:
    """What `upload` did: the plan, and for a real run the commit, verification and stale files."""

    plan: UploadPlan
    dry_run: bool
    commit: str | None = None
    verification: VerifyReport | None = None
    stale: tuple[RemoteFile, ...] = ()  # still on the Hub after the run
    deleted: tuple[RemoteFile, ...] = ()  # removed in one commit after the verified upload

    @property
    def ok(self) -> bool:
        if self.dry_run:
            return not self.plan.problems
        return self.verification is not None and self.verification.ok

    def __str__(self) -> str:
        if self.dry_run:
            return f"{self.plan}\ndry run: nothing was sent"
        lines = [
            f"uploaded to {self.plan.repo_url} (commit {self.commit}): "
            f"{len(self.plan.add)} files new or changed ({human_bytes(_total(self.plan.add))}), "
            f"{len(self.plan.skip)} already identical",
            f"verified {self.verification}",
        ]
        if self.deleted:
            lines += _section("delete", "stale: deleted in one commit",
                              [(f.path, f.size) for f in self.deleted])
        if self.stale:
            lines += _section("stale", "on the Hub, not in the manifest: kept, rerun with "
                              "--delete-stale to delete them",
                              [(f.path, f.size) for f in self.stale])
        return "\n".join(lines)


# --- Upload ---------------------------------------------------------------------------------------


def upload(
    out: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    deep: bool = False,
    delete_stale: bool = False,
    confirm: Callable[[Sequence[RemoteFile]], bool] | None = None,
    echo: Callable[[str], None] | None = None,
) -> UploadResult:
    """Upload the packed folder `out` to the dataset repo `repo_id`; see the module docstring.

    `confirm` is asked before stale files are deleted (None: delete without asking). `echo`
    receives progress lines (default: stderr). Rerun the same call to resume.
    """
    say = echo or _stderr
    root = Path(out).absolute()
    revision = revision or DEFAULT_REVISION
    expected, samples = expected_files(root)
    local_problems = check_local(root, expected, deep=deep)
    if local_problems:
        raise UploadError(
            f"{root} does not match its manifest ({len(local_problems)} problem(s): "
            f"{_quote(local_problems)}); run `sousa-wds verify {root}`, and pack again if needed"
        )
    token, source = resolve_token(token)
    api = _api(token)
    url = repo_url(api.endpoint, repo_id, revision)
    if dry_run:
        remote, note = _dry_run_remote(api, repo_id, revision, token, source)
        plan = plan_upload(url, expected, remote, _local_git_oids(root, expected, remote),
                           delete_stale=delete_stale, remote_note=note)
        return UploadResult(plan, dry_run=True)

    if token is None:
        raise UploadError(f"no Hugging Face token found: {LOGIN_HELP}")
    with _translated(f"could not check the token with {api.endpoint}", token,
                     hint="check the connection, or use --dry-run for the local plan"):
        say(f"logged in as {check_token(api, token, source)} (token from {source})")
    with _translated(f"cannot use {repo_id}", token):
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        remote = remote_state(api, repo_id, revision)
    if private and not remote.private:
        raise UploadError(f"{repo_id} exists and is public, but a private upload was asked for: "
                          f"make it private (`hf repos settings {repo_id} --private --repo-type "
                          "dataset`) or upload without --private")
    plan = plan_upload(url, expected, remote, _local_git_oids(root, expected, remote),
                       delete_stale=delete_stale)
    if plan.problems:
        raise UploadError(f"{url} would break the Hub's limits: {_quote(plan.problems)}; pack "
                          "with larger shards (--shard-size) or without --no-sharding, or "
                          "remove stale files (--delete-stale)")
    say(f"{len(plan.add)} files to send ({human_bytes(_total(plan.add))}), "
        f"{len(plan.skip)} already identical, {len(plan.stale)} stale")
    with _translated(f"upload to {repo_id} stopped", token, hint=RESUME_HELP):
        _send(api, root, plan, repo_id, revision,
              commit_message or f"Upload {len(expected)} files with sousa-wds",
              remote_manifest=MANIFEST in remote.files)

    with _translated("the upload finished, but reading it back failed", token,
                     hint=f"check later with `sousa-wds verify hf://datasets/{repo_id}`"):
        after = remote_state(api, repo_id, revision)
        say(f"verifying {len(expected)} files at commit {after.commit}"
            + (" (downloading every file)" if deep else ""))
        report = verify_state(api, repo_id, after, expected, deep=deep)
    report.samples = samples
    stale = stale_files((f.path for f in expected), after.files)
    deleted: list[RemoteFile] = []
    if delete_stale and stale and not report.ok:
        say(f"{len(stale)} stale files kept: the upload did not verify")
    elif delete_stale and stale and (confirm is None or confirm(stale)):
        with _translated("the upload verified, but deleting stale files failed", token,
                         hint="rerun to try again"):
            _delete(api, repo_id, revision, deletion_paths((f.path for f in stale), after.files),
                    len(stale))
            after = remote_state(api, repo_id, revision)
        deleted, stale = stale, stale_files((f.path for f in expected), after.files)
    return UploadResult(plan, dry_run=False, commit=after.commit, verification=report,
                        stale=tuple(stale), deleted=tuple(deleted))


def expected_files(root: Path) -> tuple[list[FileSpec], int]:
    """What the local manifest promises (see `manifest_specs`) and its sample count."""
    return manifest_specs(load_manifest(root), (root / MANIFEST).read_bytes())


def manifest_specs(manifest: Manifest, raw: bytes) -> tuple[list[FileSpec], int]:
    """The manifest's files, then manifest.json itself (hashed from `raw`, its bytes: it cannot
    list itself), and the number of samples."""
    specs = [FileSpec(f.path, f.bytes, f.sha256) for f in manifest.files]
    own = FileSpec(MANIFEST, len(raw), hashlib.sha256(raw).hexdigest())
    return [*specs, own], manifest.samples


def check_local(root: Path, expected: Sequence[FileSpec], *, deep: bool) -> list[str]:
    """Problems between the folder and its manifest: paths, sizes, and with `deep` sha256."""
    return local_file_problems(root, [(f.path, f.size, f.sha256) for f in expected], deep=deep)


def resolve_token(explicit: str | None) -> tuple[str | None, str]:
    """The token to use and where it came from (named in messages; the token never is)."""
    if explicit:
        return explicit, "--token"
    from huggingface_hub import get_token

    token = get_token()
    from_env = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return token, "HF_TOKEN" if from_env else "the saved login (`hf auth login`)"


def check_token(api: HfApi, token: str, source: str) -> str:
    """The user name behind `token`; an `UploadError` unless the Hub accepts it for writing.
    Network errors propagate: the caller knows what to suggest."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = api.whoami()
    except HfHubHTTPError as exc:
        if _status(exc) == 401:
            raise UploadError(f"the Hub rejected the token from {source} (401 Unauthorized): "
                              f"{LOGIN_HELP}") from None
        raise UploadError(f"could not check the token: {_reason(exc, token)}") from None
    role = info.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise UploadError(f"the token from {source} is read-only: {LOGIN_HELP}")
    return str(info.get("name", "?"))


def repo_url(endpoint: str, repo_id: str, revision: str) -> str:
    url = f"{endpoint.rstrip('/')}/datasets/{repo_id}"
    if revision != DEFAULT_REVISION:
        url += f"/tree/{urllib.parse.quote(revision, safe='')}"
    return url


def _dry_run_remote(
    api: HfApi, repo_id: str, revision: str, token: str | None, source: str
) -> tuple[RemoteState | None, str | None]:
    """The remote state if the Hub can be asked with reads only, else None and the reason."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        if token is not None:
            check_token(api, token, source)
        return remote_state(api, repo_id, revision), None
    except UploadError as exc:
        return None, str(exc)
    except RepositoryNotFoundError:
        if token is None:
            return None, f"{repo_id} is not public, or new, and there is no token: {LOGIN_HELP}"
        return RemoteState(False, False, None, {}), None
    except HfHubHTTPError as exc:
        return None, _reason(exc, token)
    except _network_errors() as exc:
        return None, f"could not reach {api.endpoint}: {_reason(exc, token)}"


def remote_state(api: HfApi, repo_id: str, revision: str) -> RemoteState:
    """Repo info, then the listing of that exact commit. Raises RepositoryNotFoundError.

    Listing by commit id keeps plan and verification on one snapshot while others push.
    """
    from huggingface_hub.errors import RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        info = api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision)
    except RevisionNotFoundError:
        raise UploadError(
            f"{repo_id} has no revision {revision!r} (a new branch is made with `hf repos "
            f"branch create {repo_id} {revision} --repo-type dataset`)"
        ) from None
    files = {}
    for entry in api.list_repo_tree(repo_id, repo_type=REPO_TYPE, revision=info.sha,
                                    recursive=True):
        if isinstance(entry, RepoFile):
            files[entry.path] = RemoteFile(entry.path, entry.size, entry.blob_id,
                                           entry.lfs.sha256 if entry.lfs else None)
    return RemoteState(True, bool(info.private), info.sha, files)


def _local_git_oids(
    root: Path, expected: Sequence[FileSpec], remote: RemoteState | None
) -> dict[str, str]:
    """Git blob ids of local files whose remote copy is a regular file of the same size."""
    if remote is None:
        return {}
    oids = {}
    for spec in expected:
        entry = remote.files.get(spec.path)
        if entry is not None and entry.sha256 is None and entry.size == spec.size:
            oids[spec.path] = git_blob_oid(root / spec.path)
    return oids


def git_blob_oid(path: Path) -> str:
    """The id git (and the Hub's listing) gives a regular file: sha1 of a header + the bytes."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _send(api: HfApi, root: Path, plan: UploadPlan, repo_id: str, revision: str,
          message: str, *, remote_manifest: bool) -> None:
    """Data first through `upload_folder`, manifest.json last in its own commit.

    While data changes, the remote copy must not carry an outdated manifest (readers and
    `verify hf://` would trust it over the new shards, and a multi-commit upload can stop
    half-way): it is deleted first, in a commit of its own.
    """
    data_changes = any(f.path != MANIFEST for f in plan.add)
    if data_changes and remote_manifest and any(f.path == MANIFEST for f in plan.add):
        api.delete_file(MANIFEST, repo_id=repo_id, repo_type=REPO_TYPE, revision=revision,
                        commit_message=f"{message} (retire the outdated {MANIFEST})")
    if data_changes:
        allow, ignore = upload_patterns(
            [f.path for f in (*plan.add, *plan.skip) if f.path != MANIFEST], _local_paths(root)
        )
        api.upload_folder(repo_id=repo_id, repo_type=REPO_TYPE, folder_path=root,
                          revision=revision, commit_message=message,
                          allow_patterns=allow, ignore_patterns=ignore)
    if any(f.path == MANIFEST for f in plan.add):
        api.upload_file(path_or_fileobj=root / MANIFEST, path_in_repo=MANIFEST,
                        repo_id=repo_id, repo_type=REPO_TYPE, revision=revision,
                        commit_message=f"{message} ({MANIFEST})")


def _local_paths(root: Path) -> list[str]:
    return [Path(folder, name).relative_to(root).as_posix()
            for folder, _dirs, names in os.walk(root) for name in names]


def _delete(api: HfApi, repo_id: str, revision: str, paths: Sequence[str], count: int) -> None:
    from huggingface_hub import CommitOperationDelete

    api.create_commit(
        repo_id=repo_id, repo_type=REPO_TYPE, revision=revision,
        operations=[CommitOperationDelete(path_in_repo=p) for p in paths],
        commit_message=f"Delete {count} files not in the sousa-wds manifest",
    )


# --- Verification -------------------------------------------------------------------------------


def verify_state(
    api: HfApi, repo_id: str, remote: RemoteState, expected: Sequence[FileSpec], *, deep: bool
) -> VerifyReport:
    """Compare one listed commit with `expected`, downloading what the listing cannot prove."""
    from huggingface_hub import HfFileSystem

    assert remote.commit is not None
    fs = HfFileSystem(token=api.token, skip_instance_cache=True)
    served = {}
    for spec in expected:
        entry = remote.files.get(spec.path)
        if entry is not None and entry.size == spec.size and (deep or entry.sha256 is None):
            served[spec.path] = _served_sha256(fs, repo_id, remote.commit, spec.path)
    report = VerifyReport(f"hf://datasets/{repo_id}@{remote.commit[:12]}", deep=deep)
    present = [f.path for f in expected if f.path in remote.files]
    report.files = len(present)
    report.shards = sum(1 for p in present if p.startswith("data/"))
    for problem in remote_problems(expected, remote.files, served):
        report.add(problem)
    return report


def _served_sha256(fs: Any, repo_id: str, commit: str, path: str) -> str:
    with fs.open(f"datasets/{repo_id}@{commit}/{path}", "rb", block_size=0) as fh:
        return stream_sha256(fh)


def parse_hf_target(target: str) -> tuple[str, str]:
    """`hf://datasets/USER/NAME[@revision]` → (repo id, revision)."""
    rest = target.removeprefix("hf://").strip("/")
    kind, _, name = rest.partition("/")
    repo_id, _, revision = name.partition("@")
    if kind != "datasets" or repo_id.count("/") != 1 or "" in repo_id.split("/"):
        raise VerifyError(f"{target!r} is not hf://datasets/USER/NAME[@revision]")
    return repo_id, urllib.parse.unquote(revision) or DEFAULT_REVISION


def verify_remote(target: str, *, token: str | None = None, deep: bool = False) -> VerifyReport:
    """Check the Hub copy `hf://datasets/USER/NAME[@rev]` against the manifest it holds.

    Every listed file must be present with its size and sha256 (from the listing for LFS
    files, from the bytes for regular ones; `deep` downloads everything), and the format's
    folders must hold nothing the manifest does not list.
    """
    from huggingface_hub import HfFileSystem
    from huggingface_hub.errors import RepositoryNotFoundError

    repo_id, revision = parse_hf_target(target)
    token, _source = resolve_token(token)
    api = _api(token)
    with _translated(f"could not read {target}", token, error=VerifyError):
        try:
            remote = remote_state(api, repo_id, revision)
        except RepositoryNotFoundError:
            raise VerifyError(f"{repo_id} was not found on {api.endpoint} (a private repo needs "
                              f"a token: {LOGIN_HELP})") from None
        except UploadError as exc:  # no such branch
            raise VerifyError(str(exc)) from None
        if MANIFEST not in remote.files:
            raise VerifyError(f"{target} has no {MANIFEST}: not a sousa-wds upload, or one "
                              "that did not finish (rerun `sousa-wds upload` to complete it)")
        fs = HfFileSystem(token=api.token, skip_instance_cache=True)
        raw = fs.cat_file(f"datasets/{repo_id}@{remote.commit}/{MANIFEST}")
        expected, samples = manifest_specs(Manifest.from_json(raw, f"{target}/{MANIFEST}"), raw)
        report = verify_state(api, repo_id, remote, expected, deep=deep)
    report.samples = samples
    for entry in stale_files((f.path for f in expected), remote.files):
        if entry.path.split("/", 1)[0] in FORMAT_FOLDERS:
            report.add(f"{entry.path}: on the Hub but not in the manifest (left over from "
                       "another upload? `sousa-wds upload --delete-stale` removes it)")
    return report


# --- CLI ------------------------------------------------------------------------------------------


def cli_upload(args: argparse.Namespace) -> int:
    """`sousa-wds upload`: asks before deleting on a terminal, refuses to guess without one."""
    if args.delete_stale and not args.yes and not args.dry_run and not sys.stdin.isatty():
        raise UploadError("--delete-stale asks before deleting, but there is no terminal to ask: "
                          "add --yes to delete stale files without asking")
    result = upload(
        args.out, args.repo_id, token=args.token, private=args.private, revision=args.revision,
        commit_message=args.commit_message, dry_run=args.dry_run, deep=args.deep,
        delete_stale=args.delete_stale, confirm=None if args.yes else _ask_delete,
    )
    print(result)
    return 0 if result.ok else 1


def _ask_delete(stale: Sequence[RemoteFile]) -> bool:
    answer = input(f"Delete these {len(stale)} stale files from the Hub? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


# --- Small helpers --------------------------------------------------------------------------------


def _api(token: str | None) -> HfApi:
    from huggingface_hub import HfApi

    # token=False: never fall back to a saved login the caller did not resolve here.
    return HfApi(token=token or False)


@contextmanager
def _translated(
    action: str, token: str | None, *, hint: str = "", error: type[SousaWdsError] = UploadError
) -> Iterator[None]:
    """Turn the Hub client's HTTP and network errors into one actionable line.

    The client sometimes wraps them (a failed LFS upload is a RuntimeError raised from the
    HTTP error), so the cause chain is searched; anything else is a bug and propagates.
    """
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except SousaWdsError:
        raise
    except Exception as exc:
        cause = _hub_cause(exc)
        if cause is None:
            raise
        where = "" if cause is exc else f"{_reason(exc, token)} "
        if isinstance(cause, HfHubHTTPError):
            text = f"{action}: {where}{_reason(cause, token)}"
        else:
            text = f"{action}, the Hub did not answer: {where}{_reason(cause, token)}"
        raise error(text + (f"; {hint}" if hint else "")) from None


def _hub_cause(exc: BaseException) -> BaseException | None:
    """The HTTP or network error `exc` is or was raised from, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _network_errors()):
            return seen
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    """Failures to get any answer from the Hub.

    huggingface_hub lets its HTTP library's transport errors through (httpx in 1.x, httpx2 in
    2.x); that library's base error is HfHubHTTPError's first base class. OSError covers
    offline mode (OfflineModeIsEnabled) and socket errors.
    """
    from huggingface_hub.errors import HfHubHTTPError

    return (HfHubHTTPError.__mro__[1], OSError)


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _reason(exc: BaseException, token: str | None) -> str:
    """One line from a library error, with the token cut out should a message ever echo it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.replace(token, "***") if token else text


def _quote(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:MAX_QUOTED])
    more = len(problems) - MAX_QUOTED
    return shown + (f"; and {more} more" if more > 0 else "")


def _section(verb: str, why: str, items: Sequence[tuple[str, int]], listed: bool = True
             ) -> list[str]:
    total = human_bytes(sum(s for _, s in items))
    lines = [f"  {verb:<6} {len(items):>6,} files {total:>9}  ({why})"]
    if listed:
        lines += [f"           {path}  {human_bytes(size)}" for path, size in items[:MAX_LISTED]]
        if len(items) > MAX_LISTED:
            lines.append(f"           ... and {len(items) - MAX_LISTED:,} more")
    return lines


def _total(files: Iterable[FileSpec]) -> int:
    return sum(f.size for f in files)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
