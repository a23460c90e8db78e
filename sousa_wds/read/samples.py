"""Samples from byte ranges: where the selected rows are, their members read, checked, decoded.

How it works:
- `Rows` turns metadata rows into compact arrays (shard, data offset and size of each member,
  the byte range covering them, each member's sha256 when the metadata has it): everything a
  worker needs, without the labels. Every reader (stream, SampleMap, load_audio, Ray) makes its
  rows here, so this is where each `shard_path` is checked to name a file inside the pack
  (`format.pack_path_problem`): `../x.tar` would read a file outside a local folder, or send a
  request (and the token) outside the base URL.
- `SampleReader.read(rows)` reads the rows in the order given with one range request per run of
  nearby rows (`location.run_gap`); `check` compares every member with the ustar header just
  before it (checksum, size, name) and, when verifying, with its `{member}_sha256` column
  (`flac_sha256`, `json_sha256`, `mid_sha256`); `load` decodes.
- `in_order` runs `load` on a few threads (libsndfile and hashlib release the GIL) and hands
  the results out in the order the rows were read.
- A member too large for a ustar size field (8 GiB and more) has its size in a PAX header that
  precedes its ustar header: for such members the bytes before the header are read too and the
  PAX `size` record is checked instead of the ustar field (which then says 0).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import mido
import numpy as np
import pandas as pd
import soundfile

from ..errors import IntegrityError, LoaderError, ShortRead
from ..format import MEMBERS, TAR_BLOCK, pack_path_problem
from .location import Location

TAR_HEADER = TAR_BLOCK  # a member's ustar header is the block right before its data
# The largest size a ustar header's 11 octal digits hold; larger members need a PAX record.
USTAR_MAX_SIZE = 8 ** 11 - 1
# Bytes read before a huge member's ustar header: the PAX header block and its records.
PAX_LOOKBACK = 4 * TAR_BLOCK
BAD_SHARD_HINT = (
    "Re-download or re-pack that shard (`sousa-wds verify --deep` checks every file), or pass "
    "on_error='skip' to replace bad samples with padding and go on"
)
# What decoding a corrupt member raises (libsndfile, json, mido, tar headers).
_DECODE_ERRORS = (RuntimeError, ValueError, OSError, EOFError, KeyError, IndexError)


@dataclass(frozen=True)
class Rows:
    """The selected samples' locations as compact arrays: everything a worker needs (no labels)."""

    members: tuple[str, ...]  # which members are read, in tar order
    shards: tuple[str, ...]  # shard paths, in pack order
    shard: np.ndarray  # per row: index into shards
    start: np.ndarray  # first byte to read: the header (or PAX header) of the first member
    end: np.ndarray  # one past the last member's data
    offsets: np.ndarray  # (rows, members) data offsets
    sizes: np.ndarray  # (rows, members)
    keys: np.ndarray
    sha256: dict[str, np.ndarray]  # member → per-row hex digest, for the columns present

    @classmethod
    def from_frame(cls, frame: pd.DataFrame | Mapping[str, Any],
                   members: tuple[str, ...] = MEMBERS) -> Rows:
        """From metadata rows: a DataFrame, or a mapping of its columns to arrays (a lookup of
        one row skips pandas, ~3 ms a call)."""
        codes, shards = pd.factorize(np.asarray(frame["shard_path"], dtype=object),
                                     use_na_sentinel=False)
        keys = np.asarray(frame["key"], dtype=object)
        for i, shard in enumerate(shards):
            problem = (pack_path_problem(shard) if isinstance(shard, str)
                       else "is not a path")
            if problem:
                raise LoaderError(
                    f"the metadata row of sample {keys[np.argmax(codes == i)]!r} has shard_path "
                    f"{shard!r}, which {problem}: a shard is a file inside the pack. The "
                    "metadata is damaged or crafted; re-download the pack (or re-pack it)")
        offsets = np.stack([np.asarray(frame[f"{m}_offset"], np.int64) for m in members], axis=1)
        sizes = np.stack([np.asarray(frame[f"{m}_size"], np.int64) for m in members], axis=1)
        first = offsets.argmin(axis=1)
        huge = sizes[np.arange(len(offsets)), first] > USTAR_MAX_SIZE
        start = offsets.min(axis=1) - TAR_HEADER - np.where(huge, PAX_LOOKBACK, 0)
        return cls(
            members=members,
            shards=tuple(str(s) for s in shards),
            shard=codes.astype(np.int32),
            start=np.maximum(start, 0),
            end=(offsets + sizes).max(axis=1),
            offsets=offsets,
            sizes=sizes,
            keys=keys,
            sha256={m: np.asarray(frame[f"{m}_sha256"], dtype=object) for m in members
                    if f"{m}_sha256" in frame},
        )

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.keys).encode()).hexdigest()


