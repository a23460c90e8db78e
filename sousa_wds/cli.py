"""The `sousa-wds` command: argument parsing and one-line errors; the work lives elsewhere.

Longer than other modules on purpose: it holds every command's argparse table and all printing
(the library prints nothing), so a user-facing change to any command is made in this one file.
Options two commands share come from parent parsers (`_pack_options_parser`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import __version__
from .defaults import DEFAULT_REPO_ID, DEFAULT_SEED
from .errors import SousaWdsError, UploadError, listing
from .io import human_bytes

if TYPE_CHECKING:
    from .publish.plan import RemoteFile

# True while main() runs the process's own command line (the console script, python -m):
# only then may a command mark torch absent for the rest of the process.
_OWN_PROCESS = False


def _without_torch() -> None:
    """Let webdataset skip importing torch in commands that never use it.

    `import webdataset` imports torch when it is installed (about 3 s, and again in every
    spawned worker) although verifying only uses its key rule; with torch marked absent,
    webdataset uses its own torch-free stand-ins. Only when the process is the `sousa-wds`
    command itself and torch is not loaded yet: a program calling `main([...])` in-process (a
    test, a notebook) could never `import torch` afterwards.
    """
    if _OWN_PROCESS:
        sys.modules.setdefault("torch", None)  # type: ignore[arg-type]


def _lean_arrow_pool() -> None:
    """Make jemalloc, handing freed pages back at once, the pool of every Arrow allocation.

    Set through the environment before pyarrow loads: `ARROW_DEFAULT_MEMORY_POOL` is the pool
    Arrow's C++ code (the Parquet reader and writer) allocates from, while `pa.set_memory_pool`
    reaches only pyarrow's own calls. The wheels' default (mimalloc) keeps what it frees: the
    pack parent at 2 GB peaked at 237-260 MB with it, 173-180 MB with jemalloc. Arrow's jemalloc
    decays freed pages over a second, and `pa.jemalloc_set_decay_ms` reaches only arenas made
    after the call: `JE_ARROW_MALLOC_CONF` sets it for all of them (pack at 100k samples, the
    parent after writing the metadata: 235 -> 192 MB). Only when the process is the command
    itself (the pool is process-wide), on x86-64 Linux (whose wheels have jemalloc; a pool
    Arrow lacks is a warning on stderr), and unless the environment chose a pool.
    """
    if (not _OWN_PROCESS or sys.platform != "linux" or os.uname().machine != "x86_64"
            or "pyarrow" in sys.modules):
        return
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    os.environ.setdefault("JE_ARROW_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")


def _show_warnings() -> None:
    """Library warnings as `warning: ...` lines (logging is imported here: --help skips it)."""
    import logging

    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)


def _cmd_example(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .example import make_example

    started = time.perf_counter()
    with tqdm(total=args.samples, desc="example", unit="sample", disable=args.quiet) as bar:
        summary = make_example(
            args.out,
            samples=args.samples,
            seed=args.seed,
            duration_sec=tuple(args.duration_sec),
            channels=args.channels,
            progress=lambda done, size: bar.update(done),
        )
    print(f"wrote {summary} in {time.perf_counter() - started:.1f} s")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    _lean_arrow_pool()
    from tqdm import tqdm

    from .source import read_dataset

    started = time.perf_counter()
    with tqdm(desc="media files", unit=" files", disable=None, leave=False) as bar:
        dataset = read_dataset(args.dataset, deep=args.deep, progress=bar.update)
    elapsed = time.perf_counter() - started
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = dataset.summary()
    if args.json:
        print(json.dumps(summary | {"seconds": round(elapsed, 3), "deep": args.deep}, indent=2))
        return 0
    how = "every FLAC decoded" if args.deep else "FLAC ends decoded; --deep decodes all"
    print(f"{summary['root']}: valid SOUSA dataset ({how}; {elapsed:.2f} s)")
    print(
        f"  {summary['samples']} samples, {summary['profiles']} profiles, "
        f"{summary['rudiments']} rudiments, {summary['midi_files']} MIDI files, "
        f"{human_bytes(summary['audio_bytes'])} of audio"
    )
    for name, entry in summary["splits"].items():
        print(
            f"  {name:<10} {entry['samples']:>7} samples  {human_bytes(entry['audio_bytes']):>10}"
            f"  {entry['midi_files']:>6} MIDI"
        )
    tiers = ", ".join(f"{k}: {v}" for k, v in summary["skill_tiers"].items())
    print(f"  skill tiers: {tiers}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    _lean_arrow_pool()
    from tqdm import tqdm

    from .io import parse_size
    from .pack import PackProgress, pack

    _show_warnings()
    bar = tqdm(unit="sample", disable=args.quiet, desc="packing", dynamic_ncols=True, delay=0.5)
    started = time.perf_counter()

    def show(p: PackProgress) -> None:
        bar.total = p.total_samples
        rate = p.bytes / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix_str(f"{rate / 1e6:.1f} MB/s, {p.bytes / 1e6:.0f}/"
                            f"{p.total_bytes / 1e6:.0f} MB", refresh=False)
        bar.update(p.samples - bar.n)

    try:
        with bar:
            summary = pack(
                args.dataset,
                args.out,
                shard_size=parse_size(args.shard_size),
                max_samples_per_shard=args.max_samples_per_shard,
                seed=args.seed,
                order=args.order,
                workers=args.workers,
                resume=args.resume,
                overwrite=args.overwrite,
                no_sharding=args.no_sharding,
                repo_id=args.repo_id,
                license=args.license,
                progress=show,
                ray=True if args.ray == "" else args.ray or False,
            )
    except KeyboardInterrupt:
        print("sousa-wds pack: interrupted; finished shards are kept, rerun with --resume to "
              "continue", file=sys.stderr)
        return 130
    print(f"packed {summary}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    if args.target.startswith("hf://"):
        from .publish.upload import verify_remote

        report = verify_remote(args.target, token=args.token, deep=args.deep)
    else:
        _without_torch()
        from .verification import verify

        if args.quiet:  # no bar, so no tqdm import (~0.1 s of a verify that may take 2)
            report = verify(args.target, deep=args.deep)
        else:
            from tqdm import tqdm

            # Delayed: a target that fails at once prints its error, not an empty bar.
            with tqdm(desc="verifying shards", unit="shard", delay=0.2) as bar:

                def shown(done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)

                report = verify(args.target, deep=args.deep, progress=shown)
    print(report)
    return 0 if report.ok else 1


def _cmd_upload(args: argparse.Namespace) -> int:
    from .publish.upload import upload

    result = upload(args.out, args.repo_id, dry_run=args.dry_run, **_upload_kwargs(args))
    print(result)
    return 0 if result.ok else 1


def _cmd_push(args: argparse.Namespace) -> int:
    _without_torch()
    from tqdm import tqdm

    from .io import parse_size
    from .pack import PackProgress
    from .publish.push import push

    _show_warnings()
    bar = tqdm(unit="sample", disable=args.quiet, desc="packing", dynamic_ncols=True)

    def show(p: PackProgress) -> None:
        bar.total = p.total_samples
        bar.update(p.samples - bar.n)

    pack_options = {
        "shard_size": parse_size(args.shard_size),
        "max_samples_per_shard": args.max_samples_per_shard,
        "seed": args.seed,
        "order": args.order,
        "workers": args.workers,
        "no_sharding": args.no_sharding,
        "license": args.license,
        "progress": show,
    }
    with bar:
        result = push(args.dataset, args.repo_id, staging=args.staging,
                      keep_staging=args.keep_staging, dry_run=args.dry_run,
                      pack_options=pack_options, **_upload_kwargs(args))
    print(result)
    return 0 if result.ok else 1


def _upload_kwargs(args: argparse.Namespace) -> dict:
    """The upload options of `upload` and `push`; refuses an unanswerable delete question."""
    if args.delete_stale and not args.yes and not args.dry_run and not sys.stdin.isatty():
        raise UploadError("--delete-stale asks before deleting, but there is no terminal to "
                          "ask: add --yes to delete stale files without asking")
    if args.quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()

    def ask(stale: Sequence[RemoteFile]) -> bool:
        """Name the files (the first MAX_LISTED) before asking: they may be the user's own."""
        names = listing(f"{f.path}  {human_bytes(f.size)}" for f in stale)
        print(f"on the Hub, not in the manifest:{names}")
        answer = input(f"Delete these {len(stale)} stale files from the Hub? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    return {"token": args.token, "private": args.private, "revision": args.revision,
            "commit_message": args.commit_message, "deep": args.deep,
            "delete_stale": args.delete_stale, "keep_card": args.keep_card,
            "confirm": None if args.yes else ask,
            "progress": None if args.quiet else lambda line: print(line, file=sys.stderr)}


