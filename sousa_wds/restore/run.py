"""`sousa-wds extract`: a packed dataset in, the generator's SOUSA folder out.

How it works:
- Read before writing: the manifest, the selected metadata rows (`sousa_wds.metadata` and the
  stream's `where`), and the split's label tables, staged in `DIR/.sousa-wds-extract/` and
  checked against the manifest. The plan (`plan`) fixes every file; an unsafe key or slug
  stops the run before DIR holds a single media file. The label files are then written into
  the staging folder too, so every file the run will put in DIR is known before any is.
- Nothing lost: a planned path in DIR may already hold a file only if it holds the planned
  bytes (a previous extract's finished work) or this extract's ledger lists it (`_Ledger`:
  files an unfinished extract into DIR wrote). Anything else refuses the run, naming the files,
  before a single file outside the staging folder is written.
- Resume from the data: a media file already in DIR with the planned size and sha256
  (the metadata's `flac_sha256` / `mid_sha256`) is kept and its sample not read again.
  Only the rest is streamed, split by split, shard by shard, with
  `sousa_wds.stream(..., decode=False, shuffle=False)`: one sample's bytes at a time.
- Each file is checked against the metadata before it is written, and written atomically, so
  an interrupted run leaves only complete, correct files; rerun the same command to finish.
- The label files are moved into place last, then the staging folder is removed.
Progress goes to a callback; nothing is printed.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from .. import metadata, stream  # the public reader API: its selection and checks apply
from ..errors import ExtractError, listing
from ..format import LABEL_TABLE_COLUMNS, SPLITS, labels_path
from ..io import file_sha256, replace_durably, write_bytes_atomic
from . import access
from .labels import OUTPUTS, check_table, label_ids, write_labels
from .plan import ExtractPlan, MediaFile, PlannedSample, plan_extract, restore_order, source_order

STAGING = ".sousa-wds-extract"
LEDGER = "written.txt"  # in STAGING: the files this unfinished extract wrote, one a line
BUILT = "built"  # in STAGING: the label files, written before the media, moved into DIR last
LISTED = 5  # files a refusal names before "and N more"


@dataclass(frozen=True)
class ExtractProgress:
    """Where a running extract stands; handed to the progress callback after each sample."""

    samples: int  # samples whose media are in place
    total_samples: int
    bytes: int  # media bytes written by this run
    total_bytes: int  # media bytes this run has to write


@dataclass(frozen=True)
class ExtractSummary:
    out: Path
    samples: int
    written: int  # media files written by this run
    reused: int  # media files already in place and correct
    bytes_written: int
    seconds: float

    def __str__(self) -> str:
        return (f"{self.samples} samples → {self.out}: {self.written} media files written "
                f"({self.bytes_written / 1e6:.1f} MB), {self.reused} already in place, "
                f"in {self.seconds:.1f} s")


Progress = Callable[[ExtractProgress], None]


def extract(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    split: str | None = None,
    where: Any = None,
    token: str | bool | None = None,
    progress: Progress | None = None,
) -> ExtractSummary:
    """Restore the SOUSA folder of a packed dataset into `out`; rerun to resume.

    `source`: packed folder, http(s) base URL, `user/name[@rev]` or `hf://datasets/...`;
    `split`: one split (default all); `where`: the selection `sousa_wds.stream` takes.
    """
    started = time.perf_counter()
    splits = _splits(split)
    out = _target(source, out)
    location = access.open_source(source, token)
    manifest = access.read_manifest(location)
    if manifest.layout != "shards":
        raise ExtractError(f"{location.description} uses the {manifest.layout!r} layout; extract "
                           "reads tar shards (pack without --no-sharding)")
    selected = {s: access.select(metadata(location, s), where) for s in splits}
    # Names are checked, and an empty selection refused, before DIR is touched.
    first = plan_extract(selected)
    if not first.samples:
        raise ExtractError(f"no sample of {location.description} ({', '.join(splits)}) matches "
                           f"where={where!r}; nothing to extract")
    staging = out / STAGING
    _refuse_links(out, first)
    fresh = not staging.exists()
    ledger = _Ledger(staging / LEDGER)
    staged = {(table, s): access.fetch(location, manifest, labels_path(table, s),
                                       staging / labels_path(table, s))
              for s in splits for table in LABEL_TABLE_COLUMNS}
    for (table, s), path in staged.items():
        check_table(path, LABEL_TABLE_COLUMNS[table],
                    f"{labels_path(table, s)} in {location.description}")
    frames = {s: _in_source_order(selected[s], s, staged) for s in splits}
    plan = plan_extract(frames)
    rows = pd.concat([frames[s] for s in splits], ignore_index=True)
    built = staging / BUILT
    write_labels(built, plan, rows, staged)
    writer = _MediaWriter(out, plan, progress, ledger)
    foreign = writer.foreign + _foreign_labels(out, built, ledger)
    if foreign:
        if fresh:  # the staging folder is this run's alone: a refusal leaves nothing
            shutil.rmtree(staging)
        _refuse(out, foreign)
    for s in splits:
        if writer.keys[s]:
            writer.write(_stream(location, s, writer.keys[s]))
    writer.check_complete(location.description)
    for rel in OUTPUTS:
        ledger.claim(rel)
        final = out.joinpath(*PurePosixPath(rel).parts)
        final.parent.mkdir(parents=True, exist_ok=True)
        replace_durably(built.joinpath(*PurePosixPath(rel).parts), final)
    shutil.rmtree(staging)
    return ExtractSummary(out, len(plan.samples), writer.written, writer.reused,
                          writer.bytes_written, time.perf_counter() - started)


def _splits(split: str | None) -> tuple[str, ...]:
    if split is None:
        return SPLITS
    if split not in SPLITS:
        raise ExtractError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return (split,)


def _target(source: Any, out: str | os.PathLike[str]) -> Path:
    """DIR, refused when it would mix the generator's folders into the pack being read."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise ExtractError(f"{out} exists and is not a folder; choose a folder to extract into")
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        pack = Path(source).resolve()
        if out.resolve() == pack or pack in out.resolve().parents:
            raise ExtractError(f"{out} is inside the pack {pack} being extracted (its audio/ and "
                               "labels/ would become part of the pack); choose a folder outside it")
    return out