@dataclass(frozen=True)
class Decoding:
    """What a sample dict holds. decode=False: the member bytes (`flac`, `json`, `mid`).

    MIDI stays bytes unless midi="mido": mido parses in pure Python, ~1 ms a sample, about 8% of
    the FLAC decoding, and most training never reads it.
    """

    decode: bool = True
    mono: bool = False
    midi: Literal["bytes", "mido"] = "bytes"
    tensors: bool = False

    def __post_init__(self) -> None:
        if self.midi not in ("bytes", "mido"):
            raise LoaderError(f"midi={self.midi!r}: choose 'bytes' or 'mido'")
        if self.tensors and importlib.util.find_spec("torch") is None:
            raise LoaderError("tensors=True needs torch: pip install 'sousa-wds[torch]' (or "
                              "leave it off for numpy arrays)")

    def __call__(self, key: str, flac: bytes, labels: bytes, midi: bytes) -> dict[str, Any]:
        if not self.decode:
            return {"key": key, "flac": flac, "json": labels, "mid": midi}
        audio, rate = decode_audio(flac, self.mono)
        if self.tensors:
            import torch

            audio = torch.from_numpy(audio)
        return {
            "key": key,
            "audio": audio,
            "sample_rate": rate,
            "midi": mido.MidiFile(file=io.BytesIO(midi)) if self.midi == "mido" else midi,
            "labels": json.loads(labels),
        }


def decode_audio(flac: bytes, mono: bool = False) -> tuple[np.ndarray, int]:
    """FLAC bytes → float32 (channels, frames) and the sample rate.

    The array is the transpose of libsndfile's interleaved (frames, channels) buffer: a view, not
    a copy (copying costs 10-15% of decoding). `mono` averages the channels into (1, frames).
    """
    data, rate = soundfile.read(io.BytesIO(flac), dtype="float32", always_2d=True)
    channels = data.shape[1]
    if mono and channels > 1:
        mixed = data[:, 0].copy()  # column sums: ~10x faster than data.mean(axis=1)
        for channel in range(1, channels):
            mixed += data[:, channel]
        mixed *= 1.0 / channels
        return mixed[None, :], rate
    return data.T, rate


def _octal(field: bytes) -> int:
    return int(field.strip(b"\0 ") or b"x", 8)


def _valid_header(block: bytes) -> bool:
    try:
        stored = _octal(block[148:156])
    except ValueError:
        return False
    return stored == sum(block[:148]) + 8 * ord(" ") + sum(block[156:])  # checksum as spaces


