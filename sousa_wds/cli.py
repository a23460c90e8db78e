"""The `sousa-wds` command: argument parsing and one-line errors; the work lives elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence

from .errors import SousaWdsError


def _cmd_example(args: argparse.Namespace) -> int:
    from .example import make_example

    started = time.perf_counter()
    summary = make_example(
        args.out,
        samples=args.samples,
        seed=args.seed,
        duration_sec=tuple(args.duration_sec),
        channels=args.channels,
        progress=not args.quiet,
    )
    print(f"wrote {summary} in {time.perf_counter() - started:.1f} s")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .source import read_dataset

    started = time.perf_counter()
    dataset = read_dataset(args.dataset)
    elapsed = time.perf_counter() - started
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = dataset.summary()
    if args.json:
        print(json.dumps(summary | {"seconds": round(elapsed, 3)}, indent=2))
        return 0
    print(f"{summary['root']}: valid SOUSA dataset ({elapsed:.2f} s)")
    print(
        f"  {summary['samples']} samples, {summary['profiles']} profiles, "
        f"{summary['rudiments']} rudiments, {summary['midi_files']} MIDI files, "
        f"{_human(summary['audio_bytes'])} of audio"
    )
    for name, entry in summary["splits"].items():
        print(
            f"  {name:<10} {entry['samples']:>7} samples  {_human(entry['audio_bytes']):>10}"
            f"  {entry['midi_files']:>6} MIDI"
        )
    tiers = ", ".join(f"{k}: {v}" for k, v in summary["skill_tiers"].items())
    print(f"  skill tiers: {tiers}")
    return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sousa-wds",
        description=(
            "Pack the SOUSA drum-rudiment dataset into WebDataset shards with Parquet "
            "metadata, publish it on the Hugging Face Hub, and stream it for training."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    p.set_defaults(func=_cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except SousaWdsError as exc:
        print(f"sousa-wds {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sousa-wds {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
