"""Read a SOUSA dataset folder into a validated `SourceDataset`: the first stage of every job.

How it works:
- `samples.parquet` and `exercises.parquet` are read with pyarrow batch by batch, cast to the
  canonical column types of `sousa_wds.format`, NaN turned into null, and joined on
  `sample_id` into one label table. `strokes` and `measures` are streamed page by page to
  check them (`checks.label_rows`) and never held: at full scale they hold tens of millions of
  rows, and the packer streams them again in source row order.
- A sample's split comes from its `profile_id` through `splits.json`; its MIDI from its own
  `midi_path` or, when that is null, from the one row of its augmentation group that has it.
- Every rule (`checks.py`, `media.py`) runs before anything is returned, and all problems
  are reported together in one `DatasetError`, each naming the rows or files and the fix.
  Nothing is ever written here, so a bad input can never leave a half-written output behind.

The result keeps labels as an Arrow table (one row per sample, in sample order) rather than
100k Python dicts, so reading the full dataset stays cheap in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..arrays import int_array
from ..errors import MAX_LISTED, DatasetError, Problems
from ..format import (
    EXERCISE_COLUMNS,
    LABEL_COLUMNS,
    LABEL_TABLE_COLUMNS,
    SAMPLE_COLUMNS,
    SPLITS,
    conform,
    encode_record,
)
from . import checks
from .checks import STREAM_BATCH_ROWS, stream_parquet
from .media import probe_media, report_problems

__all__ = ["SourceDataset", "SourceSample", "read_dataset", "stream_parquet"]

LABEL_FILES = ("samples", "exercises", "measures", "strokes")
FINGERPRINT_BATCH_ROWS = 4096  # label records turned into Python objects at a time


@dataclass(frozen=True, slots=True)
class SourceSample:
    """One sample's identity and media; its labels are row `row` of `SourceDataset.labels`.

    Sizes and mtimes come from the one `lstat` of each file at read time: pack compares them
    with what it reads to notice a file that changed or was cut meanwhile (0 = not known).
    """

    key: str
    split: str
    row: int
    audio_path: str
    midi_path: str
    audio_bytes: int
    midi_bytes: int
    audio_mtime_ns: int = 0
    midi_mtime_ns: int = 0


@dataclass(frozen=True)
class SourceDataset:
    """A validated SOUSA dataset: samples sorted by (split, key), labels, and what to warn about."""

    root: Path
    samples: tuple[SourceSample, ...]
    labels: pa.Table
    warnings: tuple[str, ...] = field(default=())

    def split(self, name: str) -> tuple[SourceSample, ...]:
        return tuple(s for s in self.samples if s.split == name)

    def label_path(self, table: str) -> Path:
        return self.root / "labels" / f"{table}.parquet"

    def label_rows(self, samples: Iterable[SourceSample]) -> pa.Table:
        """The label rows of `samples`, in their order (nulls, never NaN)."""
        return self.labels.take(int_array(s.row for s in samples))

    def fingerprint(self) -> str:
        """A cheap identity of what the shards are made of: each sample's key, split, media
        sizes and label record, encoded as its {key}.json member is.

        Content, not file bytes: the same labels written by another Parquet writer (e.g. a
        folder restored by `sousa-wds extract`) give the same fingerprint, so a round trip packs
        to the same manifest. Hashing 100 GB of audio would take longer than packing it; sizes
        catch the usual mistake (pointing --resume at another or a regenerated dataset). Stroke
        and measure tables are left out: pack rewrites them on every run, resume reuses shards.
        """
        digest = hashlib.sha256()
        samples = iter(self.samples)
        rows = self.label_rows(self.samples)
        for batch in rows.to_batches(max_chunksize=FINGERPRINT_BATCH_ROWS):
            for record, s in zip(batch.to_pylist(), samples):
                digest.update(f"{s.key}\0{s.split}\0{s.audio_bytes}\0{s.midi_bytes}\0".encode())
                digest.update(encode_record(record))
                digest.update(b"\n")
        return digest.hexdigest()

    def summary(self) -> dict:
        """Counts a person checks before publishing: per split, rudiments, tiers, bytes."""
        by_split = {name: {"samples": 0, "audio_bytes": 0, "midi_files": 0} for name in SPLITS}
        midi_seen: dict[str, set[str]] = defaultdict(set)
        for s in self.samples:
            entry = by_split[s.split]
            entry["samples"] += 1
            entry["audio_bytes"] += s.audio_bytes
            midi_seen[s.split].add(s.midi_path)
        for name in SPLITS:
            by_split[name]["midi_files"] = len(midi_seen[name])
        tiers = Counter(self.labels.column("skill_tier").to_pylist())
        return {
            "root": str(self.root),
            "samples": len(self.samples),
            "audio_bytes": sum(s.audio_bytes for s in self.samples),
            "midi_files": len({s.midi_path for s in self.samples}),
            "splits": by_split,
            "profiles": len(pc.unique(self.labels.column("profile_id"))),
            "rudiments": len(pc.unique(self.labels.column("rudiment_slug"))),
            "skill_tiers": dict(sorted(tiers.items(), key=lambda kv: str(kv[0]))),
            "warnings": len(self.warnings),
        }


def read_dataset(
    root: str | os.PathLike, *, deep: bool = False,
    progress: Callable[[int], None] | None = None,
) -> SourceDataset:
    """Read and validate the dataset at `root`; raise DatasetError listing every problem.

    `deep` decodes every FLAC in full (minutes per 10k files) instead of its last frames;
    `progress(n)` is called as media files are checked.
    """
    root = Path(root).absolute()
    checks.check_root(root)
    subject = f"{root} is not a valid SOUSA dataset"
    problems = Problems()
    inputs = [root / "labels" / f"{n}.parquet" for n in LABEL_FILES] + [root / "splits.json"]
    checks.missing_files(inputs, problems)
    problems.raise_if_any(DatasetError, subject)
    checks.links_leaving(os.path.realpath(root), inputs, problems)
    problems.raise_if_any(DatasetError, subject)

    samples = _read_table(root, "samples", SAMPLE_COLUMNS, problems)
    exercises = _read_table(root, "exercises", EXERCISE_COLUMNS, problems)
    label_files = {table: checks.open_checked(root / "labels" / f"{table}.parquet", cols, problems)
                   for table, cols in LABEL_TABLE_COLUMNS.items()}
    split_of = checks.read_splits(root / "splits.json", problems)
    _release_decode_buffers()
    problems.raise_if_any(DatasetError, subject)
    assert samples is not None and exercises is not None and split_of is not None

    labels = _join_labels(root, samples, exercises, problems)
    problems.raise_if_any(DatasetError, subject)
    known = labels.column("sample_id").combine_chunks()
    for table, parquet in label_files.items():
        assert parquet is not None
        checks.label_rows(parquet, root / "labels" / f"{table}.parquet",
                          LABEL_TABLE_COLUMNS[table], known, problems)
        _release_decode_buffers()
    checks.profiles_in_splits(labels, split_of, problems)
    midi = checks.group_midi(labels, problems)
    return _build(root, labels, split_of, midi, problems, deep, progress)


def _release_decode_buffers() -> None:
    """Hand Parquet decode buffers back to the OS: Arrow's allocator keeps freed pages.

    Measured on 100k samples: peak RSS 474 -> 392 MB; the call takes microseconds.
    """
    pa.default_memory_pool().release_unused()


def _read_table(
    root: Path, name: str, columns: dict[str, pa.DataType], problems: Problems
) -> pa.Table | None:
    path = root / "labels" / f"{name}.parquet"
    parquet = checks.open_checked(path, columns, problems)
    if parquet is None:
        return None
    try:
        # Batch by batch: the input's string flavour is cast away without holding the file's
        # table and its converted copy at once.
        batches = [conform(batch, columns) for batch in
                   parquet.iter_batches(batch_size=STREAM_BATCH_ROWS, columns=list(columns))]
        schema = pa.schema([pa.field(n, t) for n, t in columns.items()])
        return pa.Table.from_batches(batches, schema=schema)
    except (OSError, pa.ArrowException) as exc:
        problems.add(f"{path} has values that do not fit their column type",
                     [str(exc).splitlines()[0]], checks.INVALID_LABELS)
        return None


def _join_labels(
    root: Path, samples: pa.Table, exercises: pa.Table, problems: Problems
) -> pa.Table:
    """One row per sample: the sample columns, then its exercise scores."""
    ids, ex_ids = samples.column("sample_id"), exercises.column("sample_id")
    samples_file = root / "labels" / "samples.parquet"
    exercises_file = root / "labels" / "exercises.parquet"
    checks.unique_ids(ids, samples_file,
                      "sample_id must be unique; remove the repeated rows or regenerate", problems)
    checks.unique_ids(ex_ids, exercises_file, "each sample has exactly one exercise row; remove "
                      "the repeated rows or regenerate", problems)
    checks.webdataset_keys(ids, samples_file, problems)
    checks.exercise_coverage(ids, ex_ids, exercises_file, problems)
    if problems:
        return samples
    order = pc.index_in(ids, value_set=ex_ids)
    scores = exercises.drop_columns(["sample_id"]).take(order)
    return pa.table(list(samples.columns) + list(scores.columns),
                    names=samples.column_names + scores.column_names)


def _build(
    root: Path, labels: pa.Table, split_of: dict[str, str], midi: list[str | None],
    problems: Problems, deep: bool, progress: Callable[[int], None] | None,
) -> SourceDataset:
    """Check every media file, then one SourceSample per row, sorted by (split, key)."""
    ids = labels.column("sample_id").to_pylist()
    audio = labels.column("audio_path").to_pylist()
    media = probe_media(str(root), audio, midi, deep=deep, progress=progress)
    report_problems(media, problems)
    problems.raise_if_any(DatasetError, f"{root} is not a valid SOUSA dataset")

    splits = [split_of[p] for p in labels.column("profile_id").to_pylist()]
    samples: list[SourceSample] = []
    for row, (key, split, audio_rel, midi_rel) in enumerate(zip(ids, splits, audio, midi)):
        a, m = media.files[audio_rel], media.files[midi_rel]
        assert a is not None and m is not None and midi_rel is not None and audio_rel is not None
        samples.append(SourceSample(key, split, row, audio_rel, midi_rel, a.size, m.size,
                                    a.mtime_ns, m.mtime_ns))
    order = {name: i for i, name in enumerate(SPLITS)}
    samples.sort(key=lambda s: (order[s.split], s.key))
    warnings = _unlisted_files(root, media.files.keys())
    return SourceDataset(root, tuple(samples), labels.select(list(LABEL_COLUMNS)), tuple(warnings))


def _unlisted_files(root: Path, listed: Collection[str | None]) -> list[str]:
    """Media on disk that no label row points at: packed data would silently lack them."""
    extra: list[str] = []
    prefix = len(str(root)) + 1
    for folder, suffix in (("audio", ".flac"), ("midi", ".mid")):
        for dirpath, _dirs, files in os.walk(root / folder):
            rel_dir = dirpath[prefix:].replace(os.sep, "/")
            for name in files:
                if name.endswith(suffix) and f"{rel_dir}/{name}" not in listed:
                    extra.append(f"{rel_dir}/{name}")
    extra.sort()
    if not extra:
        return []
    shown = ", ".join(extra[:MAX_LISTED]) + (" ..." if len(extra) > MAX_LISTED else "")
    return [
        f"{len(extra)} media files under {root} are not referenced by labels/samples.parquet "
        f"and will not be packed: {shown}"
    ]