def _cmd_get(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import LoaderError
    from .format import MEMBERS, key_problem
    from .io import write_bytes_atomic
    from .read.dataset import packed
    from .read.random_access import find

    out = None
    if args.out:
        problem = key_problem(args.key)
        if problem:  # the key names the files: it must not lead outside --out
            raise LoaderError(f"--out: key {args.key!r} {problem}, so it cannot name a file in "
                              f"{args.out}; keys are sample_ids (letters, digits, '_' and '-')")
        out = Path(args.out)
    dataset = packed(args.source, args.token, args.retries, args.cache_dir, args.cache_size)
    view, split = find(dataset, args.key, args.split, decode=False)
    sample = view[args.key]
    row = view.metadata.iloc[view.position(args.key)]
    checked = ", ".join(view.reader.verified) or "nothing: the metadata has no sha256 columns"
    seconds = row.num_frames / row.sample_rate
    print(f"{args.key}  ({split}, {row.shard_path})")
    print(f"  audio: {row.channels} ch, {row.sample_rate} Hz, {row.num_frames} frames "
          f"({seconds:.2f} s), {len(sample['flac'])} bytes of FLAC")
    print(f"  midi: {len(sample['mid'])} bytes; sha256 ok: {checked}; labels:")
    print(json.dumps(json.loads(sample["json"]), indent=2, sort_keys=True))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for ext in MEMBERS:
            write_bytes_atomic(out / f"{args.key}.{ext}", sample[ext])
        print(f"wrote {', '.join(f'{args.key}.{ext}' for ext in MEMBERS)} to {out}")
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    from .read.stream import stream

    started = time.perf_counter()
    samples = stream(args.source, args.split, where=args.where, decode=not args.no_decode,
                     shuffle=False, token=args.token, retries=args.retries,
                     cache_dir=args.cache_dir, cache_size=args.cache_size)
    planned = samples.num_samples
    ready = time.perf_counter()
    print(f"{planned} samples selected in {args.split} of {args.source} "
          f"(metadata and plan: {ready - started:.2f} s)")
    count = audio_seconds = size = 0
    for sample in samples:
        if args.limit is not None and count >= args.limit:
            break
        count += 1
        labels = json.loads(sample["json"]) if args.no_decode else sample["labels"]
        if args.no_decode:
            size += len(sample["flac"]) + len(sample["json"]) + len(sample["mid"])
            shape = f"{len(sample['flac'])} bytes of FLAC"
        else:
            channels, frames = sample["audio"].shape
            audio_seconds += frames / sample["sample_rate"]
            shape = f"audio {channels}x{frames} @ {sample['sample_rate']} Hz"
        print(f"{count:>6}  {sample['key']}  {shape}  {labels['skill_tier']}  "
              f"{labels['tempo_bpm']} bpm  overall {labels['overall_score']:.3f}")
    elapsed = max(time.perf_counter() - ready, 1e-9)
    rate = f"{count / elapsed:.1f} samples/s"
    if args.no_decode:
        rate += f", {size / elapsed / 1e6:.1f} MB/s"
    else:
        rate += f", {audio_seconds / elapsed:.0f} s of audio per second"
    print(f"{count} samples in {elapsed:.2f} s: {rate}")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    _without_torch()  # extract reads raw bytes; it never hands the stream to torch
    from tqdm import tqdm

    from .restore import ExtractProgress, extract

    with tqdm(unit="sample", desc="extracting", disable=args.quiet, dynamic_ncols=True,
              delay=0.5) as bar:
        def show(state: ExtractProgress) -> None:
            bar.total = state.total_samples
            bar.update(state.samples - bar.n)
            bar.set_postfix_str(f"{human_bytes(state.bytes)}/{human_bytes(state.total_bytes)}",
                                refresh=False)

        summary = extract(args.source, args.dir, split=args.split, where=args.where,
                          token=args.token, progress=show)
    print(f"extracted {summary}")
    return 0


def _pack_options_parser() -> argparse.ArgumentParser:
    """Options that decide a pack's bytes: shared by `pack` and `push`."""
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("pack options")
    g.add_argument("--shard-size", default="1GB",
                   help="target shard size: bytes or with a unit, e.g. 500MB, 1GB (default 1GB)")
    g.add_argument("--max-samples-per-shard", type=int, default=None,
                   help="also cut a shard after this many samples")
    g.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"seed of the within-split shuffle (default {DEFAULT_SEED})")
    g.add_argument("--order", choices=("shuffle", "sorted"), default="shuffle",
                   help="sample order within a split: seeded shuffle (default) or sample_id order")
    g.add_argument("--workers", type=int, default=None,
                   help="parallel shard writers (default: all cores); output is the same for any")
    g.add_argument("--no-sharding", action="store_true",
                   help="write loose audio/ and midi/ files instead of shards (small sets only: "
                   "refused beyond the Hub's 100k files per repo / 10k per folder)")
    g.add_argument("--license", default="other",
                   help="license tag for the dataset card (default: other)")
    return parent


