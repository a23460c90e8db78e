"""How long `sousa-wds example` takes, for a few dataset sizes, against another checkout.

Each run is a fresh `sousa-wds example` process (start-up included) writing into a new folder
that is deleted afterwards; runs of the checkouts are interleaved so a busy neighbour slows
both alike. Reports the median wall time and the median CPU seconds (user + system of the
process, less sensitive to neighbours on a shared machine).

    python benchmarks/bench_example.py --samples 60 1000 --repeats 3 [--baseline /old/checkout]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def run_once(checkout: Path, samples: int, out: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one `sousa-wds example` process importing `checkout`'s package."""
    env = os.environ | {"PYTHONPATH": str(checkout)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sousa_wds.cli", "example", str(out), "--samples",
                    str(samples), "--quiet"], env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[60, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with")
    args = parser.parse_args()
    checkouts = {"this": HERE} | ({"baseline": args.baseline} if args.baseline else {})
    with tempfile.TemporaryDirectory(prefix="bench-example-") as work:
        for samples in args.samples:
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in checkouts}
            for _ in range(args.repeats):
                for name, checkout in checkouts.items():
                    times[name].append(run_once(checkout, samples, Path(work) / "out"))
            for name, runs in times.items():
                wall = statistics.median(w for w, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                print(f"{samples:>6} samples  {name:<8}  wall {wall:6.1f} s  CPU {cpu:6.1f} s  "
                      f"(walls {', '.join(f'{w:.1f}' for w, _ in runs)})", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
