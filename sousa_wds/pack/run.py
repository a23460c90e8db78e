"""`sousa-wds pack`: a SOUSA dataset folder in, a folder ready to publish out.

How it works:
- Read and validate the source, then plan every shard (`plan`), before OUT is touched: a bad
  input leaves OUT exactly as it was. OUT must be apart from the source (compared after
  following links, and by file identity), and `--overwrite` deletes only a previous pack's
  files, in a folder that holds our manifest or pack state.
- OUT is locked for the whole run (`state.out_lock`). Shards are written by `tar.write_shard`,
  in worker processes when `workers > 1` or as Ray tasks with `ray=` (`ray_pool`); each shard
  is planned in full beforehand, so the bytes do not depend on the worker count. Workers
  ignore Ctrl-C: the parent asks them to stop between two samples, they remove their
  unfinished shard, and finished shards stay for `--resume`.
- Progress is explicit state in `OUT/.sousa-wds-pack/` (`state`); `--resume` recomputes the
  plan, keeps the shards whose record and file agree, and writes the rest.
- Metadata and labels (`tables`), indexes (`indexes`), the preview (`..preview`) and the card
  follow; `manifest.json` is written last and the state folder removed, so a folder with a
  manifest is a finished one.
The library prints nothing: warnings go to `logging`, progress to a `ProgressCallback`.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa

from ..card import DEFAULT_REPO_ID, render_card
from ..errors import PackError
from ..format import (
    CARD,
    LABEL_TABLES,
    SPLITS,
    FileEntry,
    SplitCounts,
    table_paths,
)
from ..io import write_bytes_atomic
from ..preview import write_preview
from ..source import SourceDataset, read_dataset
from .folder import check_apart, check_utf8, prepare_out
from .indexes import build_manifest, write_indexes, write_manifest
from .loose import check_loose_limits, write_loose
from .plan import (
    DEFAULT_SEED,
    DEFAULT_SHARD_SIZE,
    PackPlan,
    ShardPlan,
    order_positions,
    plan_shards,
)
from .pool import run_pool
from .state import PackState, Recorded, StateDir, out_lock
from .tables import (
    MetadataPart,
    file_stamp,
    location_table,
    split_lookup,
    write_label_tables,
    write_metadata,
)
from .tar import ShardResult, ShardTask, member_bytes, write_shard

log = logging.getLogger(__name__)


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
    ray: bool | str = False,
) -> PackSummary:
    """Pack `dataset_dir` into `out`; see the module docstring for the guarantees.

    `ray`: write the shards as Ray tasks (True: Ray's default cluster, or a cluster address);
    every node must see `dataset_dir` and `out` at the same paths."""
    started = time.perf_counter()
    if resume and overwrite:
        raise PackError("--resume and --overwrite exclude each other: pick one")
    if ray is not False and no_sharding:
        raise PackError("--ray writes shards in Ray tasks; --no-sharding writes loose files "
                        "here: drop one of them")
    check_utf8(dataset_dir, out)
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
    check_apart(dataset.root, out)
    state = PackState(dataset.fingerprint(), plan.options(layout))
    with out_lock(out):
        states = StateDir(out)
        finished = prepare_out(out, state, plan, states, resume=resume, overwrite=overwrite)
        reused = len(finished)
        if no_sharding:
            written = _write_loose_layout(dataset, plan, out, progress)
        else:
            written = _write_shard_layout(
                dataset, plan, out, states, finished, workers or os.cpu_count() or 1, progress,
                ray)
        summary, num_samples = dataset.summary(), plan.num_samples
        # The media are written: the metadata needs each sample's label row, not its paths.
        dataset = replace(dataset, samples=dataset.samples.identities())
        del plan
        write_metadata(dataset, out, written.parts)
        splits, media = written.splits, written.media
        sources = {table: dataset.label_path(table) for table in LABEL_TABLES}
        split_of = split_lookup(dataset.samples)
        # What is left needs each sample's split, not the label and sample tables (45 MB at
        # 100k samples): they go before the preview's row groups of FLAC (~3x a row group)
        # and the label tables' Parquet writers fill up.
        del dataset, written
        previews = write_preview(out)
        write_label_tables(sources, split_of, out, stamps)
        del split_of
        files = _write_card_and_manifest(summary, out, state, splits, media, previews,
                                         repo_id=repo_id, license=license)
        shutil.rmtree(states.root)
    return PackSummary(
        out=out, samples=num_samples, shards=sum(c.shards for c in splits.values()),
        files=len(files) + 1, bytes=sum(f.bytes for f in files),
        seconds=time.perf_counter() - started, reused_shards=reused,
    )


def _write_card_and_manifest(
    summary: dict, out: Path, state: PackState, splits: dict[str, SplitCounts],
    media: dict[str, str | None], written: list[str], *, repo_id: str, license: str,
) -> tuple[FileEntry, ...]:
    """The card, then the manifest of every file; returns the manifest's entries. `summary`:
    the dataset's (`SourceDataset.summary`); `media`: shards or loose files with their sha256
    if known; `written`: other files (the preview)."""
    card = render_card({s: c.to_dict() for s, c in splits.items()}, repo_id=repo_id,
                       license=license, layout=state.options.layout,
                       rudiments=summary["rudiments"], profiles=summary["profiles"])
    write_bytes_atomic(out / CARD, card.encode("utf-8"))
    paths = [*media, *written, *table_paths(state.options.layout)]
    manifest = build_manifest(out, paths, {p: h for p, h in media.items() if h},
                              fingerprint=state.fingerprint, options=state.options,
                              splits=splits)
    write_manifest(out, manifest)
    return manifest.files


# --- writing media: shards (in worker processes) or loose files -----------------------------

class _Tracker:
    """Counts samples and bytes done and hands snapshots to the caller's callback."""

    def __init__(self, total: int, total_bytes: int, callback: ProgressCallback | None):
        self._callback = callback
        self._total, self._total_bytes = total, total_bytes
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


@dataclass(frozen=True)
class Written:
    """Per split: its metadata parts (each shard's samples and location rows, in shard
    order) and counts; then every media file written, with its sha256 if known."""

    parts: dict[str, Iterable[MetadataPart]]
    splits: dict[str, SplitCounts]
    media: dict[str, str | None]


def _write_loose_layout(dataset: SourceDataset, plan: PackPlan, out: Path,
                        progress: ProgressCallback | None) -> Written:
    tracker = _Tracker(len(dataset.samples), dataset.samples.media_bytes(), progress)
    parts: dict[str, Iterable[MetadataPart]] = {}
    splits: dict[str, SplitCounts] = {}
    media: dict[str, str | None] = {}
    for split in SPLITS:
        positions = order_positions(dataset.samples, split, plan.seed, plan.order)
        rows = write_loose(dataset.samples.take(positions), dataset.root, out, tracker.add)
        parts[split] = [(positions, location_table(rows))]
        splits[split] = SplitCounts(samples=len(rows), shards=0, bytes=member_bytes(rows))
        media.update((r[name], None) for r in rows for name in ("audio_filename", "midi_filename"))
    return Written(parts, splits, media)


def _write_shard_layout(
    dataset: SourceDataset, plan: PackPlan, out: Path, states: StateDir,
    finished: dict[str, ShardResult], workers: int, progress: ProgressCallback | None,
    ray: bool | str = False,
) -> Written:
    """Write the shards not finished yet, recording each; then the wids indexes.

    A result's location rows are recorded in the state folder and dropped: the metadata is
    written from those records shard by shard, so the rows of 100k samples never sit here.
    `finished` (resumed shards' results) is emptied for the same reason.
    """
    todo = [s for s in plan.shards if s.name not in finished]
    remote = ray is not False and bool(todo)

    def task(shard: ShardPlan) -> ShardTask:
        # Ray tasks carry their samples and label records; here and in forked workers they
        # are taken from the dataset's tables as the shard is written.
        samples = shard.samples if remote else None
        # Compacted: the plan's positions are slices of the split's, and a slice pickles with
        # its whole parent buffer (800 KB a task for a 100k-sample split instead of 5 KB).
        return ShardTask(split=shard.split, name=shard.name, path=shard.path,
                         positions=pa.concat_arrays([shard.positions]),
                         source_root=str(dataset.root),
                         out_root=str(out), samples=samples,
                         records=dataset.label_rows(samples) if samples is not None else None)

    tasks = map(task, todo)
    recorded = {name: Recorded.of(r) for name, r in finished.items()}
    finished.clear()
    # Counted by position: taking every shard's samples to count them is a copy of the table
    # (24 MB at 100k samples).
    tracker = _Tracker(sum(len(s.positions) for s in todo),
                       sum(dataset.samples.media_bytes(s.positions) for s in todo), progress)
    if remote:
        from .ray_pool import run_ray

        done: Iterator[Recorded] = map(states.record, run_ray(
            list(tasks), None if ray is True else ray, tracker.add))
    elif workers <= 1 or len(todo) <= 1:
        done = (states.record(write_shard(t, tracker.add, labels=dataset.labels,
                                          samples=dataset.samples))
                for t in tasks)
    else:
        done = run_pool(tasks, min(workers, len(todo)), tracker.set, dataset.labels,
                        dataset.samples)
    for shard in done:
        recorded[shard.result.name] = shard
    shards = {split: plan.split_shards(split) for split in SPLITS}
    write_indexes(out, {split: [recorded[s.name].result for s in shards[split]]
                        for split in SPLITS},
                  {name: r.samples for name, r in recorded.items()})

    # Names and positions only: the plan's shards hold the sample table, which the caller
    # slims before the metadata is written.
    placed = {split: [(s.name, s.positions) for s in shards[split]] for split in SPLITS}

    def parts(split: str) -> Iterator[MetadataPart]:
        for name, positions in placed[split]:
            result, blocks = states.load_locations(name)
            start = 0
            for rows in blocks:
                yield positions.slice(start, rows.num_rows), location_table(rows, result)
                start += rows.num_rows
            if start != len(positions):
                raise PackError(f"the record of shard {name} in {states.shards} has {start} "
                                f"rows for {len(positions)} samples: it was changed while "
                                "packing; pack again with --overwrite")

    return Written(
        parts={split: parts(split) for split in SPLITS},
        splits={split: SplitCounts(samples=sum(recorded[s.name].samples for s in shards[split]),
                                   shards=len(shards[split]),
                                   bytes=sum(recorded[s.name].member_bytes for s in shards[split]))
                for split in SPLITS},
        media={r.result.path: r.result.sha256 for r in recorded.values()},
    )
