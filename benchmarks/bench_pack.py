"""Pack benchmark: `sousa-wds pack` against GNU tar, Python tarfile and the `datasets` Parquet path.

    /work/venv/bin/python benchmarks/bench_pack.py --gb 1.0 --repeats 3 [--workdir DIR] [--keep]
        [--profile]

What it does, in one run:
- Makes an example SOUSA dataset of at least `--gb` GB of FLAC (durations 4-12 s, like the full
  set) and one of a quarter of its samples, cached in WORKDIR/datasets keyed by size (a second
  run reuses them).
- Runs every contender `--repeats` times, interleaved (round 1: all contenders, round 2: all...),
  each in its own process, writing into WORKDIR/out (the same filesystem for all). Before every
  run: the previous output is removed, dirty pages are flushed (`os.sync`, so one contender's
  writeback is not billed to the next), and the source media are read once (page cache warm,
  the same for everyone). The time is the wall time of the whole process, start-up included.
- Contenders: GNU `tar -cf out.tar -C DATASET audio midi` (the reference; a copy of the media
  into one file, no hashing, no fsync); the same followed by `sync out.tar` (what durability
  costs); Python `tarfile` adding the same two folders; `sousa-wds pack` with 1 and 2 workers
  (2 = the default on this 2-core machine), and with 2 workers and 250 MB shards (enough
  shards to keep both workers busy, as at full scale); pack of the quarter-size dataset (N vs 4N
  samples: memory flatness, and the CPU per GB once start-up is paid); and the Parquet path
  the SOUSA project uses today: `datasets` with an `Audio(decode=False)` column, sharded and
  embedded exactly as `push_to_hub` does it (`_estimate_nbytes`, 500 MB shards,
  `embed_table_storage` via `map(keep_in_memory=True)`, `to_parquet`), written to local
  files instead of uploaded. It embeds the FLAC bytes and the label columns; MIDI is not
  embedded (about 1% of the bytes), so it does slightly less work.
- Peak RSS: each command runs under GNU `time -f %M` (the kernel's maximum over the process and
  its waited-for descendants, via wait4), and a thread polls `/proc/<pid>/status` (VmHWM) of
  the process and every descendant every 20 ms, to tell the parent from the workers. Peak RSS
  = the largest single process. Forked workers count the pages they share with the parent, as
  the kernel does. CPU seconds (user + system, whole tree) come from the same `time` and are
  less sensitive than wall time to other jobs on a shared machine.
- Prints a table (medians over repeats, ratio to GNU tar's median, worst peak RSS), then the
  targets of the issue with PASS/FAIL. It never exits non-zero for a missed target.
- `--profile`: the import cost of the pack path, one extra 1-worker pack under cProfile
  summarised by where the time goes, and a cost model: each primitive (read, SHA-256, write,
  fsync) timed alone over the same files.
- Packs run the `sousa_wds` of the checkout this file is in (PYTHONPATH is set to it).

Requirements: Linux (`/proc`), GNU tar, GNU time (`/usr/bin/time`, Debian package `time`), and
the project's venv with the `test` extra (it brings `datasets`, needed only for the Parquet
contender). No psutil needed. Results and their reading: docs/benchmarks.md, "Pack".
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # measure this checkout's sousa_wds, in-process and in subprocesses

PYTHON = sys.executable
GNU_TIME = "/usr/bin/time"
SEED = 0
DURATION_SEC = (4.0, 12.0)
FLAC_BYTES_PER_SAMPLE = 1.30e6  # first guess for (4, 12) s stereo PCM_24; corrected after one try
POLL_S = 0.02
MB = 1e6

# Targets of issue 10 (hashing, fsync and verification data included), against the durable
# baseline `tar -cf out.tar FILES && sync` measured in the same run.
BASELINE = "GNU tar -cf + sync"
DEFAULT_PACK = "pack, 2 workers (default)"
TARGET_DEFAULT_RATIO = 1.25
TARGET_ONE_WORKER_RATIO = 1.6
TARGET_CPU_RATIO = 1.5  # pack CPU-s/GB <= 1.5 x (tar's CPU-s/GB + one SHA-256 pass's s/GB)
TARGET_FIRST_BYTE_S = 0.5  # plus the time to read the label tables
TARGET_VERIFY_RATIO = 0.9  # verify --deep bytes/s >= 0.9 x one core's SHA-256 pass
TARGET_RSS_MB = 200.0
FLAT_TOLERANCE = 1.15  # 4N may use at most 15% more peak RSS than N (100k: bench_check.py)

TARFILE_CODE = """
import os, sys, tarfile
src, out = sys.argv[1:]
with tarfile.open(out, "w") as tar:
    for top in ("audio", "midi"):
        tar.add(os.path.join(src, top), arcname=top)