def _remote_read_options_parser() -> argparse.ArgumentParser:
    """Options of reading a pack from a mirror or the Hub: shared by `get` and `stream`."""
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("remote source options")
    g.add_argument("--token", default=None, help="token for private Hub repos or HTTP mirrors")
    g.add_argument("--retries", type=int, default=None,
                   help="HTTP failures in a row without progress before giving up "
                   "(default: $SOUSA_WDS_RETRIES, else 6)")
    g.add_argument("--cache-dir", default=None,
                   help="keep remote shards and metadata in this folder, checked against the "
                   "manifest's sha256 (default: $SOUSA_WDS_CACHE_DIR; local sources: never)")
    g.add_argument("--cache-size", default=None,
                   help="cap the cache, e.g. 50GB; least recently used files go first "
                   "(default: $SOUSA_WDS_CACHE_SIZE, else no cap)")
    return parent


def _upload_options_parser() -> argparse.ArgumentParser:
    """Options of an upload to the Hub: shared by `upload` and `push`."""
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("upload options")
    g.add_argument("--dry-run", action="store_true",
                   help="print what would be added, skipped and deleted; send or delete nothing")
    g.add_argument("--private", action="store_true", help="create the repo as private")
    g.add_argument("--revision", default=None, help="branch to upload to (default main)")
    g.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or cached login)")
    g.add_argument("--commit-message", default=None, help="message of the upload commits")
    g.add_argument("--deep", action="store_true",
                   help="hash everything: local files against the manifest before sending, and "
                   "every remote file (downloaded) after the upload, not only listed sizes/hashes")
    g.add_argument("--delete-stale", action="store_true",
                   help="after a successful upload, delete remote files not in the manifest "
                   "(without it, such files in the format's folders, e.g. shards of a bigger "
                   "earlier release, refuse the upload before anything is sent)")
    g.add_argument("--yes", action="store_true", help="do not ask before deleting stale files")
    g.add_argument("--keep-card", action="store_true",
                   help="upload README.md as it is, even if it names another repo")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sousa-wds",
        description=(
            "Pack the SOUSA drum-rudiment dataset into WebDataset shards with Parquet "
            "metadata, publish it on the Hugging Face Hub, and stream it for training."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pack_options = _pack_options_parser()
    upload_options = _upload_options_parser()
    remote_options = _remote_read_options_parser()

    p = sub.add_parser(
        "example",
        help="write a small synthetic SOUSA dataset (real FLAC, MIDI and Parquet labels)",
        description="Write a small, realistic SOUSA dataset in the generator's exact layout, "
        "for trying sousa-wds without downloading anything. Deterministic for a seed.",
    )
    p.add_argument("out", help="folder to create (must not exist or be empty)")
    p.add_argument("--samples", type=int, default=60, help="number of samples (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--duration-sec", type=float, nargs=2, default=(1.0, 2.0), metavar=("MIN", "MAX"),
        help="range of performance durations in seconds, before the 0.5 s tail (default 1 2)",
    )
    p.add_argument("--channels", type=int, choices=(1, 2), default=2,
                   help="audio channels (the generator writes 2; default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_example)

    p = sub.add_parser(
        "check",
        help="validate a SOUSA dataset folder and print a summary",
        description="Read and validate a SOUSA dataset folder as the packer would, without "
        "writing anything. Every problem is listed with the rows or files and the fix; the "
        "exit code is non-zero when the dataset cannot be packed.",
    )
    p.add_argument("dataset", help="the folder the SOUSA generator wrote")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--deep", action="store_true",
                   help="decode every FLAC in full (finds damage inside a file; ~90 MB/s a "
                   "core) instead of only its last frames")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "pack",
        help="pack a SOUSA dataset into WebDataset shards + Parquet metadata + dataset card",
        description="Validate DATASET, then write OUT in the sousa-wds format (docs/format.md): "
        "tar shards per split, Parquet metadata with byte offsets, labels, shard indexes, a "
        "dataset card and manifest.json. Output is byte-identical for the same input and "
        "options, whatever --workers. Files are written atomically; an interrupted run "
        "continues with --resume.",
        parents=[pack_options],
    )
    p.add_argument("dataset", help="the folder the SOUSA generator wrote")
    p.add_argument("out", help="output folder (created; must be empty unless --resume/--overwrite)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted pack into OUT, keeping finished shards")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous pack in OUT: only files it wrote are removed "
                   "(files of yours elsewhere in OUT are kept); refused when pack's folders hold "
                   "anything else or OUT holds no sousa-wds pack")
    p.add_argument("--repo-id", default=DEFAULT_REPO_ID,
                   help="Hub repo id used in the dataset card's code snippets (`upload` "
                   "renders the card again for the repo it uploads to)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="write the shards as Ray tasks on the cluster at ADDRESS (default: "
                   "RAY_ADDRESS, else a local Ray); every node must see DATASET and OUT at the "
                   "same paths. Put it after OUT, or write --ray=ADDRESS. Output is the same as "
                   "--workers 1; --resume works as usual (pip install 'sousa-wds[ray]')")
    p.set_defaults(func=_cmd_pack)

    p = sub.add_parser(
        "verify",
        help="check a packed folder (or its Hub copy) against its manifest",
        description="Check every file against manifest.json (presence and size; --deep adds "
        "sha256), that every shard parses as WebDataset with exactly flac/json/mid per key, "
        "that every metadata row's offsets read back its member bytes, and that every sample "
        "is present exactly once. TARGET is a local folder or hf://datasets/USER/NAME[@rev]. "
        "Exits non-zero and names each problem.",
    )
    p.add_argument("target", help="packed folder, or hf://datasets/USER/NAME[@revision]")
    p.add_argument("--deep", action="store_true", help="also compare sha256 of every file")
    p.add_argument("--token", default=None,
                   help="Hub token for a private repo (default: HF_TOKEN or the cached login)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "upload",
        help="upload a packed folder to the Hugging Face Hub (dry run, resumable, verified)",
        description="Check OUT against its manifest and the Hub's limits, then upload it to the "
        "dataset repo REPO_ID with huggingface_hub's resumable multi-commit upload, and verify "
        "the remote files against the manifest. Rerun the same command to resume an "
        "interrupted upload: files already on the Hub are not sent again. The token comes "
        "from --token, HF_TOKEN or `hf auth login`, and is never printed. The dataset card "
        "is rendered again for REPO_ID when pack wrote it for another repo.",
        parents=[upload_options],
    )
    p.add_argument("out", help="a folder written by `sousa-wds pack`")
    p.add_argument("repo_id", help="dataset repo on the Hub, e.g. USER/SOUSA")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.set_defaults(func=_cmd_upload)

    p = sub.add_parser(
        "push",
        help="pack, verify and upload a SOUSA dataset in one command (resumable)",
        description="Pack DATASET into a staging folder (DATASET.hf_staging beside it unless "
        "--staging), verify it, upload it to the dataset repo REPO_ID and verify the Hub copy. "
        "Rerun the same command to resume: a finished matching pack is reused, an interrupted "
        "one resumed. The staging copy is removed after a verified upload unless "
        "--keep-staging. --dry-run packs locally only into an empty staging folder, prints the "
        "upload plan and never deletes anything.",
        parents=[pack_options, upload_options],
    )
    p.add_argument("dataset", help="the folder the SOUSA generator wrote")
    p.add_argument("repo_id", help="dataset repo on the Hub, e.g. USER/SOUSA")
    p.add_argument("--staging", default=None,
                   help="folder for the pack (default: DATASET.hf_staging beside the dataset)")
    p.add_argument("--keep-staging", action="store_true",
                   help="keep the staging pack after a verified upload")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.set_defaults(func=_cmd_push)

    p = sub.add_parser(
        "get",
        parents=[remote_options],
        help="fetch one sample by key, reading only its bytes",
        description="Read one sample's members with byte-range reads (local seek, HTTP Range "
        "or the Hub), check every member's sha256, and print its labels or save its files.",
    )
    p.add_argument("source", help="packed folder, http(s) base URL, user/name or hf://datasets/...")
    p.add_argument("key", help="the sample's key (sample_id)")
    p.add_argument("--split", default=None, help="split to look in (default: all)")
    p.add_argument("--out", default=None, help="folder to write KEY.flac, KEY.mid, KEY.json")
    p.set_defaults(func=_cmd_get)

    p = sub.add_parser(
        "stream",
        parents=[remote_options],
        help="stream samples through the loader and print them with throughput",
        description="Stream a split with the sousa-wds loader (the same pipeline training "
        "uses), optionally filtered by a metadata query, and print each sample and the rate.",
    )
    p.add_argument("source", help="packed folder, http(s) base URL, user/name or hf://datasets/...")
    p.add_argument("--split", default="train", help="split to stream (default train)")
    p.add_argument("--where", default=None,
                   help="query over the metadata columns (comparisons, in [...], and/or/not), "
                   "e.g. \"skill_tier == 'advanced' and tempo_bpm >= 120\"")
    p.add_argument("--limit", type=int, default=10, help="stop after N samples (default 10)")
    p.add_argument("--no-decode", action="store_true", help="raw bytes, no audio decoding")
    p.set_defaults(func=_cmd_stream)

    p = sub.add_parser(
        "extract",
        help="restore a SOUSA dataset folder (audio/, midi/, labels/) from a packed dataset",
        description="Write the generator's own layout (audio/{rudiment}/{id}.flac, one "
        "midi/{rudiment}/{id}.mid per augmentation group, labels/*.parquet, splits.json, "
        "index.json) from a packed dataset, streaming it shard by shard; every file is checked "
        "against the metadata and written atomically. Rerun the same command to resume: files "
        "already in DIR with the right size and sha256 are kept and not downloaded again.",
    )
    p.add_argument("source", help="packed folder, http(s) base URL, user/name or hf://datasets/...")
    p.add_argument("dir", help="folder to restore into (created; files of a previous run are "
                   "kept; other files at the paths it writes are refused, never replaced)")
    p.add_argument("--split", default=None,
                   help="extract one split: train, validation or test (default: all)")
    p.add_argument("--where", default=None,
                   help="metadata query selecting samples, as in `stream --where`")
    p.add_argument("--token", default=None, help="token for private Hub repos or HTTP mirrors")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_extract)
    return parser