def pax_records(before: bytes) -> dict[str, str]:
    """The PAX records of the extended header that ends where `before` ends, if there is one.

    Walks back block by block: the PAX header block is the one whose size field says exactly
    the blocks between it and the end of `before` hold its records."""
    blocks = len(before) // TAR_BLOCK
    for j in range(1, blocks + 1):
        at = len(before) - j * TAR_BLOCK
        block = before[at:at + TAR_BLOCK]
        if block[156:157] == b"x" and _valid_header(block):
            size = _octal(block[124:136])
            if -(-size // TAR_BLOCK) == j - 1:
                return _parse_pax(before[at + TAR_BLOCK:at + TAR_BLOCK + size])
    return {}


def _parse_pax(data: bytes) -> dict[str, str]:
    """`"%d %s=%s\\n"` records (the length counts the whole record)."""
    records, pos = {}, 0
    while pos < len(data) and data[pos:pos + 1] != b"\0":
        length_text, _, _ = data[pos:pos + 20].partition(b" ")
        length = int(length_text)
        record = data[pos + len(length_text) + 1:pos + length - 1]  # without the newline
        name, _, value = record.partition(b"=")
        records[name.decode("utf-8")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def header_problem(block: bytes, name: str, size: int, before: bytes = b"") -> str | None:
    """Why `block` is not the ustar header of member `name` holding `size` bytes, or None.

    Checks the three fields that matter (checksum, size, name) itself: tarfile's full parse of
    every field costs ~5x more, a quarter of reading a sample without decoding it. `before`
    holds the bytes preceding the header when they were read (huge members): a PAX `size`
    (and `path`) record there overrides the ustar field.
    """
    try:
        declared = _octal(block[124:136])
    except ValueError:
        return f"no tar header before {name} (the shard does not match its metadata)"
    if not _valid_header(block):
        return f"the tar header before {name} has a bad checksum"
    try:
        pax = pax_records(before) if before else {}
        declared = int(pax.get("size", declared))
    except (ValueError, UnicodeDecodeError):
        return f"the PAX header before {name} is malformed"
    if declared != size:
        return f"the tar header before {name} says {declared} bytes, the metadata {size}"
    member = pax.get("path")
    if member is None and name.isascii() and len(name) <= 100:
        member = block[:100].rstrip(b"\0").decode("utf-8", "replace")
    # Longer or non-ASCII names live in a PAX header that was not read; the size check remains.
    if member is not None and member != name:
        return f"tar member is {member!r} where the metadata has {name!r}"
    return None


class SampleReader:
    """Reads rows' byte ranges from a location and turns them into sample dicts."""

    def __init__(self, location: Location, rows: Rows, decoding: Decoding | None,
                 verify: bool) -> None:
        self.location = location
        self.rows = rows
        self.decoding = decoding
        self.verify = verify

    def error(self, row: int, exc: Exception) -> LoaderError:
        shard = self.rows.shards[self.rows.shard[row]]
        cls = type(exc) if isinstance(exc, (IntegrityError, ShortRead)) else LoaderError
        return cls(f"{shard} in {self.location.description}, sample {self.rows.keys[row]}: "
                   f"{exc}. {BAD_SHARD_HINT}")

    def read(self, rows: np.ndarray) -> Iterator[tuple[int, list[bytes] | LoaderError]]:
        """Each row's members as [before, header, data] triples in tar order, in the order
        given, with one request per run of nearby rows. `before` is b"" except for members too
        large for ustar (their PAX header). Every member is read into its own bytes object: no
        copy of the FLAC when it is handed out or decoded."""
        r = self.rows
        gap = self.location.run_gap
        i, n = 0, len(rows)
        while i < n:
            shard = r.shard[rows[i]]
            j = i + 1
            while (j < n and r.shard[rows[j]] == shard
                   and 0 <= r.start[rows[j]] - r.end[rows[j - 1]] <= gap):
                j += 1
            position, stop = int(r.start[rows[i]]), int(r.end[rows[j - 1]])
            try:
                reader = self.location.open_range(r.shards[shard], position, stop)
            except LoaderError as exc:
                for row in rows[i:j]:
                    yield row, self.error(row, exc)
                i = j
                continue
            try:
                for k in range(i, j):
                    row = rows[k]
                    try:
                        parts, position = self._members(reader, row, position)
                    except LoaderError as exc:
                        yield row, self.error(row, exc)
                        break  # the reader's position is unknown now: next rows get a new run
                    yield row, parts
                i = k + 1
            finally:
                reader.close()

    def _members(self, reader: Any, row: int, position: int) -> tuple[list[bytes], int]:
        parts = []
        start = int(self.rows.start[row])
        reader.skip(start - position)
        position = start
        for offset, size in zip(self.rows.offsets[row].tolist(), self.rows.sizes[row].tolist()):
            gap = offset - TAR_HEADER - position
            if size > USTAR_MAX_SIZE:
                parts.append(reader.read(gap))
            else:
                reader.skip(gap)
                parts.append(b"")
            parts.append(reader.read(TAR_HEADER))
            parts.append(reader.read(size))
            position = offset + size
        return parts, position

    def check(self, row: int, parts: list[bytes]) -> dict[str, bytes]:
        """The members by name, after checking their headers (and sha256 when verifying)."""
        key = self.rows.keys[row]
        named = dict(zip(self.rows.members, parts[2::3]))
        for ext, before, header in zip(self.rows.members, parts[0::3], parts[1::3]):
            problem = header_problem(header, f"{key}.{ext}", len(named[ext]), before)
            if problem:
                raise self.error(row, IntegrityError(problem))
            digests = self.rows.sha256.get(ext)
            if (self.verify and digests is not None
                    and hashlib.sha256(named[ext]).hexdigest() != digests[row]):
                raise self.error(row, IntegrityError(
                    f"{key}.{ext} does not match {ext}_sha256 of the metadata"))
        return named

    @property
    def verified(self) -> tuple[str, ...]:
        """The members whose sha256 `check` compares."""
        return tuple(m for m in self.rows.members if self.verify and m in self.rows.sha256)

    def load(self, row: int, parts: list[bytes]) -> dict[str, Any]:
        """Check the members, then decode."""
        named = self.check(row, parts)
        assert self.decoding is not None
        try:
            return self.decoding(self.rows.keys[row], named["flac"], named["json"],
                                 named["mid"])
        except _DECODE_ERRORS as exc:
            raise self.error(row, exc) from exc


def in_order(fn: Callable[[Any], Any], items: Iterable[Any], threads: int) -> Iterator[Any]:
    """`fn` over `items` on `threads` threads, results in the order of `items`. At most
    2 * threads items are in flight, so memory stays bounded; items are pulled (read) on the
    calling thread. Closing the iterator early cancels what has not started."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="sousa-wds-decode") as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
