"""Plan an extract: which file each selected sample restores, decided before any byte is written.

How it works:
- Samples are put back in their source order. A pack shuffles samples into shards, but
  `labels/{strokes,measures}/{split}.parquet` keep the generator's row order, and those rows
  follow the samples' order: the first appearance of each sample_id there is its place in the
  split. Samples without any stroke or measure row follow, by key. Splits come one after
  another (train, validation, test): a pack does not record how the generator interleaved them.
- Paths are the generator's (SOUSA_INPUT.md): `audio/{rudiment_slug}/{key}.flac`, and one
  `midi/{rudiment_slug}/{key}.mid` per augmentation group, named after the group's first
  (selected) sample, whose row alone gets `midi_path`. Members of a group whose MIDI differs
  (by `mid_sha256`) get a file of their own.
- Keys and rudiment slugs become path parts, so both must pass the format's key rule
  (letters, digits, '_', '-'): nothing in the metadata can name a file outside DIR.
Planning is pure (metadata frames in, an `ExtractPlan` out); `run` does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from ..errors import ExtractError, Problems
from ..format import SPLITS, key_problem
from ..io import NAME_MAX


@dataclass(frozen=True)
class MediaFile:
    """A file to restore under DIR and what it must hold."""

    path: str  # relative to DIR, '/'-separated
    size: int
    sha256: str  # the metadata's flac_sha256 or mid_sha256


@dataclass(frozen=True)
class PlannedSample:
    key: str
    split: str
    audio: MediaFile
    midi: MediaFile  # its augmentation group's MIDI file
    owns_midi: bool  # the group's first sample: its row gets midi_path


@dataclass(frozen=True)
class ExtractPlan:
    """Every selected sample, in restored source order, with the files it restores."""

    samples: tuple[PlannedSample, ...]

    def media(self) -> dict[str, MediaFile]:
        """Every file to restore, by path: audio per sample, MIDI once per group."""
        files: dict[str, MediaFile] = {}
        for s in self.samples:
            files[s.audio.path] = s.audio
            files.setdefault(s.midi.path, s.midi)
        return files


def source_order(sample_ids: Iterable[Sequence[str]]) -> list[str]:
    """Sample ids in order of first appearance across label-row batches."""
    return list(dict.fromkeys(key for batch in sample_ids for key in batch))


def restore_order(frame: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """`frame`'s rows in source order; rows that `order` lacks follow, by key."""
    rank = {key: i for i, key in enumerate(order)}
    known = frame["key"].map(rank)
    fallback = len(rank)
    sort = pd.DataFrame({"rank": known.fillna(fallback).astype("int64"), "key": frame["key"]})
    return frame.loc[sort.sort_values(["rank", "key"], kind="stable").index]


def plan_extract(frames: Mapping[str, pd.DataFrame]) -> ExtractPlan:
    """Plan the files of `frames` (selected metadata rows per split, already in source order).

    Raises ExtractError listing every key or slug that cannot be a path part, keys that are not
    their row's sample_id and keys that appear twice, before anything is written.
    """
    unsafe: list[str] = []
    seen: dict[str, str] = {}
    twice: list[str] = []
    groups: dict[tuple, MediaFile] = {}
    samples: list[PlannedSample] = []
    for split in (s for s in SPLITS if s in frames):
        frame = frames[split]
        for i, (key, sample_id, slug, group, flac_size, flac_sha, mid_size, mid_sha) in enumerate(
                zip(frame["key"], frame["sample_id"], frame["rudiment_slug"],
                    frame["augmentation_group_id"], frame["flac_size"], frame["flac_sha256"],
                    frame["mid_size"], frame["mid_sha256"])):
            bad = _unsafe(key=key, rudiment_slug=slug) or (
                None if key == sample_id else f"key {key!r} is not its sample_id {sample_id!r}")
            if bad:
                unsafe.append(f"{split} row {i}: {bad}")
                continue
            if key in seen:
                twice.append(f"{key} ({seen[key]} and {split})")
                continue
            seen[key] = split
            # A group's members share one MIDI; one whose bytes differ keeps its own file.
            identity = (group if isinstance(group, str) else f"\0{key}", str(mid_sha))
            owns = identity not in groups
            if owns:
                groups[identity] = MediaFile(f"midi/{slug}/{key}.mid", int(mid_size), str(mid_sha))
            audio = MediaFile(f"audio/{slug}/{key}.flac", int(flac_size), str(flac_sha))
            samples.append(PlannedSample(key, split, audio, groups[identity], owns))
    _refuse(unsafe, twice)
    return ExtractPlan(tuple(samples))


def _refuse(unsafe: list[str], twice: list[str]) -> None:
    problems = Problems()
    problems.add(
        "keys or rudiment slugs that cannot be file names under DIR",
        unsafe,
        "keys and rudiment_slug may only hold letters, digits, '_' and '-', short enough "
        "for a file name, and a key is its sample_id: this pack's metadata is damaged or "
        "hostile (re-download it from a trusted source), or its ids were made for another "
        "tool than the SOUSA generator",
    )
    problems.add("keys listed in two splits", twice,
                 "a sample belongs to one split; re-download or re-pack the dataset")
    problems.raise_if_any(ExtractError, "refusing to extract")


def _unsafe(**parts: object) -> str | None:
    """Why these path parts could not be file names under DIR, or None. A file name holds at
    most NAME_MAX bytes: a longer key would fail half-way through the extract."""
    bad = [f"{name} {value!r} {why}" for name, value in parts.items()
           if (why := key_problem(value))]
    bad += [f"{name} {value[:40]!r}... is {len(value)} characters: a file name holds at most "
            f"{NAME_MAX - len('.flac')}" for name, value in parts.items()
            if isinstance(value, str) and len(value) + len(".flac") > NAME_MAX]
    return "; ".join(bad) or None
