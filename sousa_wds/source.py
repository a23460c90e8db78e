"""Read and validate a SOUSA dataset folder: the first stage of every sousa-wds job.

How it works:
- `samples.parquet` and `exercises.parquet` are read with pyarrow, cast to the canonical column
  types of `sousa_wds.format`, NaN turned into null, and joined on `sample_id` into one label
  table. `strokes` and `measures` are only opened for their schema: at full scale they hold tens
  of millions of rows, and the packer streams them later.
- A sample's split comes from its `profile_id` through `splits.json`; its MIDI from its own
  `midi_path` or, when that is null, from the one row of its augmentation group that has it.
- Every check runs before anything is returned, and all problems are reported together, each
  naming the rows or files and the fix. Nothing is ever written here, so a bad input can never
  leave a half-written output behind.

The result keeps labels as an Arrow table (one row per sample, in sample order) rather than
100k Python dicts, so reading the full dataset stays cheap in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import MAX_LISTED, DatasetError, Problems
from .format import (
    EXERCISE_COLUMNS,
    LABEL_COLUMNS,
    LABEL_TABLE_COLUMNS,
    SAMPLE_COLUMNS,
    SOURCE_SPLIT_FIELDS,
    SPLITS,
    castable,
    conform,
    key_problem,
)
from .io import file_sha256

STREAM_BATCH_ROWS = 65_536  # stroke rows checked per batch: a few MB of two columns
STREAM_BUFFER_BYTES = 1 << 20
# What a media file starts with; checked here so a damaged file stops the run before
# anything is written, not hours into packing.
FLAC_MAGIC = b"fLaC"
MIDI_MAGIC = b"MThd"

LABEL_FILES = ("samples", "exercises", "measures", "strokes")


@dataclass(frozen=True, slots=True)
class SourceSample:
    """One sample's identity and media; its labels are row `row` of `SourceDataset.labels`."""

    key: str
    split: str
    row: int
    audio_path: str
    midi_path: str
    audio_bytes: int
    midi_bytes: int


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
        return self.labels.take(pa.array([s.row for s in samples], pa.int64()))

    def fingerprint(self) -> str:
        """A cheap identity of the input: label files' bytes, splits, and every media size.

        Hashing 100 GB of audio would take longer than packing it; sizes and names catch the
        usual mistake (pointing --resume at another dataset or a regenerated one).
        """
        digest = hashlib.sha256()
        for name in LABEL_FILES:
            digest.update(file_sha256(self.label_path(name)).encode())
        digest.update(file_sha256(self.root / "splits.json").encode())
        for s in self.samples:
            digest.update(f"{s.key}\0{s.split}\0{s.audio_bytes}\0{s.midi_bytes}\n".encode())
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
            "profiles": len(set(self.labels.column("profile_id").to_pylist())),
            "rudiments": len(set(self.labels.column("rudiment_slug").to_pylist())),
            "skill_tiers": dict(sorted(tiers.items(), key=lambda kv: str(kv[0]))),
            "warnings": len(self.warnings),
        }


