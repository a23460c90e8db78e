#!/usr/bin/env python
"""Pack a SOUSA dataset, verify the pack and upload it to the Hub: the one-shot path.

    python scripts/push_to_hub.py DATASET USER/NAME [--dry-run] [--no-sharding] ...

How it works:
- The pack goes to a staging folder beside the dataset, `DATASET.hf_staging` by default (pack
  refuses a folder inside the source it reads). A finished pack there from the same input and
  options is reused, an interrupted one is resumed, any other pack is replaced: a rerun after
  a failed upload does not pack 100 GB again.
- The staging folder is checked with `sousa_wds.verify` (shards, offsets, sizes), then handed
  to `sousa_wds.publish.upload`: pre-flight, resumable upload, verification of the Hub copy.
- `--dry-run` still packs (locally), then prints the upload plan and sends nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sousa_wds.errors import SousaWdsError
from sousa_wds.format import CARD, MANIFEST
from sousa_wds.io import parse_size
from sousa_wds.pack import DEFAULT_SEED, STATE_DIR, ResumeMismatch, pack
from sousa_wds.publish import upload
from sousa_wds.source import read_dataset
from sousa_wds.verify import verify

STAGING_SUFFIX = ".hf_staging"  # beside DATASET, never inside it: pack reads DATASET whole


def default_staging(dataset: Path) -> Path:
    dataset = dataset.absolute()
    return dataset.with_name(dataset.name + STAGING_SUFFIX)


def stage(dataset: Path, staging: Path, repo_id: str, *, shard_size: int, workers: int | None,
          no_sharding: bool) -> str:
    """Make `staging` a finished pack of `dataset` with these options; say how."""
    options = {"dataset_dir": dataset, "out": staging, "shard_size": shard_size,
               "workers": workers, "no_sharding": no_sharding, "repo_id": repo_id}
    if (staging / MANIFEST).is_file():
        reason = _why_not_reusable(dataset, staging, repo_id, shard_size, no_sharding)
        if reason is None:
            return f"reusing the finished pack in {staging}"
        pack(**options, overwrite=True)
        return f"packed again into {staging} ({reason})"
    if (staging / STATE_DIR).is_dir():
        try:
            return f"resumed and packed {pack(**options, resume=True)}"
        except ResumeMismatch as exc:
            summary = pack(**options, overwrite=True)
            return f"packed again {summary} (the interrupted pack there differed: {exc})"
    # The staging folder is this script's: leftovers of an earlier pack are replaced.
    return f"packed {pack(**options, overwrite=True)}"


def _why_not_reusable(dataset: Path, staging: Path, repo_id: str, shard_size: int,
                      no_sharding: bool) -> str | None:
    """Why the finished pack in `staging` is not what this run would write, or None."""
    manifest = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    # The options pack records (plan options + layout); this script leaves the rest at defaults.
    wanted = {"shard_size": shard_size, "max_samples_per_shard": None, "seed": DEFAULT_SEED,
              "order": "shuffle", "layout": "loose" if no_sharding else "shards"}
    if manifest.get("options") != wanted:
        return f"options were {manifest.get('options')}, now {wanted}"
    if manifest.get("source_fingerprint") != read_dataset(dataset).fingerprint():
        return "the dataset changed since"
    # The card's code snippets name the repo; the manifest does not record it.
    if f'"{repo_id}"' not in (staging / CARD).read_text(encoding="utf-8"):
        return f"its dataset card names another repo than {repo_id}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="push_to_hub.py",
        description="Pack DATASET (a SOUSA generator folder) into a staging folder, verify it, "
        "and upload it to the Hub dataset repo REPO_ID. Rerun the same command to resume.",
    )
    parser.add_argument("dataset", type=Path, help="the folder the SOUSA generator wrote")
    parser.add_argument("repo_id", help="dataset repo on the Hub, e.g. USER/SOUSA")
    parser.add_argument("--dry-run", action="store_true",
                        help="pack and print the upload plan; send nothing to the Hub")
    parser.add_argument("--no-sharding", action="store_true",
                        help="publish the loose audio/ and midi/ layout (small datasets only)")
    parser.add_argument("--shard-size", default="1GB",
                        help="target shard size, e.g. 500MB, 1GB (default 1GB)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel shard writers (default: all cores)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--token", default=None,
                        help="Hub token (default: HF_TOKEN or the `hf auth login` one)")
    parser.add_argument("--staging", type=Path, default=None,
                        help=f"folder for the pack (default: DATASET{STAGING_SUFFIX} beside it)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    staging = (args.staging or default_staging(args.dataset)).absolute()
    try:
        done = stage(args.dataset, staging, args.repo_id, shard_size=parse_size(args.shard_size),
                     workers=args.workers, no_sharding=args.no_sharding)
        print(done, file=sys.stderr)
        report = verify(staging)
        if not report.ok:
            print(report)
            return 1
        print(f"verified {report}", file=sys.stderr)
        result = upload(staging, args.repo_id, token=args.token, private=args.private,
                        dry_run=args.dry_run)
    except SousaWdsError as exc:
        print(f"push_to_hub: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("push_to_hub: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    print(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