"""

# What `Dataset.push_to_hub` does per split (datasets 5.x `_push_parquet_shards_to_hub` with
# num_proc=None), writing each shard to OUT instead of uploading it.
DATASETS_CODE = """
import json, os, sys
import pyarrow.parquet as pq
import datasets
from datasets import Audio, Dataset
from datasets.arrow_writer import (get_writer_batch_size_from_data_size,
                                   get_writer_batch_size_from_features)
from datasets.table import embed_table_storage
from datasets.utils.py_utils import convert_file_size_to_int

datasets.disable_progress_bars()
src, out = sys.argv[1:]
samples = pq.read_table(os.path.join(src, "labels", "samples.parquet"))
exercises = pq.read_table(os.path.join(src, "labels", "exercises.parquet"))
def drop_null(t):  # all-null columns (arrow null type) cannot be joined
    return t.select([f.name for f in t.schema if str(f.type) != "null"])
table = drop_null(samples).join(drop_null(exercises), "sample_id")
splits = json.load(open(os.path.join(src, "splits.json")))
split_of = {p: name for name, key in (("train", "train_profile_ids"),
                                      ("validation", "val_profile_ids"),
                                      ("test", "test_profile_ids")) for p in splits[key]}
columns = {name: table.column(name).to_pylist() for name in table.column_names
           if name not in ("audio_path", "midi_path")}
columns["audio"] = [os.path.join(src, p) for p in table.column("audio_path").to_pylist()]
row_split = [split_of[p] for p in columns["profile_id"]]
max_shard = convert_file_size_to_int(datasets.config.MAX_SHARD_SIZE)
for split in ("train", "validation", "test"):
    rows = [i for i, s in enumerate(row_split) if s == split]
    if not rows:
        continue
    ds = Dataset.from_dict({k: [v[i] for i in rows] for k, v in columns.items()})
    ds = ds.cast_column("audio", Audio(decode=False))
    nbytes = ds._estimate_nbytes()
    batch = (get_writer_batch_size_from_features(ds.features)
             or get_writer_batch_size_from_data_size(len(ds), nbytes))
    num_shards = int(nbytes / max_shard) + 1
    for index in range(num_shards):
        shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
        shard = shard.with_format("arrow").map(embed_table_storage, batched=True,
                                               batch_size=batch, keep_in_memory=True)
        shard = shard.with_format(None)
        shard.to_parquet(os.path.join(out, f"{split}-{index:05d}-of-{num_shards:05d}.parquet"),
                         batch_size=batch)