def read_dataset(root: str | os.PathLike) -> SourceDataset:
    """Read and validate the dataset at `root`; raise DatasetError listing every problem."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise DatasetError(
            f"{root}: no such folder. Point at the folder the SOUSA generator wrote "
            "(the one holding audio/, midi/, labels/ and splits.json)."
        )
    problems = Problems()
    missing = [
        str(p)
        for p in [root / "labels" / f"{n}.parquet" for n in LABEL_FILES] + [root / "splits.json"]
        if not p.is_file()
    ]
    problems.add(
        "missing label files",
        missing,
        "regenerate the dataset or copy the complete labels/ folder and splits.json",
    )
    problems.raise_if_any(DatasetError, f"{root} is not a valid SOUSA dataset")

    samples = _read_table(root, "samples", SAMPLE_COLUMNS, problems)
    exercises = _read_table(root, "exercises", EXERCISE_COLUMNS, problems)
    label_files = {
        table: _open_parquet(root / "labels" / f"{table}.parquet", columns, problems)
        for table, columns in LABEL_TABLE_COLUMNS.items()
    }
    splits = _read_splits(root / "splits.json", problems)
    problems.raise_if_any(DatasetError, f"{root} is not a valid SOUSA dataset")
    assert samples is not None and exercises is not None and splits is not None

    labels = _join_labels(root, samples, exercises, problems)
    problems.raise_if_any(DatasetError, f"{root} is not a valid SOUSA dataset")
    for table, parquet in label_files.items():
        assert parquet is not None
        _check_label_rows(parquet, root / "labels" / f"{table}.parquet",
                          labels.column("sample_id"), problems)
    return _build(root, labels, splits, problems)


def stream_parquet(path: Path) -> pq.ParquetFile:
    """Open a Parquet file to stream it page by page.

    By default pyarrow decodes a whole row group (1M rows in files pandas writes, ~400 MB)
    before yielding the first batch.
    """
    return pq.ParquetFile(path, buffer_size=STREAM_BUFFER_BYTES, pre_buffer=False)


def _open_parquet(
    path: Path, columns: dict[str, pa.DataType], problems: Problems
) -> pq.ParquetFile | None:
    """Open `path` and check it has `columns` with types that convert to the canonical ones.

    Only the footer is read, so a type problem in a 35M-row strokes file is found before
    anything is packed, not when its rows are finally streamed.
    """
    try:
        parquet = stream_parquet(path)
        schema = parquet.schema_arrow
    except (OSError, pa.ArrowException) as exc:
        problems.add(
            f"unreadable Parquet file {path}",
            [str(exc).splitlines()[0]],
            "the file is damaged or not Parquet; regenerate or re-copy it",
        )
        return None
    absent = [c for c in columns if c not in schema.names]
    problems.add(
        f"{path} lacks required columns",
        absent,
        "this does not look like SOUSA generator output; regenerate the labels",
    )
    wrong = [
        f"{name}: {schema.field(name).type}, expected {typ}"
        for name, typ in columns.items()
        if name in schema.names and not castable(schema.field(name).type, typ)
    ]
    problems.add(
        f"{path} has columns of an unexpected type",
        wrong,
        "see docs/format.md for the expected column types; regenerate the labels",
    )
    return None if absent or wrong else parquet


def _read_table(
    root: Path, name: str, columns: dict[str, pa.DataType], problems: Problems
) -> pa.Table | None:
    path = root / "labels" / f"{name}.parquet"
    parquet = _open_parquet(path, columns, problems)
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
        problems.add(
            f"{path} has values that do not fit their column type",
            [str(exc).splitlines()[0]],
            "see docs/format.md for the expected column types; regenerate the labels",
        )
        return None


def _check_label_rows(
    parquet: pq.ParquetFile, path: Path, sample_ids: pa.ChunkedArray, problems: Problems
) -> None:
    """Stroke/measure rows must belong to known samples, once per (sample_id, index).

    Streams two columns in batches; rows follow the samples' order, so a repeated or
    unordered index shows up between neighbours without holding the table.
    """
    known = sample_ids.combine_chunks()
    orphans: list[str] = []
    repeated: list[str] = []
    last: tuple[str | None, int] = (None, -1)
    try:
        for batch in parquet.iter_batches(batch_size=STREAM_BATCH_ROWS,
                                          columns=["sample_id", "index"]):
            ids = batch.column(0).cast(pa.string())
            index = batch.column(1).cast(pa.int64())
            unknown = pc.invert(pc.is_in(ids, value_set=known))
            if pc.any(unknown).as_py():
                orphans += pc.unique(ids.filter(unknown)).to_pylist()
            same = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))
            rising = pc.greater(index.slice(1), index.slice(0, len(index) - 1))
            bad = pc.and_(same, pc.invert(rising))
            for row in pc.indices_nonzero(pc.fill_null(bad, False)).to_pylist():
                repeated.append(f"{ids[row + 1]} index {index[row + 1]}")
            if len(ids) and last[0] == ids[0].as_py() and index[0].as_py() <= last[1]:
                repeated.append(f"{ids[0]} index {index[0]}")
            if len(ids):
                last = (ids[-1].as_py(), index[-1].as_py())
    except (OSError, pa.ArrowException) as exc:
        problems.add(f"unreadable rows in {path}", [str(exc).splitlines()[0]],
                     "the file is damaged; regenerate or re-copy it")
        return
    problems.add(
        f"rows for unknown samples in {path}",
        sorted(set(orphans)),
        "remove these rows or add the samples to samples.parquet; packed labels would "
        "silently lose them",
    )
    problems.add(
        f"repeated or unordered (sample_id, index) rows in {path}",
        repeated,
        "each sample's rows must have increasing, unique indexes; regenerate the labels",
    )


def _read_splits(path: Path, problems: Problems) -> dict[str, str] | None:
    """Map profile_id → output split name."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.add(f"unreadable {path}", [str(exc)], "regenerate splits.json")
        return None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(f), list) for f in SOURCE_SPLIT_FIELDS.values()
    ):
        problems.add(
            f"{path} lacks profile lists",
            [f for f in SOURCE_SPLIT_FIELDS.values() if not isinstance(data, dict)
             or not isinstance(data.get(f), list)],
            "splits.json must hold train_profile_ids, val_profile_ids and test_profile_ids lists",
        )
        return None
    owner: dict[str, str] = {}
    twice: list[str] = []
    for split, fieldname in SOURCE_SPLIT_FIELDS.items():
        for profile in data[fieldname]:
            if profile in owner and owner[profile] != split:
                twice.append(f"profile {profile}: {owner[profile]} and {split}")
            owner[profile] = split
    problems.add(
        f"profiles listed in two splits of {path}",
        twice,
        "each player profile must be in exactly one split; fix splits.json",
    )
    return owner


