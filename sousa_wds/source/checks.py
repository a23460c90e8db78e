"""The validation rules of a SOUSA dataset folder's labels and splits, one function per rule.

How it works:
- Each rule takes what it needs (a path, an Arrow column, a parsed splits.json) and adds at
  most one problem to a shared `Problems`, naming the rows or files and the fix; `read.py`
  runs them in order and stops before anything is returned if any rule failed.
- Rules run on Arrow columns, not Python lists, so 100k samples cost milliseconds.
- Stroke and measure files are streamed page by page: every page is decoded and cast (a
  damaged page or an uncastable value is found here, not after shards are written), and
  `(sample_id, index)` is checked unique in bounded memory by `_RowKeys`.
- Each rule is listed in docs/input.md with what it protects downstream and its test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..arrays import FALSE, column, int_array, int_scalar
from ..errors import DatasetError, Problems
from ..format import MANIFEST, SOURCE_SPLIT_FIELDS, column_mismatches, key_problem

STREAM_BATCH_ROWS = 16_384  # label rows checked per batch (65,536: read_dataset at 2 GB +19 MB)
STREAM_BUFFER_BYTES = 1 << 20
LOOKUP_SLACK = 64  # samples without label rows skipped before `_RowKeys` looks everywhere
INVALID_LABELS = "see docs/format.md for the expected column types; regenerate the labels"


def stream_parquet(path: Path) -> pq.ParquetFile:
    """Open a Parquet file to stream it page by page.

    By default pyarrow decodes a whole row group (1M rows in files pandas writes, ~400 MB)
    before yielding the first batch.
    """
    return pq.ParquetFile(path, buffer_size=STREAM_BUFFER_BYTES, pre_buffer=False)


def is_source_folder(root: Path) -> bool:
    """Whether `root` looks like what the SOUSA generator writes (a pack's input, not a pack):
    how commands pointed at the wrong one of the two say so."""
    return (root / "splits.json").is_file() and (root / "labels" / "samples.parquet").is_file()


def source_folder_hint(root: Path) -> str | None:
    """What a reader of packs says when `root` is the generator's folder instead, or None."""
    if not is_source_folder(root):
        return None
    return (f"it is a SOUSA dataset as the generator writes it: pack it first (`sousa-wds pack "
            f"{root} OUT`)")


def check_root(root: Path) -> None:
    """The folder exists and its name can be handed to pyarrow and printed (UTF-8)."""
    try:
        str(root).encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(
            f"{os.fsencode(root)!r}: the dataset path is not valid UTF-8, which pyarrow and the "
            "Hub cannot handle. Rename the folder (or link to it from a UTF-8 name) and rerun."
        ) from None
    if not root.is_dir():
        raise DatasetError(
            f"{root}: no such folder. Point at the folder the SOUSA generator wrote "
            "(the one holding audio/, midi/, labels/ and splits.json)."
        )
    if (root / MANIFEST).is_file() and not is_source_folder(root):
        raise DatasetError(f"{root} is a sousa-wds pack, not the folder the SOUSA generator "
                           f"wrote: check a pack with `sousa-wds verify {root}`")


def missing_files(paths: list[Path], problems: Problems) -> None:
    problems.add(
        "missing label files",
        [str(p) for p in paths if not p.is_file()],
        "regenerate the dataset or copy the complete labels/ folder and splits.json",
    )


def links_leaving(root_real: str, paths: list[Path], problems: Problems) -> None:
    """Label files reached through a symlink that leaves the dataset folder."""
    outside = [f"{p} -> {real}" for p in paths
               if not inside(root_real, real := os.path.realpath(p))]
    problems.add(
        "files that resolve outside the dataset folder (symlinks)",
        outside,
        "copy these files into the dataset folder instead of linking to them",
    )


def inside(root_real: str, real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def open_checked(
    path: Path, columns: dict[str, pa.DataType], problems: Problems
) -> pq.ParquetFile | None:
    """Open `path` and check it has `columns` with types that convert to the canonical ones.

    Only the footer is read, so a type problem in a 35M-row strokes file is found at once.
    """
    try:
        parquet = stream_parquet(path)
        schema = parquet.schema_arrow
    except (OSError, pa.ArrowException) as exc:
        problems.add(f"unreadable Parquet file {path}", [str(exc).splitlines()[0]],
                     "the file is damaged or not Parquet; regenerate or re-copy it")
        return None
    absent, wrong = column_mismatches(schema, columns)
    problems.add(f"{path} lacks required columns", absent,
                 "this does not look like SOUSA generator output; regenerate the labels")
    problems.add(f"{path} has columns of an unexpected type",
                 [f"{name}: {schema.field(name).type}, expected {columns[name]}"
                  for name in wrong], INVALID_LABELS)
    return None if absent or wrong else parquet


def read_splits(path: Path, problems: Problems) -> dict[str, str] | None:
    """Map profile_id → output split name; lists of strings, each profile in one split."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        problems.add(f"unreadable {path}", [str(exc) or type(exc).__name__],
                     "regenerate splits.json")
        return None
    fields = SOURCE_SPLIT_FIELDS.values()
    absent = [f for f in fields if not isinstance(data, dict) or not isinstance(data.get(f), list)]
    problems.add(f"{path} lacks profile lists", absent,
                 "splits.json must hold train_profile_ids, val_profile_ids and test_profile_ids "
                 "lists")
    if absent:
        return None
    not_text = [f"{f}[{i}]: {p!r}"[:120] for f in fields for i, p in enumerate(data[f])
                if not isinstance(p, str)]
    problems.add(f"profile ids that are not strings in {path}", not_text,
                 "profile ids are the profile_id strings of samples.parquet; fix splits.json")
    if not_text:
        return None
    owner: dict[str, str] = {}
    twice: list[str] = []
    for split, fieldname in SOURCE_SPLIT_FIELDS.items():
        for profile in data[fieldname]:
            if owner.setdefault(profile, split) != split:
                twice.append(f"profile {profile}: {owner[profile]} and {split}")
    problems.add(f"profiles listed in two splits of {path}", twice,
                 "each player profile must be in exactly one split; fix splits.json")
    return owner


def unique_ids(ids: pa.ChunkedArray, path: Path, fix: str, problems: Problems) -> None:
    counts = pc.value_counts(ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), int_scalar(1))).field("values")
    problems.add(f"duplicate sample_id in {path}", sorted(map(str, repeated.to_pylist())), fix)


def webdataset_keys(ids: pa.ChunkedArray, path: Path, problems: Problems) -> None:
    """sample_ids become member names: a dot or slash would silently split or move a sample."""
    bad = [f"row {i}: {k!r} {why}" for i, k in enumerate(ids.to_pylist())
           if (why := key_problem(k))]
    problems.add(
        f"sample_ids that cannot be WebDataset keys in {path}", bad,
        "WebDataset splits member names at the first dot; rename these samples "
        "(use letters, digits, '_' or '-') in the labels and on disk",
    )


def exercise_coverage(
    ids: pa.ChunkedArray, ex_ids: pa.ChunkedArray, path: Path, problems: Problems
) -> None:
    """One exercise row per sample: no sample loses its scores, no scores lose their sample."""
    lacking = ids.filter(pc.invert(pc.is_in(ids, value_set=ex_ids.combine_chunks())))
    problems.add(f"samples without an exercise row in {path}",
                 sorted(map(str, lacking.to_pylist())),
                 "regenerate the labels so every sample has its exercise scores")
    unknown = ex_ids.filter(pc.invert(pc.is_in(ex_ids, value_set=ids.combine_chunks())))
    problems.add(f"exercise rows for unknown samples in {path}",
                 sorted(map(str, unknown.to_pylist())),
                 "remove these rows or add the samples to samples.parquet")


def profiles_in_splits(labels: pa.Table, split_of: dict[str, str], problems: Problems) -> None:
    """Every profile has a split: sousa-wds never guesses one."""
    profiles = labels.column("profile_id")
    listed = column([p for p in pc.unique(profiles).to_pylist() if p in split_of], pa.string())
    lost = pc.invert(pc.fill_null(pc.is_in(profiles, value_set=listed), FALSE))
    unsplit = labels.filter(lost).select(["profile_id", "sample_id"]).to_pylist()
    by_profile: dict[str | None, list[str]] = {}
    for row in unsplit:
        by_profile.setdefault(row["profile_id"], []).append(row["sample_id"])
    problems.add(
        "profiles in no split of splits.json",
        [f"profile {p}: samples {', '.join(_first(ids))}"
         for p, ids in sorted(by_profile.items(), key=lambda kv: str(kv[0]))],
        "add these profile ids to one of the split lists in splits.json, or remove their "
        "samples; sousa-wds never guesses a split",
    )


def _first(ids: list[str], n: int = 3) -> list[str]:
    return ids[:n] + ([f"... ({len(ids)} in all)"] if len(ids) > n else [])


def group_midi(labels: pa.Table, problems: Problems) -> pa.Array:
    """Each row's MIDI: its own midi_path, or the first one of its augmentation group.

    In Arrow: three lists of 100k Python strings cost ~30 MB at the peak of `read_dataset`.
    `index_in` gives the first position of each row's group among the rows that have a MIDI,
    on the groups' dictionary codes (`augmentation_group_id` comes dictionary-encoded, one
    dictionary for the column: equal codes are equal ids).
    """
    groups, midi = labels.column("augmentation_group_id"), labels.column("midi_path")
    codes = groups.combine_chunks().indices
    has = pc.and_(pc.is_valid(midi), pc.is_valid(groups))
    first = pc.index_in(codes, value_set=codes.filter(has))
    resolved = pc.coalesce(midi, pc.take(midi.filter(has), first)).combine_chunks()
    lacking = pc.unique(groups.filter(pc.is_null(resolved))).to_pylist()
    problems.add(
        "augmentation groups with no MIDI file (no row of the group has midi_path)",
        sorted(str(g) for g in lacking),
        "regenerate these groups; the MIDI is written for the first sample of each group",
    )
    return resolved


def label_rows(
    parquet: pq.ParquetFile, path: Path, columns: dict[str, pa.DataType],
    known: pa.Array, problems: Problems,
) -> None:
    """Every page decodes and casts; rows belong to known samples, once per (sample_id, index).

    Reads all columns: a damaged page in any column would otherwise surface only when pack
    streams the file after writing every shard.
    """
    keys = _RowKeys(known)
    try:
        for batch in parquet.iter_batches(batch_size=STREAM_BATCH_ROWS, columns=list(columns)):
            for name, typ in columns.items():
                batch.column(name).cast(typ)
            keys.add(batch.column("sample_id"), batch.column("index").cast(pa.int64()))
        keys.finish(parquet)
    except (OSError, pa.ArrowException) as exc:
        problems.add(f"damaged or invalid rows in {path}",
                     [f"after row {keys.rows}: {str(exc).splitlines()[0]}"],
                     "the file is damaged or holds values of the wrong type; regenerate or "
                     "re-copy it")
        return
    problems.add(f"rows for unknown samples in {path}", sorted(keys.orphans),
                 "remove these rows or add the samples to samples.parquet; packed labels would "
                 "silently lose them")
    problems.add(f"repeated (sample_id, index) rows in {path}", keys.repeated(),
                 "(sample_id, index) identifies a label row; each sample's indexes must be "
                 "unique (their row order is free); regenerate the labels")


class _RowKeys:
    """(sample_id, index) uniqueness over a stream of batches, in bounded memory.

    The generator writes each sample's rows together, so duplicates are looked for within each
    batch, with the last sample's rows carried over to the next batch. A sample whose rows
    come back after another sample's is remembered, and its rows alone are checked again in a
    second pass; row order inside a sample is never a problem (buzz rolls are not in index order).
    """

    def __init__(self, known: pa.Array) -> None:
        self.known = known
        self.rows = 0
        self.orphans: set[str] = set()
        self._seen: set[int] = set()
        self._scattered: set[int] = set()
        self._carry: pa.Table | None = None
        self._repeated: set[tuple[int, int | None]] = set()
        self._next = 0  # where the next batch's samples are looked for first in `known`

    def add(self, ids: pa.Array, index: pa.Array) -> None:
        self.rows += len(ids)
        codes = self._codes(ids)
        unknown = pc.is_null(codes)
        if pc.any(unknown).as_py():
            self.orphans.update(map(str, pc.unique(ids.filter(unknown)).to_pylist()))
        rows = pa.table({"code": codes, "index": index}).filter(pc.invert(unknown))
        if self._carry is not None:
            rows = pa.concat_tables([self._carry, rows])
        if not rows.num_rows:
            return
        code = rows.column("code").combine_chunks()
        changes = pc.indices_nonzero(pc.not_equal(code.slice(1), code.slice(0, len(code) - 1)))
        starts = [0] + [i + 1 for i in changes.to_pylist()]
        for start in starts[:-1]:
            self._close(code[start].as_py())
        self._duplicates(rows.slice(0, starts[-1]))
        self._carry = rows.slice(starts[-1])

    def _codes(self, ids: pa.Array) -> pa.Array:
        """Each row's position in `known` (null: unknown), as `index_in` over all of `known`
        gives it, but looked up first among the few samples that follow the last batch's.

        `index_in` hashes its whole value set on every call: 10 ms a batch at 100k samples,
        26 s for the ~45M stroke and measure rows of the full dataset. The generator writes
        label rows in sample order, so a batch's samples are the next ones in `known`.
        """
        if not len(ids):
            return pc.index_in(ids, value_set=self.known)
        changes = pc.sum(pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py() or 0
        start = self._next  # the last batch's last sample: its rows may go on here
        codes = pc.index_in(ids, value_set=self.known.slice(start, changes + 1 + LOOKUP_SLACK))
        if pc.any(pc.is_null(codes)).as_py():
            codes = pc.index_in(ids, value_set=self.known)
        else:
            codes = pc.add(codes, int_scalar(start, codes.type))
        last = codes[len(codes) - 1]
        if last.is_valid:
            self._next = last.as_py()
        return codes

    def finish(self, parquet: pq.ParquetFile) -> None:
        if self._carry is not None and self._carry.num_rows:
            self._close(self._carry.column("code")[0].as_py())
            self._duplicates(self._carry)
        if self._scattered:
            self._second_pass(parquet)

    def repeated(self) -> list[str]:
        ordered = sorted(self._repeated, key=lambda ci: (ci[0], ci[1] is None, ci[1] or 0))
        return [f"{self.known[c]} index {i}" for c, i in ordered]

    def _close(self, code: int) -> None:
        if code in self._seen:
            self._scattered.add(code)
        self._seen.add(code)

    def _duplicates(self, rows: pa.Table) -> None:
        """Sorted by (code, index), a repeated pair sits next to its twin (nulls equal).

        Not `Table.group_by`: it loads pyarrow.acero, which imports pandas (~1 s).
        """
        if rows.num_rows < 2:
            return
        order = pc.sort_indices(rows, sort_keys=[("code", "ascending"), ("index", "ascending")])
        code = rows.column("code").take(order).combine_chunks()
        index = rows.column("index").take(order).combine_chunks()
        n = len(code)
        later_i, earlier_i = index.slice(1), index.slice(0, n - 1)
        same_index = pc.or_kleene(pc.equal(later_i, earlier_i),
                                  pc.and_(pc.is_null(later_i), pc.is_null(earlier_i)))
        same = pc.and_(pc.equal(code.slice(1), code.slice(0, n - 1)),
                       pc.fill_null(same_index, FALSE))
        twice = pc.indices_nonzero(same)
        self._repeated.update(zip(code.slice(1).take(twice).to_pylist(),
                                  later_i.take(twice).to_pylist()))

    def _second_pass(self, parquet: pq.ParquetFile) -> None:
        scattered = int_array(sorted(self._scattered), pa.int32())
        parts = []
        for batch in parquet.iter_batches(batch_size=STREAM_BATCH_ROWS,
                                          columns=["sample_id", "index"]):
            codes = pc.index_in(batch.column(0), value_set=self.known)
            mine = pc.fill_null(pc.is_in(codes, value_set=scattered), FALSE)
            parts.append(pa.table({"code": codes.filter(mine),
                                   "index": batch.column(1).cast(pa.int64()).filter(mine)}))
        self._duplicates(pa.concat_tables(parts))