def _refuse_links(out: Path, plan: ExtractPlan) -> None:
    """Refuse a symbolic link where the run writes: a folder under DIR it writes into (or its
    staging folder, or anything in that) must be a real one, or files would land wherever the
    link points, and the staging folder could not be removed. DIR itself may be a link."""
    slugs = {PurePosixPath(s.audio.path).parent.name for s in plan.samples}
    folders = [out / rel for rel in (STAGING, "labels", "audio", "midi",
                                     *(f"{top}/{slug}" for slug in sorted(slugs)
                                       for top in ("audio", "midi")))]
    links = [p for p in folders if p.is_symlink()]
    staging = out / STAGING
    if not links and staging.is_dir():
        for root, dirs, files in os.walk(staging):  # never follows a link
            links += [Path(root, name) for name in (*dirs, *files) if Path(root, name).is_symlink()]
    if links:
        raise ExtractError(
            f"{links[0]} is a symbolic link (to {os.readlink(links[0])}): extract writes only "
            "into real folders under DIR, never through a link. Remove the link (a real folder "
            "in its place is fine) and rerun, or extract into another folder")
    files = [p for p in folders if p.exists() and not p.is_dir()]
    if files:
        raise ExtractError(f"{files[0]} is a file where extract writes a folder: move it out of "
                           "DIR and rerun, or extract into another folder")


def _foreign_labels(out: Path, built: Path, ledger: _Ledger) -> list[str]:
    """Label files in DIR that this run would replace by other bytes and did not write."""
    foreign = []
    for rel in OUTPUTS:
        final = out.joinpath(*PurePosixPath(rel).parts)
        if not os.path.lexists(final) or rel in ledger.paths:
            continue
        if not (final.is_file() and filecmp.cmp(final, built.joinpath(*PurePosixPath(rel).parts),
                                                shallow=False)):
            foreign.append(rel)
    return foreign


def _refuse(out: Path, foreign: list[str]) -> None:
    """Refuse to replace files extract did not write: DIR may be someone's own dataset."""
    names = ", ".join(sorted(foreign)[:LISTED])
    more = f" and {len(foreign) - LISTED} more" if len(foreign) > LISTED else ""
    raise ExtractError(
        f"{out} already holds {len(foreign)} file(s) this extract would replace but did not "
        f"write ({names}{more}): it holds another dataset or another extract. Nothing was "
        "replaced; extract into a new or empty folder, or move those files out of it")