"""


# ---------------------------------------------------------------------------------------------
# Datasets


def _tree_bytes(root: Path, tops: tuple[str, ...] = ("audio", "midi")) -> int:
    return sum(f.stat().st_size for top in tops for f in (root / top).rglob("*") if f.is_file())


def _make(path: Path, samples: int) -> dict:
    from sousa_wds.example import make_example

    marker = path / "bench.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("samples") == samples:
            return info
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    print(f"  generating {samples} samples into {path} ...", flush=True)
    make_example(path, samples=samples, seed=SEED, duration_sec=DURATION_SEC)
    info = {"samples": samples, "media_bytes": _tree_bytes(path),
            "flac_bytes": _tree_bytes(path, ("audio",)), "seconds": time.perf_counter() - started}
    marker.write_text(json.dumps(info))
    print(f"  ... {info['media_bytes'] / MB:.0f} MB in {info['seconds']:.0f} s", flush=True)
    return info


def make_datasets(workdir: Path, gb: float) -> tuple[Path, dict, Path, dict]:
    """The full dataset (>= gb GB of FLAC) and one of a quarter of its samples, cached."""
    target = gb * 1e9
    full = workdir / "datasets" / f"full-{gb:g}GB"
    marker = full / "bench.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
    else:
        samples = max(8, int(target / FLAC_BYTES_PER_SAMPLE) + 1)
        info = _make(full, samples)
        if info["flac_bytes"] < target:  # our per-sample guess was low: scale and remake
            samples = int(samples * target / info["flac_bytes"] * 1.01) + 1
            info = _make(full, samples)
    quarter = workdir / "datasets" / f"quarter-{gb:g}GB"
    qinfo = _make(quarter, max(2, info["samples"] // 4))
    return full, info, quarter, qinfo


def warm(root: Path) -> None:
    """Read every media and label file once, so each contender starts with a warm page cache."""
    for top in ("audio", "midi", "labels"):
        for f in (root / top).rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    while fh.read(1 << 20):
                        pass


# ---------------------------------------------------------------------------------------------
# Running one process and watching its memory


@dataclass
class Run:
    seconds: float
    returncode: int
    rss: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (cmd, VmHWM MB)
    kernel_mb: float = 0.0  # GNU time's %M: the largest process of the tree (wait4)
    root: int = 0
    stderr: str = ""
    cpu_s: float = 0.0  # user + system seconds of the process and its waited-for descendants

    @property
    def peak_mb(self) -> float:
        return max([self.kernel_mb, *(mb for _, mb in self.rss.values())])

    @property
    def parent_mb(self) -> float:
        return self.rss.get(self.root, ("", 0.0))[1]

    @property
    def worker_mb(self) -> float:
        return max([mb for pid, (_, mb) in self.rss.items() if pid != self.root], default=0.0)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return kids


def _hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")[:80]
    except OSError:
        return "?"


def run(cmd: list[str], env: dict | None = None) -> Run:
    """Run `cmd`, return its wall time and the peak RSS of it and every descendant.

    The command runs under GNU `time -f "%M %U %S"`: its maximum comes from wait4 in that small
    process, so it is the largest process of the command's tree. (wait4 from this process would
    not do: a child's maxrss starts at its parent's size when forked, before exec.)
    """
    with tempfile.TemporaryDirectory() as tmp:
        maxrss_file = Path(tmp, "maxrss")
        err_file = Path(tmp, "stderr")
        with open(err_file, "wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen([GNU_TIME, "-f", "%M %U %S", "-o", str(maxrss_file), *cmd],
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    env={**os.environ, **(env or {})})
            rss: dict[int, tuple[str, float]] = {}
            done = threading.Event()
            root: list[int] = []

            def poll() -> None:
                while True:
                    kids = _children(proc.pid)  # the command itself, under time
                    if kids and not root:
                        root.append(kids[0])
                    stack = list(kids)
                    while stack:
                        pid = stack.pop()
                        mb = _hwm_mb(pid)
                        if mb is not None:
                            name = rss[pid][0] if pid in rss else _cmdline(pid)
                            rss[pid] = (name, max(mb, rss.get(pid, ("", 0.0))[1]))
                        stack += _children(pid)
                    if done.wait(POLL_S):
                        return

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            proc.wait()
            seconds = time.perf_counter() - started
            done.set()
            poller.join()
        stderr = err_file.read_text(errors="replace")
        # The last line is "%M %U %S" (earlier lines: "Command exited with non-zero status").
        last = maxrss_file.read_text().splitlines()[-1].split() if maxrss_file.is_file() else []
        kernel_mb = int(last[0]) / 1024 if len(last) == 3 else 0.0
        cpu = float(last[1]) + float(last[2]) if len(last) == 3 else 0.0
    return Run(seconds, proc.returncode, rss, kernel_mb, root[0] if root else 0, stderr, cpu)


# ---------------------------------------------------------------------------------------------
# Contenders


@dataclass(frozen=True)
class Contender:
    name: str
    dataset: str  # "full" or "quarter"
    kind: str  # "tar", "tar+sync", "tarfile", "pack", "datasets"
    workers: int = 0
    shard_size: str | None = None
    extra: bool = False  # run only with --all or a matching --only

    def command(self, src: Path, out: Path) -> list[list[str]]:
        if self.kind == "tar":
            return [["tar", "-cf", str(out / "out.tar"), "-C", str(src), "audio", "midi"]]
        if self.kind == "tar+sync":
            return [["sh", "-c", 'tar -cf "$1" -C "$2" audio midi && sync "$1"', "sh",
                     str(out / "out.tar"), str(src)]]
        if self.kind == "tarfile":
            return [[PYTHON, "-c", TARFILE_CODE, str(src), str(out / "out.tar")]]
        if self.kind == "datasets":
            return [[PYTHON, "-c", DATASETS_CODE, str(src), str(out)]]
        cmd = [PYTHON, "-m", "sousa_wds.cli", "pack", str(src), str(out / "pack"),
               "--workers", str(self.workers), "--quiet", "--overwrite"]
        if self.shard_size:
            cmd += ["--shard-size", self.shard_size]
        return [cmd]


CONTENDERS = (
    Contender("GNU tar -cf", "full", "tar"),
    Contender("GNU tar -cf + sync", "full", "tar+sync"),
    Contender("Python tarfile", "full", "tarfile", extra=True),
    Contender("pack, 1 worker", "full", "pack", workers=1),
    Contender(DEFAULT_PACK, "full", "pack", workers=2),
    Contender("pack, 2 workers, 250MB shards", "full", "pack", workers=2, shard_size="250MB",
              extra=True),
    Contender("pack N/4, 1 worker", "quarter", "pack", workers=1, extra=True),
    Contender("pack N/4, 2 workers", "quarter", "pack", workers=2),  # CPU per GB at scale
    Contender("datasets Parquet (push_to_hub path)", "full", "datasets", extra=True),
)


def run_contender(c: Contender, src: Path, out: Path, env: dict) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()  # the previous contender's dirty pages are written back now, not during this run
    warm(src)
    result = run(c.command(src, out)[0], env=env)
    if result.returncode != 0:
        raise SystemExit(f"{c.name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


# ---------------------------------------------------------------------------------------------
# Per-round measurements beside the contenders: one SHA-256 pass, first shard byte, verify


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def sha256_pass(files: list[Path]) -> tuple[float, int]:
    """Seconds one core spends hashing `files` (read first, untimed; warm cache), and bytes."""
    import hashlib

    hashing = 0.0
    total = 0
    for path in files:
        data = path.read_bytes()
        started = time.perf_counter()
        hashlib.sha256(data).digest()
        hashing += time.perf_counter() - started
        total += len(data)
    return hashing, total


# The first read is not timed: `pq.read_table` imports pyarrow.dataset and pandas on first use
# (~0.6 s here), which would be billed as "reading" otherwise.
LABEL_READ_CODE = """
import sys, time
import pyarrow.parquet as pq
def read():
    for name in ("samples", "exercises", "measures", "strokes"):
        pq.read_table(f"{sys.argv[1]}/labels/{name}.parquet")