def _join_labels(
    root: Path, samples: pa.Table, exercises: pa.Table, problems: Problems
) -> pa.Table:
    """One row per sample: the sample columns, then its exercise scores."""
    ids = samples.column("sample_id").to_pylist()
    ex_ids = exercises.column("sample_id").to_pylist()
    samples_file = root / "labels" / "samples.parquet"
    exercises_file = root / "labels" / "exercises.parquet"
    problems.add(
        f"duplicate sample_id in {samples_file}",
        _duplicates(ids),
        "sample_id must be unique; remove the repeated rows or regenerate",
    )
    problems.add(
        f"duplicate sample_id in {exercises_file}",
        _duplicates(ex_ids),
        "each sample has exactly one exercise row; remove the repeated rows or regenerate",
    )
    bad_keys = [f"row {i}: {k!r} {why}" for i, k in enumerate(ids) if (why := key_problem(k))]
    problems.add(
        f"sample_ids that cannot be WebDataset keys in {samples_file}",
        bad_keys,
        "WebDataset splits member names at the first dot; rename these samples "
        "(use letters, digits, '_' or '-') in the labels and on disk",
    )
    id_set, ex_set = set(ids), set(ex_ids)
    problems.add(
        f"samples without an exercise row in {exercises_file}",
        sorted(str(i) for i in id_set - ex_set),
        "regenerate the labels so every sample has its exercise scores",
    )
    problems.add(
        f"exercise rows for unknown samples in {exercises_file}",
        sorted(str(i) for i in ex_set - id_set),
        "remove these rows or add the samples to samples.parquet",
    )
    if problems.messages:
        return samples
    order = pc.index_in(samples.column("sample_id"), value_set=exercises.column("sample_id"))
    scores = exercises.drop_columns(["sample_id"]).take(order)
    return pa.table(
        list(samples.columns) + list(scores.columns),
        names=samples.column_names + scores.column_names,
    )


def _duplicates(values: list) -> list[str]:
    return sorted(str(v) for v, n in Counter(values).items() if n > 1)


