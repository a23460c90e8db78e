"""`sousa-wds push DATASET USER/NAME`: pack, verify and upload in one command.

How it works:
- The pack goes to a staging folder beside the dataset, `DATASET.hf_staging` by default (pack
  refuses a folder inside the source it reads). A finished pack there from the same input and
  options is reused and an interrupted one resumed, so a rerun after a failed upload does not
  pack 100 GB again. Only a folder holding a sousa-wds pack (its manifest or pack state) is
  ever replaced; any other non-empty folder is refused by pack itself.
- A dry run never deletes or replaces anything: it packs only into an empty or absent staging
  folder (or reuses a finished matching pack) and otherwise says what a real run would do.
- The staging folder is checked with `sousa_wds.verify`, then uploaded by `upload` (card made
  to name the repo, pre-flight, resumable transfer, verification of the Hub copy).
- After a verified upload the staging copy is removed (the files its manifest lists, the
  manifest and the pack state; anything else stays and is named), unless `keep_staging`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ManifestError
from ..format import MANIFEST, PackOptions
from ..verification import VerifyReport, load_manifest, verify
from . import repo_card
from .hub import check_repo_id
from .upload import UploadResult, upload

STAGING_SUFFIX = ".hf_staging"  # beside DATASET, never inside it: pack reads DATASET whole


@dataclass(frozen=True)
class PushResult:
    """What `push` did: how the staging pack came about, its verification, the upload."""

    staging: Path
    staged: str
    verification: VerifyReport | None = None
    upload: UploadResult | None = None
    removed: bool = False
    leftovers: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.upload is not None and self.upload.ok

    def __str__(self) -> str:
        lines = [self.staged]
        if self.verification is not None:
            lines.append(f"verified {self.verification}")
        if self.upload is not None:
            lines.append(str(self.upload))
        if self.removed:
            lines.append(f"removed the staging copy {self.staging} (--keep-staging keeps it)")
        if self.leftovers:
            lines.append(f"kept {self.staging}: it also holds {', '.join(self.leftovers[:5])}")
        return "\n".join(lines)


def default_staging(dataset: str | os.PathLike) -> Path:
    dataset = Path(dataset).absolute()
    return dataset.with_name(dataset.name + STAGING_SUFFIX)


def push(
    dataset: str | os.PathLike,
    repo_id: str,
    *,
    staging: str | os.PathLike | None = None,
    keep_staging: bool = False,
    dry_run: bool = False,
    pack_options: dict[str, Any] | None = None,
    **upload_options: Any,
) -> PushResult:
    """Pack `dataset` into `staging`, verify it and upload it to `repo_id`.

    `pack_options` go to `sousa_wds.pack.pack` (shard_size, seed, order, workers, no_sharding,
    license, progress, ...), `upload_options` to `upload` (token, endpoint, private, ...).
    """
    check_repo_id(repo_id)  # before packing for an hour, into a card naming it
    dataset = Path(dataset).absolute()
    folder = Path(staging).absolute() if staging else default_staging(dataset)
    options = {"repo_id": repo_id, **(pack_options or {})}
    staged = stage(dataset, folder, options, dry_run=dry_run)
    if staged is None:
        return PushResult(folder, f"dry run: {_real_run_would(folder, dataset, options)}; "
                          "nothing was packed, sent or deleted")
    report = verify(folder)
    if not report.ok:
        return PushResult(folder, staged, report)
    result = upload(folder, repo_id, dry_run=dry_run, **upload_options)
    if dry_run or not result.ok or keep_staging:
        return PushResult(folder, staged, report, result)
    leftovers = remove_staging(folder)
    return PushResult(folder, staged, report, result, removed=not leftovers,
                      leftovers=tuple(leftovers))


def stage(dataset: Path, staging: Path, options: dict[str, Any], *, dry_run: bool) -> str | None:
    """Make `staging` a finished pack of `dataset` with `options` and say how; None when only
    a real run could (it would replace or resume a pack there)."""
    from ..pack import STATE_DIR, ResumeMismatch, pack

    def run(**how: bool) -> str:
        return str(pack(dataset, staging, **options, **how))

    if (staging / MANIFEST).is_file():
        reason = why_not_reusable(dataset, staging, options)
        if reason is None:
            return f"reusing the finished pack in {staging}"
        return None if dry_run else f"packed again {run(overwrite=True)} ({reason})"
    if (staging / STATE_DIR).is_dir():
        if dry_run:
            return None
        try:
            return f"resumed and packed {run(resume=True)}"
        except ResumeMismatch as exc:
            return f"packed again {run(overwrite=True)} (the interrupted pack differed: {exc})"
    return f"packed {run()}"  # pack itself refuses a non-empty folder that holds no pack


def why_not_reusable(dataset: Path, staging: Path, options: dict[str, Any]) -> str | None:
    """Why the finished pack in `staging` is not what `options` would write, or None.

    The card's repo id does not count: `upload` renders the card for the repo it targets.
    """
    from ..pack.plan import DEFAULT_SEED, DEFAULT_SHARD_SIZE
    from ..source import read_dataset

    try:
        manifest = load_manifest(staging)
    except ManifestError as exc:  # e.g. a pack of an older format version: pack again
        return f"its manifest is not usable here ({exc})"
    layout = "loose" if options.get("no_sharding") else "shards"
    wanted = PackOptions(layout=layout,
                         shard_size=options.get("shard_size") or DEFAULT_SHARD_SIZE,
                         max_samples_per_shard=options.get("max_samples_per_shard"),
                         seed=options.get("seed", DEFAULT_SEED),
                         order=options.get("order", "shuffle"))
    if manifest.options != wanted:
        return f"its options were {manifest.options.to_dict()}, now {wanted.to_dict()}"
    if manifest.source_fingerprint != read_dataset(dataset).fingerprint():
        return "the dataset changed since"
    license = options.get("license", "other")
    if repo_card.card_license(staging) != license:
        return f"its card's license is not {license!r}"
    return None


def _real_run_would(staging: Path, dataset: Path, options: dict[str, Any]) -> str:
    if (staging / MANIFEST).is_file():
        return (f"{staging} holds another pack ({why_not_reusable(dataset, staging, options)}): "
                "a real run packs again, replacing it")
    return f"{staging} holds an interrupted pack: a real run resumes it"


def remove_staging(staging: Path) -> list[str]:
    """Delete what the staging pack consists of; return the names of anything else found
    there (then the folder itself is kept)."""
    from ..pack import STATE_DIR

    manifest = load_manifest(staging)
    for entry in manifest.files:
        (staging / entry.path).unlink(missing_ok=True)
    (staging / MANIFEST).unlink()
    shutil.rmtree(staging / STATE_DIR, ignore_errors=True)
    for folder, _dirs, _files in os.walk(staging, topdown=False):
        if folder != str(staging) and not os.listdir(folder):
            os.rmdir(folder)
    leftovers = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*"))
    if not leftovers:
        staging.rmdir()
    return leftovers