read()
t = time.perf_counter()
read()
print(time.perf_counter() - t)
"""


def label_read_s(src: Path, env: dict) -> float:
    """Reading the four label tables with pyarrow, in a fresh process, imports excluded."""
    out = subprocess.run([PYTHON, "-c", LABEL_READ_CODE, str(src)], check=True,
                         capture_output=True, text=True, env={**os.environ, **env})
    return float(out.stdout.split()[-1])


def first_byte_s(src: Path, out: Path, env: dict) -> float:
    """Seconds from starting `sousa-wds pack` (default workers) to its first shard byte on disk.

    The pack is then stopped with Ctrl-C (SIGINT to its process group, which it handles: the
    workers stop and remove their temporary shard).
    """
    import signal

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()
    warm(src)
    data = out / "pack" / "data"
    started = time.perf_counter()
    proc = subprocess.Popen([PYTHON, "-m", "sousa_wds.cli", "pack", str(src), str(out / "pack"),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env}, start_new_session=True)
    seconds = float("nan")
    while proc.poll() is None:
        if data.is_dir() and any(f.stat().st_size > 0 for f in data.rglob("*") if f.is_file()):
            seconds = time.perf_counter() - started
            break
        time.sleep(0.002)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    proc.wait()
    return seconds


def verify_deep(out: Path, env: dict) -> Run:
    return run([PYTHON, "-m", "sousa_wds.cli", "verify", str(out / "pack"), "--deep", "--quiet"],
               env=env)


# ---------------------------------------------------------------------------------------------
# Profile


CATEGORIES = (
    # (label, [(file suffix or "~" for C functions, function name)]); C functions count their
    # own time, Python functions their cumulative time.
    ("read source files (tar.read_media)", [("tar.py", "read_media")]),
    ("sha256 on the main thread (member digests)",
     [("~", "<method 'update' of '_hashlib.HASH' objects>"),
      ("~", "<built-in method _hashlib.openssl_sha256>")]),
    ("waiting on locks/queues (the shard's hash+write thread)",
     [("~", "<method 'acquire' of '_thread.lock' objects>")]),
    ("fsync", [("~", "<built-in method posix.fsync>"),
               ("~", "<built-in method posix.fdatasync>")]),
    ("JSON record encoding (encode_record)", [("schema.py", "encode_record")]),
    ("tar headers (tar_member_info)", [("names.py", "tar_member_info")]),
    ("labels to Python (RecordBatch.to_pylist)",
     [("~", "<method 'to_pylist' of 'pyarrow.lib.RecordBatch' objects>")]),
    ("read + validate source (read_dataset)", [("read.py", "read_dataset")]),
    ("plan shards (plan_shards)", [("plan.py", "plan_shards")]),
    ("metadata, labels, indexes, preview, card, manifest",
     [("tables.py", "write_metadata"), ("tables.py", "write_label_tables"),
      ("indexes.py", "write_indexes"), ("indexes.py", "build_manifest"),
      ("preview.py", "write_preview"), ("card.py", "render_card")]),
)


def profile_pack(src: Path, out: Path, workdir: Path, env: dict) -> list[tuple[str, float]]:
    """cProfile of a 1-worker pack, by category. cProfile sees the main thread only: work that
    tar.py hands to its hash+write thread shows up as time waiting on its queue."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    os.sync()
    warm(src)
    prof = workdir / "pack.prof"
    started = time.perf_counter()
    subprocess.run([PYTHON, "-m", "cProfile", "-o", str(prof), "-m", "sousa_wds.cli", "pack",
                    str(src), str(out / "pack"), "--workers", "1", "--quiet", "--overwrite"],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, **env})
    wall = time.perf_counter() - started
    stats = pstats.Stats(str(prof)).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    prof.unlink()
    rows: list[tuple[str, float]] = []
    accounted = 0.0
    for label, keys in CATEGORIES:
        total = 0.0
        for suffix, func in keys:
            for (file, _, name), (_, _, tt, ct, _) in stats.items():
                if name == func and (suffix == "~" or file.endswith(suffix)):
                    total += tt if suffix == "~" else ct
        rows.append((label, total))
        accounted += total
    # Imports run lazily inside pack() (tqdm, the card's templates): importlib entry points
    # called from a sousa_wds function body (not the CLI's, which runs before pack()).
    lazy = 0.0
    for (file, _, name), (_, _, _, _, callers) in stats.items():
        if file.startswith("<frozen importlib") and name in ("_find_and_load", "_handle_fromlist"):
            for (cfile, _, cname), (_, _, _, cct) in callers.items():
                if ("sousa_wds" in cfile and not cfile.endswith("cli.py")
                        and cname not in ("<module>", "render_card")):
                    lazy += cct
    rows.append(("imports inside pack() (tqdm, card)", lazy))
    accounted += lazy
    # The categories are disjoint, except that the small files' sha256 (fingerprint, manifest)
    # also count under their own stage; the C calls inside them are tiny.
    main = max((ct for (file, _, name), (_, _, tt, ct, _) in stats.items()
                if file.endswith("run.py") and name == "pack"), default=0.0)
    rows.append(("other inside pack() (tarfile's Python code, loops)", main - accounted))
    rows.append(("= pack() total, inside the process", main))
    rows.append(("interpreter start + imports before pack()", wall - main))
    rows.append(("= whole process wall time, under cProfile", wall))
    return rows


