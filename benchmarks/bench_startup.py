"""Start-up: `import sousa_wds` and `sousa-wds --help` against the 0.15 s target (issue 10).

    python benchmarks/bench_startup.py [--repeats 15]

Each command runs in a fresh process, `--repeats` times, interleaved with the interpreter's own
floor (`python -c pass`), so a busy machine slows all of them alike. Prints medians, min-max,
the load average, and PASS/FAIL per target (the median wall time of the whole process, the
interpreter's start included, against TARGET_S). `pack`'s time to its first shard byte needs a
dataset: benchmarks/bench_pack.py measures it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.15
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                                 os.environ.get("PYTHONPATH")]))}
CASES = (
    ("python -c pass (floor)", [sys.executable, "-c", "pass"], None),
    ("import sousa_wds", [sys.executable, "-c", "import sousa_wds"], TARGET_S),
    ("sousa-wds --help", [sys.executable, "-m", "sousa_wds.cli", "--help"], TARGET_S),
    ("sousa-wds pack --help", [sys.executable, "-m", "sousa_wds.cli", "pack", "--help"], None),
)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    print(f"load average at start: {_loadavg()}")
    times: dict[str, list[float]] = {name: [] for name, _, _ in CASES}
    for _ in range(args.repeats):
        for name, cmd, _ in CASES:
            times[name].append(timed(cmd))
    print(f"load average after: {_loadavg()}")
    print("| command | median s | min-max s | target | verdict |")
    print("|---|---:|---:|---:|---|")
    for name, _, target in CASES:
        med = statistics.median(times[name])
        verdict = "-" if target is None else ("PASS" if med <= target else "FAIL")
        goal = f"<= {target:.2f} s" if target else "-"
        print(f"| {name} | {med:.3f} | {min(times[name]):.3f}-{max(times[name]):.3f} | {goal} "
              f"| {verdict} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