class _Ledger:
    """The files an unfinished extract into DIR wrote, in its staging folder, one path a line.

    A path is added before its file is written, so every file of an interrupted run is listed:
    a rerun may replace those (one damaged since, a label file of another selection) and
    nothing else that differs from the plan. Lines are not fsynced: after a power loss a
    missing line only makes a rerun refuse that file by name, never lose one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.paths = set(path.read_text(encoding="utf-8").splitlines()) if path.is_file() \
            else set()

    def claim(self, rel: str) -> None:
        if rel not in self.paths:
            with open(self.path, "a", encoding="utf-8") as fh:  # one line per media file
                fh.write(rel + "\n")
            self.paths.add(rel)


def _in_source_order(frame: pd.DataFrame, split: str,
                     staged: dict[tuple[str, str], Path]) -> pd.DataFrame:
    """`frame`'s rows in the generator's order, read off the split's label rows (see `plan`)."""
    order = source_order(ids for table in LABEL_TABLE_COLUMNS
                         for ids in label_ids(staged[table, split]))
    return restore_order(frame, order).reset_index(drop=True)


def _stream(location: Any, split: str, keys: set[str]) -> Any:
    """The samples `keys` of `split`, raw, in shard order, one at a time."""
    return stream(location, split, where=lambda frame: frame["key"].isin(keys), decode=False,
                  shuffle=False, rank=0, world_size=1)


class _MediaWriter:
    """Writes each planned media file once, checked and atomically; knows what is in place."""

    def __init__(self, out: Path, plan: ExtractPlan, progress: Progress | None,
                 ledger: _Ledger) -> None:
        self.out = out
        self.progress = progress
        self.ledger = ledger
        self.by_key = {s.key: s for s in plan.samples}
        self.files = media = plan.media()
        self.done = {path for path, m in media.items() if self._in_place(m)}
        # Files at planned paths with other bytes that no extract into DIR wrote.
        self.foreign = [path for path, m in media.items() if path not in self.done
                        and path not in ledger.paths and os.path.lexists(self._path(m))]
        self.reused = len(self.done)
        self.written = 0
        self.bytes_written = 0
        self.keys = _to_read(plan, self.done)
        pending = sum(len(k) for k in self.keys.values())
        self._state = ExtractProgress(
            len(plan.samples) - pending, len(plan.samples), 0,
            sum(m.size for path, m in media.items() if path not in self.done))
        self._report()

    def _path(self, media: MediaFile) -> Path:
        return self.out.joinpath(*PurePosixPath(media.path).parts)

    def _in_place(self, media: MediaFile) -> bool:
        path = self._path(media)
        if not path.is_file() or path.stat().st_size != media.size:
            return False
        return file_sha256(path) == media.sha256

    def write(self, samples: Any) -> None:
        for raw in samples:
            sample = self.by_key[raw["key"]]
            self._put(sample, sample.audio, raw["flac"])
            self._put(sample, sample.midi, raw["mid"])
            self._state = replace(self._state, samples=self._state.samples + 1,
                                  bytes=self.bytes_written)
            self._report()

    def check_complete(self, description: str) -> None:
        """Every planned file is in place: a stream that skipped a sample must not pass."""
        missing = sorted(set(self.files) - self.done)
        if missing:
            raise ExtractError(f"{description} did not deliver every selected sample; missing:"
                               f"{listing(missing)}\nRerun to resume; if it persists, check the "
                               "pack with `sousa-wds verify --deep`")

    def _put(self, sample: PlannedSample, media: MediaFile, data: bytes) -> None:
        sha = hashlib.sha256(data).hexdigest()
        if len(data) != media.size or sha != media.sha256:
            what = "flac_sha256" if media is sample.audio else "mid_sha256"
            raise ExtractError(
                f"sample {sample.key} ({sample.split}): its {PurePosixPath(media.path).suffix} "
                f"member does not match the metadata's {what} ({len(data)} bytes, sha256 "
                f"{sha[:12]}...). The shard is damaged or not the one the metadata describes: "
                "re-download or re-pack it (`sousa-wds verify --deep` checks every file), then "
                "rerun to resume")
        if media.path in self.done:
            return
        self.ledger.claim(media.path)
        write_bytes_atomic(self._path(media), data)
        self.done.add(media.path)
        self.written += 1
        self.bytes_written += len(data)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self._state)


def _to_read(plan: ExtractPlan, done: set[str]) -> dict[str, set[str]]:
    """Keys to read per split: each missing audio file's sample, and for a missing MIDI file
    whose group has no such sample, the group's first sample."""
    keys: dict[str, set[str]] = {split: set() for split in SPLITS}
    covered = set(done)
    for s in plan.samples:
        if s.audio.path not in done:
            keys[s.split].add(s.key)
            covered.add(s.midi.path)
    for s in plan.samples:
        if s.midi.path not in covered:
            keys[s.split].add(s.key)
            covered.add(s.midi.path)
    return keys