def cost_model(src: Path, out: Path) -> list[tuple[str, float]]:
    """The primitives a pack cannot avoid, timed alone on one core over the same media files."""
    import hashlib

    files = sorted(p for top in ("audio", "midi") for p in (src / top).rglob("*") if p.is_file())
    flacs = [p for p in files if p.suffix == ".flac"]
    out.mkdir(parents=True, exist_ok=True)
    os.sync()
    warm(src)
    rows = []
    t = time.perf_counter()
    for p in files:
        p.read_bytes()
    rows.append(("read every file (Path.read_bytes)", time.perf_counter() - t))
    sample = [p.read_bytes() for p in flacs[:64]]
    scale = sum(p.stat().st_size for p in files) / sum(map(len, sample))
    t = time.perf_counter()
    for data in sample:
        hashlib.sha256(data).digest()
    rows.append(("one sha256 pass over all bytes", (time.perf_counter() - t) * scale))
    target = out / "cost-model.bin"
    t = time.perf_counter()
    with open(target, "wb") as fh:
        for p in files:
            fh.write(p.read_bytes())
        written = time.perf_counter() - t
        fh.flush()
        t = time.perf_counter()
        os.fsync(fh.fileno())
        synced = time.perf_counter() - t
    rows.append(("read_bytes + write every file into one file", written))
    rows.append(("fsync of that file", synced))
    target.unlink()
    os.sync()
    buffer = bytearray(max(p.stat().st_size for p in files))
    view = memoryview(buffer)
    t = time.perf_counter()
    for p in files:
        with open(p, "rb", buffering=0) as fh:
            fh.readinto(buffer)
    rows.append(("read every file with readinto into one reused buffer", time.perf_counter() - t))
    t = time.perf_counter()
    with open(target, "wb") as out_fh:
        for p in files:
            with open(p, "rb", buffering=0) as fh:
                out_fh.write(view[:fh.readinto(buffer)])
    rows.append(("readinto + write every file into one file", time.perf_counter() - t))
    target.unlink()
    return rows


# ---------------------------------------------------------------------------------------------
# Report


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _sha256_rate() -> float:
    """GB/s of one sha256 pass over a cache-resident 1 MiB buffer (best of 3): the hash's floor."""
    import hashlib

    data = os.urandom(1 << 20)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        h = hashlib.sha256()
        for _ in range(256):
            h.update(data)
        best = min(best, time.perf_counter() - t)
    return 256 * len(data) / best / 1e9


