"""`upload` and `verify_remote`: publish a packed folder on the Hub, then check what it serves.

How it works:
- Pre-flight, before any write request: the repo id is one the Hub accepts (before the card
  is touched), the dataset card is made to name the target repo (`repo_card`), the folder
  matches its manifest (sizes; sha256 with `deep`), the repo will fit the Hub's limits, and a
  write token is available and accepted (`whoami`). Each failure is one `UploadError` saying
  how to fix it.
- The plan (`plan.plan_upload`) compares the manifest's files with the listing of one remote
  commit. `dry_run` stops there and writes nothing, locally or remotely; without a token or a
  network it plans against an empty remote and says so.
- The transfer is huggingface_hub's `upload_folder` (`hub.send_data`), limited to the
  manifest's files; `manifest.json` follows in its own commit, only once the listing of the
  data commit matches it (sizes, LFS sha256, and the git blob id of each regular file against
  the local bytes whose sha256 the manifest holds), so a remote copy with a manifest holds
  every file it lists. Resuming is the library's: a rerun compares content hashes with the
  remote and sends only what is missing.
- Verification reads one pinned commit: every expected path, size and LFS sha256 from the
  listing, and the bytes of regular files (the Hub lists no sha256 for them). `deep` downloads
  and hashes every file. `verify_remote` runs the same check from the remote manifest.
- Stale remote files are listed; `delete_stale` removes them in one commit once the upload
  verified. Those left in the format's folders (readers would take them for data) make the
  upload not OK, as they make `verify hf://` fail.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UploadError, VerifyError
from ..format import CARD, MANIFEST, Manifest
from ..io import human_bytes
from ..verification import VerifyReport, load_manifest, local_file_problems
from . import hub, repo_card
from .plan import (
    FileSpec,
    RemoteFile,
    RemoteState,
    UploadPlan,
    deletion_paths,
    git_oid_candidates,
    leftover_problems,
    manifest_specs,
    plan_upload,
    remote_problems,
    section,
    stale_files,
    to_download,
)

if TYPE_CHECKING:
    from huggingface_hub import HfApi

# Problems quoted in a one-line pre-flight error; the rest are counted.
MAX_QUOTED = 5
RESUME_HELP = "files already sent stay on the Hub: rerun the same command to resume"

Progress = Callable[[str], None]


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
            return f"{self.plan}\ndry run: nothing was sent or written"
        add = self.plan.add
        lines = [
            f"uploaded to {self.plan.repo_url} (commit {self.commit}): {len(add)} files new or "
            f"changed ({human_bytes(sum(f.size for f in add))}), {len(self.plan.skip)} already "
            "identical",
            f"verified {self.verification}",
        ]
        if self.deleted:
            lines += section("delete", "stale: deleted in one commit",
                             [(f.path, f.size) for f in self.deleted])
        if self.stale:
            lines += section("stale", "on the Hub, not in the manifest: kept, rerun with "
                             "--delete-stale to delete them",
                             [(f.path, f.size) for f in self.stale])
        return "\n".join(lines)


@dataclass(frozen=True)
class _Local:
    """The folder as it will be published: files, sample count, card decision, and the bytes
    of files rewritten in memory only (a dry run never writes)."""

    root: Path
    expected: list[FileSpec]
    samples: int
    card: repo_card.CardDecision
    pending: dict[str, bytes]


def upload(
    out: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    deep: bool = False,
    delete_stale: bool = False,
    keep_card: bool = False,
    confirm: Callable[[Sequence[RemoteFile]], bool] | None = None,
    progress: Progress | None = None,
) -> UploadResult:
    """Upload the packed folder `out` to the dataset repo `repo_id`; see the module docstring.

    `endpoint` defaults to HF_ENDPOINT (huggingface.co). `confirm` is asked before stale files
    are deleted (None: delete without asking). `progress` receives one line per step. Rerun
    the same call to resume.
    """
    hub.check_repo_id(repo_id)
    say = progress or (lambda _line: None)
    revision = revision or hub.DEFAULT_REVISION
    local = _prepare(Path(out).absolute(), repo_id, keep_card=keep_card, dry_run=dry_run,
                     deep=deep)
    token, source = hub.resolve_token(token)
    api = hub.make_api(token, endpoint)
    url = hub.repo_url(api.endpoint, repo_id, revision)
    if dry_run:
        remote, note, refusal = hub.dry_run_remote(api, repo_id, revision, token, source)
        if private and remote is not None and remote.exists and not remote.private:
            refusal = _public_repo(repo_id)
        return UploadResult(_plan(url, local, remote, delete_stale, note, refusal),
                            dry_run=True)

    if token is None:
        raise UploadError(f"no Hugging Face token found: {hub.LOGIN_HELP}")
    with hub.translated(f"could not check the token with {api.endpoint}", token,
                        hint="check the connection, or use --dry-run for the local plan"):
        say(f"logged in as {hub.check_token(api, token, source)} (token from {source})")
    with hub.translated(f"cannot use {repo_id}", token):
        if not hub.repo_exists(api, repo_id):
            # Refused before the repo is made: a refusal leaves nothing behind on the Hub.
            if revision != hub.DEFAULT_REVISION:
                raise UploadError(f"{repo_id} does not exist yet, so it has no revision "
                                  f"{revision!r}: upload to main first (the branch is made "
                                  f"from it with `hf repos branch create {repo_id} {revision} "
                                  "--repo-type dataset`); nothing was written or sent")
            empty = _plan(url, local, RemoteState(False, False, None, {}), delete_stale, None)
            if empty.problems:
                raise UploadError(f"cannot upload to {url}, nothing was sent: "
                                  f"{_quote(empty.problems)}")
        hub.create_repo(api, repo_id, private=private)
        remote = hub.remote_state(api, repo_id, revision)
    if private and not remote.private:
        raise UploadError(_public_repo(repo_id))
    plan = _plan(url, local, remote, delete_stale, None)
    if plan.problems:
        raise UploadError(f"cannot upload to {url}, nothing was sent: {_quote(plan.problems)}")
    say(f"card: {local.card.note}")
    say(f"{len(plan.add)} files to send ({human_bytes(sum(f.size for f in plan.add))}), "
        f"{len(plan.skip)} already identical, {len(plan.stale)} stale")
    message = commit_message or f"Upload {len(local.expected)} files with sousa-wds"
    with hub.translated(f"upload to {repo_id} stopped", token, hint=RESUME_HELP):
        hub.send_data(api, local.root, plan, repo_id, revision, message,
                      remote_manifest=MANIFEST in remote.files)
        if any(f.path == MANIFEST for f in plan.add):
            # Also when no data was sent: a rerun skips a small file changed after packing
            # (its blob is already there), and only this check ties it to the manifest.
            checked = _check_sent_data(api, repo_id, revision, local)
            hub.send_manifest(api, local.card.raw, repo_id, revision, message, checked)
    return _check_and_clean(api, token, repo_id, revision, plan, local, deep=deep,
                            delete_stale=delete_stale, confirm=confirm, say=say)


def _prepare(root: Path, repo_id: str, *, keep_card: bool, dry_run: bool, deep: bool) -> _Local:
    """The card decision (applied unless `dry_run`), then the folder checked against the
    manifest it will publish."""
    manifest = load_manifest(root)
    card = repo_card.decide(root, manifest, (root / MANIFEST).read_bytes(), repo_id,
                            keep_card=keep_card)
    if card.problem and not dry_run:
        raise UploadError(card.problem)
    pending: dict[str, bytes] = {}
    if dry_run:
        pending = {MANIFEST: card.raw} | ({CARD: card.card} if card.card is not None else {})
    elif card.problem is None:
        repo_card.apply(root, card)
    expected = manifest_specs(card.manifest, card.raw)
    problems = local_file_problems(
        root, [(f.path, f.size, f.sha256) for f in expected if f.path not in pending], deep=deep)
    if problems:
        raise UploadError(
            f"{root} does not match its manifest ({len(problems)} problem(s): "
            f"{_quote(problems)}); run `sousa-wds verify {root}{' --deep' if deep else ''}`, "
            "and pack again if needed")
    return _Local(root, expected, card.manifest.samples, card, pending)


def _check_sent_data(api: HfApi, repo_id: str, revision: str, local: _Local) -> str | None:
    """Refuse to commit the manifest over data that does not match it; the commit checked.

    Without `deep` the local files were only checked by size, so a file changed in place
    after packing is sent as it is. The listing of the data commit holds the sha256 the
    client computed of every LFS file it sent: compared with the manifest, no file is hashed
    again. Regular (small) files are listed by git blob id only (`_regular_file_problems`).
    """
    sent = hub.remote_state(api, repo_id, revision)
    data = [f for f in local.expected if f.path != MANIFEST]
    problems = (remote_problems(data, sent.files, {})
                or _regular_file_problems(local.root, data, sent.files))
    if problems:
        raise UploadError(
            f"{MANIFEST} was not committed to {repo_id}: the data sent from {local.root} does "
            f"not match it ({len(problems)} problem(s): {_quote(problems)}); files changed "
            f"after packing: run `sousa-wds verify {local.root} --deep`, pack again "
            "(--overwrite), then rerun the upload")
    return sent.commit


def _regular_file_problems(root: Path, data: Sequence[FileSpec],
                           files: dict[str, RemoteFile]) -> list[str]:
    """The regular files sent whose bytes the manifest does not vouch for: each local file
    (small: the Hub keeps larger ones in LFS) hashed both ways ties the remote blob id to the
    manifest's sha256, with no download."""
    from huggingface_hub.utils.sha import git_hash

    problems = []
    for spec in data:
        entry = files[spec.path]
        if entry.sha256 is not None:
            continue
        content = (local := root / spec.path).read_bytes()
        if hashlib.sha256(content).hexdigest() != spec.sha256:
            problems.append(f"{spec.path}: changed after packing ({local} and the manifest "
                            "differ in sha256)")
        elif git_hash(content) != entry.git_oid:
            problems.append(f"{spec.path}: the Hub holds other bytes than {local}")
    return problems