def _build(
    root: Path, labels: pa.Table, split_of: dict[str, str], problems: Problems
) -> SourceDataset:
    cols = {
        name: labels.column(name).to_pylist()
        for name in ("sample_id", "profile_id", "audio_path", "midi_path", "augmentation_group_id")
    }
    ids = cols["sample_id"]

    unsplit = sorted({p for p in cols["profile_id"] if p not in split_of}, key=str)
    problems.add(
        "profiles in no split of splits.json",
        [f"profile {p}: samples {', '.join(_first(ids, cols['profile_id'], p))}" for p in unsplit],
        "add these profile ids to one of the split lists in splits.json, or remove their "
        "samples; sousa-wds never guesses a split",
    )

    group_midi: dict[str, str] = {}
    for group, midi in zip(cols["augmentation_group_id"], cols["midi_path"]):
        if midi is not None and group is not None:
            group_midi.setdefault(group, midi)
    no_midi_groups = sorted(
        {g for g, m in zip(cols["augmentation_group_id"], cols["midi_path"]) if m is None}
        - set(group_midi),
        key=str,
    )
    problems.add(
        "augmentation groups with no MIDI file (no row of the group has midi_path)",
        [str(g) for g in no_midi_groups],
        "regenerate these groups; the MIDI is written for the first sample of each group",
    )

    probe = _MediaProbe(root)
    samples: list[SourceSample] = []
    for row, (key, profile, audio, midi, group) in enumerate(
        zip(ids, cols["profile_id"], cols["audio_path"], cols["midi_path"],
            cols["augmentation_group_id"])
    ):
        midi = midi if midi is not None else group_midi.get(group)
        audio_size = probe.size(key, audio, FLAC_MAGIC)
        midi_size = probe.size(key, midi, MIDI_MAGIC) if midi is not None else None
        if audio_size is None or midi_size is None or profile not in split_of:
            continue
        samples.append(
            SourceSample(key, split_of[profile], row, audio, midi, audio_size, midi_size)
        )
    probe.report(problems)
    problems.raise_if_any(DatasetError, f"{root} is not a valid SOUSA dataset")

    order = {name: i for i, name in enumerate(SPLITS)}
    samples.sort(key=lambda s: (order[s.split], s.key))
    label_table = labels.select(list(LABEL_COLUMNS))
    listed = set(cols["audio_path"])
    listed.update(group_midi.values())
    warnings = _unlisted_files(root, listed)
    return SourceDataset(root, tuple(samples), label_table, tuple(warnings))


class _MediaProbe:
    """Size and first bytes of each media file, once per path (MIDI files are shared).

    Plain string paths and os calls: pathlib costs ~30 µs a call, seconds at 100k samples.
    """

    def __init__(self, root: Path) -> None:
        self._base = str(root)
        self._root = root
        self._seen: dict[str, int | None] = {}
        self.outside: list[str] = []
        self.missing: dict[bytes, list[str]] = {FLAC_MAGIC: [], MIDI_MAGIC: []}
        self.damaged: dict[bytes, list[str]] = {FLAC_MAGIC: [], MIDI_MAGIC: []}

    def size(self, key: str, rel: str | None, magic: bytes) -> int | None:
        if rel in self._seen:
            return self._seen[rel]
        result = None
        parts = PurePosixPath(rel or "").parts
        if not rel or rel.startswith("/") or ".." in parts:
            self.outside.append(f"{key}: {rel!r}")
        else:
            path = os.path.join(self._base, rel)
            try:
                with open(path, "rb") as fh:
                    head = fh.read(len(magic))
                    result = os.fstat(fh.fileno()).st_size
            except OSError:
                self.missing[magic].append(f"{key}: {path}")
            else:
                if head != magic:
                    self.damaged[magic].append(f"{key}: {path} starts with {head!r}")
                    result = None
        self._seen[rel] = result
        return result

    def report(self, problems: Problems) -> None:
        problems.add(
            "media paths outside the dataset folder (absolute or with '..')",
            self.outside,
            "audio_path and midi_path must be relative to the dataset folder, with '/'",
        )
        problems.add(
            "audio files that do not exist",
            self.missing[FLAC_MAGIC],
            "restore these files, or remove their rows from labels/samples.parquet",
        )
        problems.add(
            "audio files that are not FLAC",
            self.damaged[FLAC_MAGIC],
            "these files are damaged or another format; regenerate or restore them",
        )
        problems.add(
            "MIDI files that do not exist",
            self.missing[MIDI_MAGIC],
            "restore these files, or regenerate their augmentation groups",
        )
        problems.add(
            "MIDI files that are not MIDI",
            self.damaged[MIDI_MAGIC],
            "these files are damaged; regenerate their augmentation groups",
        )


def _first(ids: list[str], profiles: list[str], profile: str, n: int = 3) -> list[str]:
    found = [i for i, p in zip(ids, profiles) if p == profile]
    return found[:n] + ([f"... ({len(found)} in all)"] if len(found) > n else [])


def _unlisted_files(root: Path, listed: set[str]) -> list[str]:
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