def _fmt_mb(mb: float) -> str:
    return f"{mb:.0f}" if mb else "-"


def _cpu_checks(runs: dict[str, list[Run]], extra: dict[str, list[float]],
                sizes: dict[str, int], media_bytes: int,
                quarter_bytes: int) -> list[tuple[str, str, bool]]:
    """CPU-s per GB of pack against 1.5 x (durable tar's CPU-s/GB + one SHA-256 pass's s/GB).

    Whole runs (start-up, the label checks and the FLAC end checks included), and at scale:
    the CPU the 4N pack spends beyond the N pack, per GB beyond it, so what does not grow
    with the data (interpreter, imports, card) drops out. Beside them the floor of a pack that
    keeps both digests: durable tar + two SHA-256 passes.
    """
    gb = media_bytes / 1e9
    sha = statistics.median(extra["sha_src_s"]) / (sizes["src"] / 1e9)
    tar = statistics.median(r.cpu_s for r in runs[BASELINE]) / gb
    budget = TARGET_CPU_RATIO * (tar + sha)
    checks = []
    for name in ("pack, 1 worker", DEFAULT_PACK):
        if name in runs:
            cpu = statistics.median(r.cpu_s for r in runs[name]) / gb
            checks.append((f"{name}: CPU-s/GB <= {TARGET_CPU_RATIO} x (tar {tar:.2f} + sha256 "
                           f"{sha:.2f}) = {budget:.2f}", f"{cpu:.2f} CPU-s/GB "
                           f"({cpu / (tar + sha):.2f}x)", cpu <= budget))
    quarter = "pack N/4, 2 workers"
    if DEFAULT_PACK in runs and quarter in runs:
        extra_cpu = (statistics.median(r.cpu_s for r in runs[DEFAULT_PACK])
                     - statistics.median(r.cpu_s for r in runs[quarter]))
        cpu = extra_cpu / ((media_bytes - quarter_bytes) / 1e9)
        checks.append((f"  at scale ({DEFAULT_PACK}, CPU of N minus N/4, per GB between them) "
                       f"<= {budget:.2f}; floor with both digests: tar + 2 x sha256 = "
                       f"{tar + 2 * sha:.2f}", f"{cpu:.2f} CPU-s/GB ({cpu / (tar + sha):.2f}x)",
                       cpu <= budget))
    return checks


