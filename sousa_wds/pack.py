"""`sousa-wds pack`: a SOUSA dataset folder in, a folder ready to publish out.

How it works:
- Read and validate the source (`source`), then plan every shard (`plan`), before OUT is
  touched: a bad input leaves OUT exactly as it was.
- Shards are written by `shards.write_shard`, in parallel worker processes when `workers > 1`.
  Each shard is planned in full beforehand, so the bytes do not depend on the worker count.
- Progress is explicit state in `OUT/.sousa-wds-pack/`: the source fingerprint and options,
  and one result file per finished shard (its offsets and hashes). `--resume` recomputes the
  plan, keeps the shards whose result and file agree, and writes the rest.
- Metadata, labels, indexes, the preview and the card follow (`index`, `preview`, `card`);
  `manifest.json` is written last and the state folder removed, so a folder with a manifest
  is a finished one.
Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .card import DEFAULT_REPO_ID, render_card
from .errors import PackError
from .format import (
    CARD,
    FORMAT_FOLDERS,
    FORMAT_VERSION,
    LABEL_TABLE_COLUMNS,
    MANIFEST,
    SPLITS,
    index_path,
    labels_path,
    metadata_path,
)
from .index import (
    build_manifest,
    location_rows,
    write_indexes,
    write_label_tables,
    write_manifest,
    write_metadata,
)
from .io import write_bytes_atomic, write_json_atomic
from .loose import check_loose_limits, write_loose
from .plan import DEFAULT_SEED, DEFAULT_SHARD_SIZE, PackPlan, order_split, plan_shards
from .preview import write_preview
from .shards import ShardResult, ShardTask, write_shard
from .source import SourceDataset, SourceSample, read_dataset

STATE_DIR = ".sousa-wds-pack"
# Everything pack may create; --overwrite removes these and nothing else in OUT.
MANAGED = (*FORMAT_FOLDERS, CARD, MANIFEST, STATE_DIR)
PROGRESS_INTERVAL_S = 0.25


class ResumeMismatch(PackError):
    """The interrupted pack in OUT was started from another input, options or version."""


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
    progress: bool = True,
) -> PackSummary:
    """Pack `dataset_dir` into `out`; see the module docstring for the guarantees."""
    started = time.perf_counter()
    if resume and overwrite:
        raise PackError("--resume and --overwrite exclude each other: pick one")
    dataset = read_dataset(dataset_dir)
    for warning in dataset.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not dataset.samples:
        raise PackError(f"{dataset.root} has no samples: nothing to pack")
    plan = plan_shards(dataset.samples, shard_size=shard_size,
                       max_samples_per_shard=max_samples_per_shard, seed=seed, order=order)
    layout = "loose" if no_sharding else "shards"
    if no_sharding:
        check_loose_limits(dataset.samples)
    out = Path(out).absolute()
    if out == dataset.root or dataset.root in out.parents:
        raise PackError(
            f"{out} is inside the source dataset {dataset.root}; pick a folder outside it"
        )
    state = {
        "sousa_wds": __version__,
        "format_version": FORMAT_VERSION,
        "fingerprint": dataset.fingerprint(),
        "options": plan.options() | {"layout": layout},
    }
    finished = _prepare_out(out, state, plan, resume=resume, overwrite=overwrite)

    if no_sharding:
        with _Progress(len(dataset.samples), _media_bytes(dataset.samples), progress) as bar:
            rows = {
                split: write_loose(order_split(dataset.split(split), split, seed, order),
                                   dataset.root, out, bar.add)
                for split in SPLITS
            }
        media = {r[name]: None for split_rows in rows.values() for r in split_rows
                 for name in ("audio_filename", "midi_filename")}
        shard_counts = dict.fromkeys(SPLITS, 0)
    else:
        results = _write_shards(dataset, plan, out, finished, workers or os.cpu_count() or 1,
                                progress)
        by_split = {split: [results[s.name] for s in plan.split_shards(split)]
                    for split in SPLITS}
        rows = {split: location_rows(by_split[split]) for split in SPLITS}
        media = {r.path: r.sha256 for r in results.values()}
        shard_counts = {split: len(by_split[split]) for split in SPLITS}
        write_indexes(out, by_split)
    splits = {
        split: {
            "samples": len(rows[split]),
            "shards": shard_counts[split],
            "bytes": sum(r["flac_size"] + r["mid_size"] + (r["json_size"] or 0)
                         for r in rows[split]),
        }
        for split in SPLITS
    }
    write_metadata(dataset, out, rows, {s.key: s for s in dataset.samples})
    write_label_tables(dataset, out)
    previews = write_preview(out)
    summary = dataset.summary()
    card = render_card(splits, repo_id=repo_id, license=license, layout=layout,
                       rudiments=summary["rudiments"], profiles=summary["profiles"])
    write_bytes_atomic(out / CARD, card.encode("utf-8"))

    paths = [*media, CARD, *previews]
    for split in SPLITS:
        paths.append(metadata_path(split))
        paths += [labels_path(table, split) for table in LABEL_TABLE_COLUMNS]
        if not no_sharding:
            paths.append(index_path(split))
    manifest = build_manifest(
        out, paths, {p: h for p, h in media.items() if h}, layout=layout,
        fingerprint=state["fingerprint"], options=state["options"], splits=splits,
    )
    write_manifest(out, manifest)
    shutil.rmtree(out / STATE_DIR)
    return PackSummary(
        out=out,
        samples=plan.num_samples,
        shards=sum(shard_counts.values()),
        files=len(manifest.files) + 1,
        bytes=sum(f.bytes for f in manifest.files),
        seconds=time.perf_counter() - started,
        reused_shards=len(finished),
    )


def _prepare_out(
    out: Path, state: dict, plan: PackPlan, *, resume: bool, overwrite: bool
) -> dict[str, ShardResult]:
    """Make OUT ready and return the shard results a resumed run can keep."""
    state_dir = out / STATE_DIR
    existing = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if out.exists() and not out.is_dir():
        raise PackError(f"{out} exists and is not a folder")
    if existing and resume:
        return _resumable(out, state, plan)
    if existing and not overwrite:
        raise PackError(
            f"{out} is not empty ({', '.join(existing[:5])}{' ...' if len(existing) > 5 else ''}). "
            "Use --resume to continue an interrupted pack, --overwrite to replace a previous "
            "pack's files, or choose an empty folder."
        )
    for name in existing:
        if name in MANAGED:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    (state_dir / "shards").mkdir(parents=True, exist_ok=True)
    write_json_atomic(state_dir / "state.json", state)
    return {}


def _resumable(out: Path, state: dict, plan: PackPlan) -> dict[str, ShardResult]:
    """Results of finished shards that still match the plan, file and all."""
    state_file = out / STATE_DIR / "state.json"
    if not state_file.is_file():
        if (out / MANIFEST).is_file():
            raise PackError(
                f"{out} holds a finished pack (it has {MANIFEST}); nothing to resume. Use "
                "--overwrite to pack again."
            )
        raise PackError(f"{out} holds no interrupted pack to resume ({state_file} is missing)")
    previous = _load_state_json(state_file)
    if previous != state:
        raise ResumeMismatch(
            f"cannot resume into {out}: it was started from another input, with other "
            f"options or by another sousa-wds version ({previous.get('options')}, "
            f"now {state['options']}). Rerun with the same options, or use --overwrite."
        )
    (out / MANIFEST).unlink(missing_ok=True)  # the old one would call a mixed folder finished
    planned = {s.name: [x.key for x in s.samples] for s in plan.shards}
    kept: dict[str, ShardResult] = {}
    for result_file in sorted((out / STATE_DIR / "shards").glob("*.json")):
        result = ShardResult.from_json(_load_state_json(result_file))
        shard = out / result.path
        if (
            planned.get(result.name) == [row["key"] for row in result.rows]
            and shard.is_file()
            and shard.stat().st_size == result.bytes
        ):
            kept[result.name] = result
    return kept


def _load_state_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(
            f"{path} is damaged ({exc}); delete it and rerun with --resume (its shard is "
            "rewritten), or use --overwrite to start over"
        ) from exc


def _write_shards(
    dataset: SourceDataset, plan: PackPlan, out: Path, finished: dict[str, ShardResult],
    workers: int, progress: bool,
) -> dict[str, ShardResult]:
    todo = [s for s in plan.shards if s.name not in finished]
    tasks = [
        ShardTask(
            split=s.split, name=s.name, path=s.path, samples=s.samples,
            records=dataset.label_rows(s.samples), source_root=str(dataset.root),
            out_root=str(out),
        )
        for s in todo
    ]
    results = dict(finished)
    todo_samples = [x for s in todo for x in s.samples]
    with _Progress(len(todo_samples), _media_bytes(todo_samples), progress) as bar:
        for result in _run(tasks, workers, bar):
            write_json_atomic(out / STATE_DIR / "shards" / f"{result.name}.json",
                              result.to_json())
            results[result.name] = result
    return results


def _media_bytes(samples: Iterable[SourceSample]) -> int:
    return sum(s.audio_bytes + s.midi_bytes for s in samples)


def _run(tasks: list[ShardTask], workers: int, bar: _Progress) -> Iterator[ShardResult]:
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield write_shard(task, bar.add)
        return
    # fork keeps the parent's imports (webdataset pulls in torch when present: seconds per
    # spawned worker); elsewhere fall back to the platform default.
    import webdataset  # noqa: F401  (loaded once here, inherited by forked workers)

    method = "fork" if sys.platform == "linux" else None
    ctx = multiprocessing.get_context(method)
    samples = ctx.Value("q", 0)
    nbytes = ctx.Value("q", 0)
    with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker,
                  initargs=(samples, nbytes)) as pool:
        pending = pool.imap_unordered(_pool_write, tasks)
        done = threading.Event()
        poller = threading.Thread(target=bar.follow, args=(samples, nbytes, done), daemon=True)
        poller.start()
        try:
            yield from pending
        finally:
            done.set()
            poller.join()


_counters: tuple = ()


def _init_worker(samples, nbytes) -> None:
    global _counters
    _counters = (samples, nbytes)


def _worker_progress(n: int, size: int) -> None:
    samples, nbytes = _counters
    with samples.get_lock():
        samples.value += n
    with nbytes.get_lock():
        nbytes.value += size


def _pool_write(task: ShardTask) -> ShardResult:
    return write_shard(task, _worker_progress)


class _Progress:
    """A tqdm bar in samples with MB/s in its postfix; silent when disabled."""

    def __init__(self, total: int, total_bytes: int, enabled: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, unit="sample", disable=not enabled, desc="packing",
                         dynamic_ncols=True)
        self._bytes = 0
        self._started = time.perf_counter()
        self._total_bytes = total_bytes

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()

    def add(self, samples: int, nbytes: int) -> None:
        self._bytes += nbytes
        self._bar.update(samples)
        self._postfix()

    def follow(self, samples, nbytes, done: threading.Event) -> None:
        """Mirror worker counters into the bar until `done` is set."""
        while True:
            finished = done.wait(PROGRESS_INTERVAL_S)
            self._bytes = nbytes.value
            self._bar.update(samples.value - self._bar.n)
            self._postfix()
            if finished:
                return

    def _postfix(self) -> None:
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._bar.set_postfix_str(
            f"{self._bytes / elapsed / 1e6:.1f} MB/s, {self._bytes / 1e6:.0f}/"
            f"{self._total_bytes / 1e6:.0f} MB", refresh=False)