def _public_repo(repo_id: str) -> str:
    return (f"{repo_id} exists and is public, but a private upload was asked for: make it "
            f"private (`hf repos settings {repo_id} --private --repo-type dataset`) or upload "
            "without --private")


def _plan(url: str, local: _Local, remote: RemoteState | None, delete_stale: bool,
          note: str | None, refusal: str | None = None) -> UploadPlan:
    from huggingface_hub.utils.sha import git_hash

    oids = {}
    for path in git_oid_candidates(local.expected, remote):
        data = local.pending.get(path)
        oids[path] = git_hash(data if data is not None else (local.root / path).read_bytes())
    return plan_upload(url, local.expected, remote, oids, delete_stale=delete_stale,
                       remote_note=note, card=local.card.note, card_problem=local.card.problem,
                       remote_refusal=refusal)


def _check_and_clean(
    api: HfApi, token: str, repo_id: str, revision: str, plan: UploadPlan, local: _Local, *,
    deep: bool, delete_stale: bool, confirm: Callable[[Sequence[RemoteFile]], bool] | None,
    say: Progress,
) -> UploadResult:
    """Verify the new remote commit; delete stale files only when it verified (and allowed).

    Stale files left in the format's folders then make the result not OK, as `verify hf://`
    of the same commit would say (`leftover_problems`, the one rule of both).
    """
    with hub.translated("the upload finished, but reading it back failed", token,
                        hint=f"check later with `sousa-wds verify hf://datasets/{repo_id}`"):
        after = hub.remote_state(api, repo_id, revision)
        say(f"verifying {len(local.expected)} files at commit {after.commit}"
            + (" (downloading every file)" if deep else ""))
        report = verify_state(api, repo_id, after, local.expected, deep=deep)
    report.samples = local.samples
    expected = [f.path for f in local.expected]
    stale = stale_files(expected, after.files)
    deleted: list[RemoteFile] = []
    if delete_stale and stale and not report.ok:
        say(f"{len(stale)} stale files kept: the upload did not verify")
    elif delete_stale and stale and (confirm is None or confirm(stale)):
        with hub.translated("the upload verified, but deleting stale files failed", token,
                            hint="rerun to try again"):
            hub.delete_paths(api, repo_id, revision,
                             deletion_paths((f.path for f in stale), after.files), len(stale),
                             listed=after.commit)
            after = hub.remote_state(api, repo_id, revision)
        deleted, stale = stale, stale_files(expected, after.files)
    for problem in leftover_problems(expected, after.files):
        report.add(problem)
    return UploadResult(plan, dry_run=False, commit=after.commit, verification=report,
                        stale=tuple(stale), deleted=tuple(deleted))