def _startup_and_verify_checks(extra: dict[str, list[float]],
                               sizes: dict[str, int]) -> list[tuple[str, str, bool]]:
    first = statistics.median(extra["first_byte_s"])
    labels = statistics.median(extra["labels_s"])
    limit = TARGET_FIRST_BYTE_S + labels
    checks = [(f"first shard byte <= {TARGET_FIRST_BYTE_S} s + label read {labels:.2f} s "
               f"(min-max {min(extra['first_byte_s']):.2f}-{max(extra['first_byte_s']):.2f})",
               f"{first:.2f} s ({first / limit:.2f}x)", first <= limit)]
    if extra["verify_s"]:
        rate = sizes["out"] / statistics.median(extra["verify_s"])
        sha_rate = sizes["out"] / statistics.median(extra["sha_out_s"])
        cold_rate = sizes["out"] / statistics.median(extra["verify_cold_s"])
        checks.append((f"verify --deep >= {TARGET_VERIFY_RATIO}x one core's sha256 pass over "
                       f"the folder ({sha_rate / 1e9:.2f} GB/s), both cached",
                       f"{rate / 1e9:.2f} GB/s ({rate / sha_rate:.2f}x; uncached right after "
                       f"the pack {cold_rate / 1e9:.2f} GB/s)",
                       rate >= TARGET_VERIFY_RATIO * sha_rate))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0,
                        help="GB of FLAC in the dataset (default 1.0)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (default 3)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "bench-pack",
                        help="scratch folder: cached datasets and outputs "
                             "(default /tmp/bench-pack)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated datasets in WORKDIR for the next run (default: "
                             "remove everything this benchmark wrote)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile a 1-worker pack with cProfile")
    parser.add_argument("--only", default=None,
                        help="comma-separated substrings: run only matching contenders (plus tar)")
    parser.add_argument("--all", action="store_true",
                        help="also run the reference contenders (tarfile, 250MB shards, N/4 with "
                             "1 worker, datasets)")
    args = parser.parse_args(argv)

    workdir = args.workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} (GNU time) is needed for peak RSS: apt-get install time")
    env = {"HF_HOME": str(workdir / "hf-home"), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                       os.environ.get("PYTHONPATH")]))}
    tar_version = subprocess.run(["tar", "--version"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {tar_version}")
    print(f"workdir: {workdir}")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                            "--untracked-files=no", "sousa_wds"],
                           capture_output=True, text=True).stdout.split()
    print(f"code: {head or '?'}{' + uncommitted changes in sousa_wds/' if dirty else ''}")
    print(f"load average at start: {_loadavg()}; one core hashes sha256 at "
          f"{_sha256_rate():.2f} GB/s")
    started = time.perf_counter()
    try:
        full, info, quarter, qinfo = make_datasets(workdir, args.gb)
        sources = {"full": full, "quarter": quarter}
        print(f"dataset: {info['samples']} samples, {info['media_bytes'] / MB:.0f} MB of media "
              f"({info['flac_bytes'] / MB:.0f} MB FLAC); quarter: {qinfo['samples']} samples, "
              f"{qinfo['media_bytes'] / MB:.0f} MB")

        if args.only:
            contenders = [c for c in CONTENDERS if c.kind.startswith("tar") and not c.extra
                          or any(s in c.name for s in args.only.split(","))]
        else:
            contenders = [c for c in CONTENDERS if args.all or not c.extra]
        runs: dict[str, list[Run]] = {c.name: [] for c in contenders}
        extra: dict[str, list[float]] = {k: [] for k in (
            "sha_src_s", "sha_out_s", "verify_s", "verify_cold_s", "first_byte_s",
            "labels_s")}
        sizes = {"src": 0, "out": 0}
        source_files = files_under(full / "audio") + files_under(full / "midi")
        for round_ in range(args.repeats):
            for c in contenders:
                r = run_contender(c, sources[c.dataset], workdir / "out", env)
                runs[c.name].append(r)
                print(f"  round {round_ + 1}/{args.repeats} {c.name:<38} {r.seconds:7.2f} s  "
                      f"peak {r.peak_mb:6.0f} MB  CPU {r.cpu_s:6.2f} s", flush=True)
                if c.name == DEFAULT_PACK:  # verify --deep the pack just written
                    # Pack leaves its shards out of the page cache: right after it, verify
                    # reads them from disk. The target compares with a warm sha256 pass, so
                    # verify is timed again once that pass has read the folder.
                    cold = verify_deep(workdir / "out", env)
                    secs, sizes["out"] = sha256_pass(files_under(workdir / "out" / "pack"))
                    v = verify_deep(workdir / "out", env)
                    extra["verify_cold_s"].append(cold.seconds)
                    extra["verify_s"].append(v.seconds)
                    extra["sha_out_s"].append(secs)
                    print(f"  round {round_ + 1}/{args.repeats} {'verify --deep':<38} "
                          f"{v.seconds:7.2f} s  (one sha256 pass over it: {secs:.2f} s; "
                          f"right after the pack, uncached: {cold.seconds:.2f} s)", flush=True)
            secs, sizes["src"] = sha256_pass(source_files)
            extra["sha_src_s"].append(secs)
            extra["labels_s"].append(label_read_s(full, env))
            extra["first_byte_s"].append(first_byte_s(full, workdir / "out", env))
            print(f"  round {round_ + 1}/{args.repeats} sha256 pass over the media {secs:.2f} s, "
                  f"label tables read {extra['labels_s'][-1]:.2f} s, pack's first shard byte "
                  f"after {extra['first_byte_s'][-1]:.2f} s", flush=True)
        shutil.rmtree(workdir / "out", ignore_errors=True)

        print(f"load average after the runs: {_loadavg()}")
        med = {name: statistics.median(r.seconds for r in rs) for name, rs in runs.items()}
        tar = med[BASELINE]
        print()
        print("| contender | median s | x durable tar | min-max s | median CPU s "
              "| peak RSS MB (max process) | parent | largest worker |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for c in contenders:
            rs = runs[c.name]
            secs = [r.seconds for r in rs]
            ratio = f"{med[c.name] / tar:.2f}" if c.dataset == "full" else "-"
            split = (f"{_fmt_mb(max(r.parent_mb for r in rs))} | "
                     f"{_fmt_mb(max(r.worker_mb for r in rs))}" if c.kind == "pack" else "- | -")
            cpu = statistics.median(r.cpu_s for r in rs)
            print(f"| {c.name} | {med[c.name]:.2f} | {ratio} | {min(secs):.2f}-{max(secs):.2f} | "
                  f"{cpu:.2f} | {max(r.peak_mb for r in rs):.0f} | {split} |")

        print()
        print(f"targets (hashing included; baseline: {BASELINE}, median {tar:.2f} s):")

        def verdict(ok: bool) -> str:
            return "PASS" if ok else "FAIL"

        def peak(name: str) -> float:
            return max(r.peak_mb for r in runs[name]) if name in runs else float("nan")

        checks = []
        if DEFAULT_PACK in med:
            ratio = med[DEFAULT_PACK] / tar
            checks.append((f"default workers (2) <= {TARGET_DEFAULT_RATIO}x durable tar",
                           f"{ratio:.2f}x", ratio <= TARGET_DEFAULT_RATIO))
        if "pack, 2 workers, 250MB shards" in med:
            ratio = med["pack, 2 workers, 250MB shards"] / tar
            checks.append((f"  (reference: 2 workers, 250MB shards <= {TARGET_DEFAULT_RATIO}x)",
                           f"{ratio:.2f}x", ratio <= TARGET_DEFAULT_RATIO))
        if "pack, 1 worker" in med:
            ratio = med["pack, 1 worker"] / tar
            checks.append((f"1 worker <= {TARGET_ONE_WORKER_RATIO}x durable tar",
                           f"{ratio:.2f}x", ratio <= TARGET_ONE_WORKER_RATIO))
        checks += _cpu_checks(runs, extra, sizes, info["media_bytes"], qinfo["media_bytes"])
        checks += _startup_and_verify_checks(extra, sizes)
        for c in contenders:
            if c.kind == "pack":
                mb = peak(c.name)
                checks.append((f"{c.name}: every process < {TARGET_RSS_MB:.0f} MB",
                               f"{mb:.0f} MB", mb < TARGET_RSS_MB))
        if DEFAULT_PACK in runs and "pack N/4, 2 workers" in runs:
            small = max(r.worker_mb for r in runs["pack N/4, 2 workers"])
            big = max(r.worker_mb for r in runs[DEFAULT_PACK])
        else:
            small = big = 0.0
        if small and big:  # a pack of one shard runs in-process: no worker to compare
            checks.append((f"flat in N, worker processes only (they hold the media): peak at 4N "
                           f"<= {FLAT_TOLERANCE}x peak at N", f"{small:.0f} -> {big:.0f} MB "
                           f"({big / small:.2f}x)", big <= small * FLAT_TOLERANCE))
        for w, full_name in ((1, "pack, 1 worker"), (2, DEFAULT_PACK)):
            q_name = f"pack N/4, {w} worker{'s' if w > 1 else ''}"
            if full_name in runs and q_name in runs:
                small, big = peak(q_name), peak(full_name)
                checks.append((f"flat in N ({w} worker{'s' if w > 1 else ''}, largest process): "
                               f"peak at 4N <= {FLAT_TOLERANCE}x peak at N",
                               f"{small:.0f} -> {big:.0f} MB ({big / small:.2f}x)",
                               big <= small * FLAT_TOLERANCE))
        for label, value, ok in checks:
            print(f"  {verdict(ok)}  {label}: {value}")
        if "datasets Parquet (push_to_hub path)" in med:
            name = "datasets Parquet (push_to_hub path)"
            print(f"  info  datasets Parquet path: {med[name] / tar:.2f}x GNU tar, peak "
                  f"{peak(name):.0f} MB")

        if args.profile:
            print("\nimport cost (median of 3 processes; wall s, peak RSS MB):")
            for label, code in (
                ("python -c pass", "pass"),
                ("import sousa_wds.pack", "import sousa_wds.pack"),
                ("import sousa_wds.pack, webdataset, torch marked absent (what the CLI does)",
                 "import sys; sys.modules['torch'] = None; import sousa_wds.pack, webdataset"),
                ("import sousa_wds.pack, webdataset (imports torch when installed)",
                 "import sousa_wds.pack, webdataset"),
            ):
                rs = [run([PYTHON, "-c", code], env=env) for _ in range(3)]
                print(f"  {statistics.median(r.seconds for r in rs):6.2f} s "
                      f"{statistics.median(r.peak_mb for r in rs):6.0f} MB  {label}")
            print("\nprofile of a 1-worker pack (cProfile, seconds):")
            for label, secs in profile_pack(full, workdir / "out", workdir, env):
                print(f"  {secs:7.2f}  {label}")
            print("\ncost model: each primitive alone, one core, same files (seconds):")
            for label, secs in cost_model(full, workdir / "out"):
                print(f"  {secs:7.2f}  {label}")
            shutil.rmtree(workdir / "out", ignore_errors=True)
        print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")
    finally:
        # Only what this benchmark writes; the datasets stay with --keep.
        for name in ("out", "hf-home", "pack.prof", *(() if args.keep else ("datasets",))):
            target = workdir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        if not any(workdir.iterdir()):
            workdir.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