def _hub_validation_error(exc: BaseException) -> bool:
    """Whether `exc` is huggingface_hub's HFValidationError (only possible once it is loaded:
    checked without importing it, which --help and local commands never need)."""
    errors = sys.modules.get("huggingface_hub.errors")
    return errors is not None and isinstance(exc, errors.HFValidationError)


def _pack_started(args: argparse.Namespace) -> bool:
    """Whether a failed pack left shards a --resume keeps (not when OUT could not be made)."""
    from .pack.state import STATE_DIR

    return args.command == "pack" and os.path.isdir(os.path.join(args.out, STATE_DIR, "shards"))


def main(argv: Sequence[str] | None = None) -> int:
    global _OWN_PROCESS
    _OWN_PROCESS = argv is None  # the command line of this process, not an in-process call
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SousaWdsError as exc:
        print(f"sousa-wds {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full, permissions, a vanished file: name it, no traceback
        hint = " with --resume to keep finished shards" if _pack_started(args) else ""
        print(f"sousa-wds {args.command}: error: {exc}. Fix the cause and rerun{hint}.",
              file=sys.stderr)
        return 1
    except ValueError as exc:  # huggingface_hub's check of a repo id or argument: a user error
        if not _hub_validation_error(exc):  # (after OSError: some errors are both)
            raise
        print(f"sousa-wds {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        resume = ("; files already sent stay on the Hub: rerun the same command to resume"
                  if args.command in ("upload", "push") else "")
        print(f"sousa-wds {args.command}: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