def verify_state(
    api: HfApi, repo_id: str, remote: RemoteState, expected: Sequence[FileSpec], *, deep: bool
) -> VerifyReport:
    """Compare one listed commit with `expected`, downloading what the listing cannot prove."""
    assert remote.commit is not None
    served = hub.served_sha256s(api, repo_id, remote.commit,
                                to_download(expected, remote, deep=deep))
    report = VerifyReport(f"hf://datasets/{repo_id}@{remote.commit[:12]}", deep=deep)
    present = [f.path for f in expected if f.path in remote.files]
    report.files = len(present)
    report.shards = sum(1 for p in present if p.startswith("data/"))
    for problem in remote_problems(expected, remote.files, served):
        report.add(problem)
    return report


def verify_remote(target: str, *, token: str | None = None, endpoint: str | None = None,
                  deep: bool = False) -> VerifyReport:
    """Check the Hub copy `hf://datasets/USER/NAME[@rev]` against the manifest it holds.

    Every listed file must be present with its size and sha256 (from the listing for LFS
    files, from the bytes for regular ones; `deep` downloads everything), and the format's
    folders must hold nothing the manifest does not list.
    """
    from huggingface_hub.errors import RepositoryNotFoundError

    repo_id, revision = hub.parse_hf_target(target)
    token, _source = hub.resolve_token(token)
    api = hub.make_api(token, endpoint)
    with hub.translated(f"could not read {target}", token, error=VerifyError):
        try:
            remote = hub.remote_state(api, repo_id, revision)
        except RepositoryNotFoundError:
            raise VerifyError(f"{repo_id} was not found on {api.endpoint} (a private repo needs "
                              f"a token: {hub.LOGIN_HELP})") from None
        except UploadError as exc:  # no such branch
            raise VerifyError(str(exc)) from None
        if MANIFEST not in remote.files or remote.commit is None:
            raise VerifyError(f"{target} has no {MANIFEST}: not a sousa-wds upload, or one "
                              "that did not finish (rerun `sousa-wds upload` to complete it)")
        raw = hub.read_file(api, repo_id, remote.commit, MANIFEST)
        manifest = Manifest.from_json(raw, f"{target}/{MANIFEST}")
        expected = manifest_specs(manifest, raw)
        report = verify_state(api, repo_id, remote, expected, deep=deep)
    report.samples = manifest.samples
    for problem in leftover_problems((f.path for f in expected), remote.files):
        report.add(problem)
    return report


def _quote(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:MAX_QUOTED])
    more = len(problems) - MAX_QUOTED
    return shown + (f"; and {more} more" if more > 0 else "")
