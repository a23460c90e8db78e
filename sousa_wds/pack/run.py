"""`sousa-wds pack`: a SOUSA dataset folder in, a folder ready to publish out.

How it works:
- Read and validate the source, then plan every shard (`plan`), before OUT is touched: a bad
  input leaves OUT exactly as it was. OUT must be apart from the source (compared after
  following links, and by file identity), and `--overwrite` deletes only a previous pack's
  files, in a folder that holds our manifest or pack state.
- OUT is locked for the whole run (`state.out_lock`). Shards are written by `tar.write_shard`,
  in worker processes when `workers > 1`; each shard is planned in full beforehand, so the
  bytes do not depend on the worker count. Workers ignore Ctrl-C: the parent asks them to stop
  between two samples, they remove their unfinished shard, and finished shards stay for
  `--resume`.
- Progress is explicit state in `OUT/.sousa-wds-pack/` (`state`); `--resume` recomputes the
  plan, keeps the shards whose record and file agree, and writes the rest.
- Metadata and labels (`tables`), indexes (`indexes`) and the card follow; `manifest.json` is
  written last and the state folder removed, so a folder with a manifest is a finished one.
The library prints nothing: warnings go to `logging`, progress to a `ProgressCallback`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..card import DEFAULT_REPO_ID, render_card
from ..errors import PackError, listing
from ..format import (
    CARD,
    FORMAT_FOLDERS,
    LABEL_TABLES,
    MANIFEST,
    SPLITS,
    SplitCounts,
    index_path,
    labels_path,
    metadata_path,
)
from ..format.manifest import FORMAT_NAME
from ..io import write_bytes_atomic
from ..source import SourceDataset, SourceSample, read_dataset
from .indexes import build_manifest, write_indexes, write_manifest
from .loose import check_loose_limits, write_loose
from .plan import DEFAULT_SEED, DEFAULT_SHARD_SIZE, PackPlan, order_split, plan_shards
from .state import LOCK_FILE, STATE_DIR, PackState, StateDir, out_lock
from .tables import file_stamp, location_rows, write_label_tables, write_metadata
from .tar import ShardResult, ShardTask, write_shard

log = logging.getLogger(__name__)

# Everything pack may create; --overwrite removes these and nothing else in OUT.
MANAGED = (*FORMAT_FOLDERS, CARD, MANIFEST, STATE_DIR)
PROGRESS_INTERVAL_S = 0.25


@dataclass(frozen=True)
class PackProgress:
    """Where the media copy stands: samples and source bytes done, out of the totals."""

    samples: int
    total_samples: int
    bytes: int
    total_bytes: int


ProgressCallback = Callable[[PackProgress], None]


@dataclass(frozen=True)
class PackSummary:
    out: Path
    samples: int
    shards: int
    files: int
    bytes: int
    seconds: float
    reused_shards: int

    def __str__(self) -> str:
        return (
            f"{self.samples} samples in {self.shards} shards ({self.reused_shards} reused), "
            f"{self.files} files, {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s → {self.out}"
        )


def pack(
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    max_samples_per_shard: int | None = None,
    seed: int = DEFAULT_SEED,
    order: str = "shuffle",
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    no_sharding: bool = False,
    repo_id: str = DEFAULT_REPO_ID,
    license: str = "other",
    progress: ProgressCallback | None = None,
) -> PackSummary:
    """Pack `dataset_dir` into `out`; see the module docstring for the guarantees."""
    started = time.perf_counter()
    if resume and overwrite:
        raise PackError("--resume and --overwrite exclude each other: pick one")
    _check_utf8(dataset_dir, out)
    dataset = read_dataset(dataset_dir)
    stamps = {table: file_stamp(dataset.label_path(table)) for table in LABEL_TABLES}
    for warning in dataset.warnings:
        log.warning("%s", warning)
    if not dataset.samples:
        raise PackError(f"{dataset.root} has no samples: nothing to pack")
    plan = plan_shards(dataset.samples, shard_size=shard_size,
                       max_samples_per_shard=max_samples_per_shard, seed=seed, order=order)
    layout = "loose" if no_sharding else "shards"
    if no_sharding:
        check_loose_limits(dataset.samples)
    out = Path(out).absolute()
    _check_apart(dataset.root, out)
    state = PackState(dataset.fingerprint(), plan.options(layout))
    with out_lock(out):
        states = StateDir(out)
        finished = _prepare_out(out, state, plan, states, resume=resume, overwrite=overwrite)
        if no_sharding:
            rows = _write_loose_layout(dataset, plan, out, progress)
            media = {r[name]: None for split_rows in rows.values() for r in split_rows
                     for name in ("audio_filename", "midi_filename")}
            shard_counts = dict.fromkeys(SPLITS, 0)
        else:
            results = _write_shards(dataset, plan, out, states, finished,
                                    workers or os.cpu_count() or 1, progress)
            by_split = {split: [results[s.name] for s in plan.split_shards(split)]
                        for split in SPLITS}
            rows = {split: location_rows(by_split[split]) for split in SPLITS}
            media = {r.path: r.sha256 for r in results.values()}
            shard_counts = {split: len(by_split[split]) for split in SPLITS}
            write_indexes(out, by_split)
        splits = {split: SplitCounts(samples=len(rows[split]), shards=shard_counts[split],
                                     bytes=_member_bytes(rows[split])) for split in SPLITS}
        write_metadata(dataset, out, rows)
        write_label_tables(dataset, out, stamps)
        files = _write_card_and_manifest(dataset, out, state, splits, media,
                                         repo_id=repo_id, license=license)
        shutil.rmtree(states.root)
    return PackSummary(
        out=out, samples=plan.num_samples, shards=sum(shard_counts.values()),
        files=len(files) + 1, bytes=sum(f.bytes for f in files),
        seconds=time.perf_counter() - started, reused_shards=len(finished),
    )


def _member_bytes(rows: Sequence[dict]) -> int:
    return sum(r["flac_size"] + r["mid_size"] + (r["json_size"] or 0) for r in rows)


def _write_card_and_manifest(
    dataset: SourceDataset, out: Path, state: PackState, splits: dict[str, SplitCounts],
    media: dict[str, str | None], *, repo_id: str, license: str,
) -> tuple:
    """The card, then the manifest of every file; returns the manifest's file entries."""
    summary = dataset.summary()
    card = render_card({s: c.to_dict() for s, c in splits.items()}, repo_id=repo_id,
                       license=license, layout=state.options.layout,
                       rudiments=summary["rudiments"], profiles=summary["profiles"])
    write_bytes_atomic(out / CARD, card.encode("utf-8"))
    paths = [*media, CARD]
    for split in SPLITS:
        paths.append(metadata_path(split))
        paths += [labels_path(table, split) for table in LABEL_TABLES]
        if state.options.layout == "shards":
            paths.append(index_path(split))
    manifest = build_manifest(out, paths, {p: h for p, h in media.items() if h},
                              fingerprint=state.fingerprint, options=state.options,
                              splits=splits)
    write_manifest(out, manifest)
    return manifest.files


# --- where OUT may be, and what may be deleted there ----------------------------------------

def _check_utf8(*paths: str | os.PathLike) -> None:
    """Parquet and JSON hold text as UTF-8: a path that is not would fail half-way through."""
    for path in paths:
        text = os.fsdecode(path)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise PackError(f"{text!r} is not a valid UTF-8 path; rename it (or pick another "
                            "folder) so pack can record it") from None


def _check_apart(source: Path, out: Path) -> None:
    """Refuse an OUT that is the source, or inside it, or holds it, however it is spelled."""
    src, dst = source.resolve(), out.resolve()
    if _within(dst, src) or _within(src, dst):
        raise PackError(
            f"{out} and the source dataset {source} overlap (the same folder, or one inside "
            "the other, after following links); pick an output folder apart from the dataset"
        )


def _within(inner: Path, outer: Path) -> bool:
    """Whether `inner` is `outer` or below it, by resolved path or by file identity."""
    if inner == outer or outer in inner.parents:
        return True
    if not outer.exists():
        return False
    return any(p.exists() and os.path.samefile(p, outer) for p in (inner, *inner.parents))


def _holds_a_pack(out: Path, states: StateDir) -> bool:
    if states.exists():
        return True
    try:
        data = json.loads((out / MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def _prepare_out(
    out: Path, state: PackState, plan: PackPlan, states: StateDir, *, resume: bool,
    overwrite: bool,
) -> dict[str, ShardResult]:
    """Make OUT ready and return the shard results a resumed run can keep."""
    existing = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
    if existing and resume:
        return _resumable(out, state, plan, states)
    if existing and not overwrite:
        raise PackError(
            f"{out} is not empty ({', '.join(existing[:5])}{' ...' if len(existing) > 5 else ''}). "
            "Use --resume to continue an interrupted pack, --overwrite to replace a previous "
            "pack's files, or choose an empty folder."
        )
    ours = [name for name in existing if name in MANAGED]
    if ours and not _holds_a_pack(out, states):
        raise PackError(
            f"--overwrite refused: {out} holds no sousa-wds pack (no {MANIFEST}, no "
            f"{STATE_DIR}/), so these were not written by pack and would be deleted:"
            f"{listing(ours)}\nChoose an empty folder, or move them away yourself."
        )
    for name in ours:
        target = out / name
        shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    states.start(state)
    return {}


def _resumable(out: Path, state: PackState, plan: PackPlan,
               states: StateDir) -> dict[str, ShardResult]:
    if not states.exists():
        if (out / MANIFEST).is_file():
            raise PackError(
                f"{out} holds a finished pack (it has {MANIFEST}); nothing to resume. Use "
                "--overwrite to pack again."
            )
        raise PackError(f"{out} holds no interrupted pack to resume ({states.state_file} is "
                        "missing)")
    state.validate(states.load(), out)
    (out / MANIFEST).unlink(missing_ok=True)  # the old one would call a mixed folder finished
    return states.finished(plan, out)


# --- writing media: shards (in worker processes) or loose files -----------------------------

class _Tracker:
    """Counts samples and bytes done and hands snapshots to the caller's callback."""

    def __init__(self, samples: Sequence[SourceSample], callback: ProgressCallback | None):
        self._callback = callback
        self._total = len(samples)
        self._total_bytes = sum(s.audio_bytes + s.midi_bytes for s in samples)
        self._lock = threading.Lock()
        self.samples = self.bytes = 0
        self.set(0, 0)

    def add(self, samples: int, nbytes: int) -> None:
        self.set(self.samples + samples, self.bytes + nbytes)

    def set(self, samples: int, nbytes: int) -> None:
        with self._lock:
            self.samples, self.bytes = samples, nbytes
            if self._callback:
                self._callback(PackProgress(samples, self._total, nbytes, self._total_bytes))


def _write_loose_layout(dataset: SourceDataset, plan: PackPlan, out: Path,
                        progress: ProgressCallback | None) -> dict[str, list[dict]]:
    tracker = _Tracker(dataset.samples, progress)
    return {split: write_loose(order_split(dataset.split(split), split, plan.seed, plan.order),
                               dataset.root, out, tracker.add)
            for split in SPLITS}


def _write_shards(
    dataset: SourceDataset, plan: PackPlan, out: Path, states: StateDir,
    finished: dict[str, ShardResult], workers: int, progress: ProgressCallback | None,
) -> dict[str, ShardResult]:
    todo = [s for s in plan.shards if s.name not in finished]
    tasks = [
        ShardTask(split=s.split, name=s.name, path=s.path, samples=s.samples,
                  records=dataset.label_rows(s.samples), source_root=str(dataset.root),
                  out_root=str(out))
        for s in todo
    ]
    results = dict(finished)
    tracker = _Tracker([x for s in todo for x in s.samples], progress)
    if workers <= 1 or len(tasks) <= 1:
        done: Iterator[ShardResult] = (write_shard(t, tracker.add) for t in tasks)
    else:
        done = _run_pool(tasks, workers, tracker)
    for result in done:
        states.record(result)
        results[result.name] = result
    return results


def _run_pool(tasks: list[ShardTask], workers: int, tracker: _Tracker) -> Iterator[ShardResult]:
    """Write shards in worker processes; on any exit, stop them between two samples."""
    # fork keeps the parent's imports (pyarrow, soundfile); elsewhere the platform default.
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else None)
    samples, nbytes, stop = ctx.Value("q", 0), ctx.Value("q", 0), ctx.Event()
    executor = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx,
                                   initializer=_init_worker, initargs=(samples, nbytes, stop))
    futures: list[Future] = []
    finished = threading.Event()
    poller = threading.Thread(target=_follow, args=(tracker, samples, nbytes, finished),
                              daemon=True)
    try:
        with _sigint_blocked():  # workers start with Ctrl-C blocked, then ignore it
            futures = [executor.submit(_pool_write, task) for task in tasks]
        poller.start()
        for future in as_completed(futures):
            yield future.result()
    finally:
        stop.set()
        for future in futures:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
        finished.set()
        if poller.is_alive():
            poller.join()


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _follow(tracker: _Tracker, samples, nbytes, finished: threading.Event) -> None:
    """Mirror the workers' counters into the tracker until `finished` is set."""
    while True:
        last = finished.wait(PROGRESS_INTERVAL_S)
        tracker.set(samples.value, nbytes.value)
        if last:
            return


_worker: tuple = ()


def _init_worker(samples, nbytes, stop) -> None:
    """Workers leave Ctrl-C to the parent, which stops them through `stop`."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _worker = (samples, nbytes, stop)


def _worker_progress(n: int, size: int) -> None:
    samples, nbytes, _ = _worker
    with samples.get_lock():
        samples.value += n
    with nbytes.get_lock():
        nbytes.value += size


def _pool_write(task: ShardTask) -> ShardResult:
    return write_shard(task, _worker_progress, stop=_worker[2].is_set)
