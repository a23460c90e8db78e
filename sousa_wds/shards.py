"""Write one planned shard: a WebDataset tar of `{key}.flac`, `{key}.json`, `{key}.mid` groups.

How it works:
- `webdataset.TarWriter` writes each sample as one key group (members sorted by extension)
  with a fixed integer mtime, owner and mode, so the same plan gives the same bytes.
- The tar goes to a temporary name through a hashing wrapper; the shard's sha256 is known the
  moment the last block is written, without reading the file again. Only then is it renamed
  to its final name, so a shard that exists under its final name is complete.
- Member data offsets are computed from the tar stream's position and each header's length,
  and recorded with sizes, the FLAC's sha256 and its STREAMINFO facts: the metadata rows that
  let a reader fetch one sample with one range request.
Exactly one sample's media is in memory at a time.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import soundfile

from .errors import PackError
from .files import temp_sibling
from .format import MEMBERS, TAR_GROUP, TAR_MODE, TAR_MTIME, TAR_USER, encode_record
from .source import SourceSample


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker process needs to write one shard (picklable)."""

    split: str
    name: str
    path: str
    samples: tuple[SourceSample, ...]
    records: pa.Table  # label rows, in sample order: compact to pickle to a worker
    source_root: str
    out_root: str


@dataclass(frozen=True)
class ShardResult:
    name: str
    path: str
    bytes: int
    sha256: str
    rows: tuple[dict, ...]  # one location row per sample, in shard order

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "bytes": self.bytes,
                "sha256": self.sha256, "rows": list(self.rows)}

    @classmethod
    def from_json(cls, data: dict) -> ShardResult:
        return cls(data["name"], data["path"], data["bytes"], data["sha256"],
                   tuple(data["rows"]))


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha256.update(data)
        self._raw.write(data)
        self.bytes += len(data)
        return len(data)


def _padded(size: int) -> int:
    return -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _read(root: str, rel: str) -> bytes:
    path = Path(root, PurePosixPath(rel))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PackError(
            f"cannot read {path}: {exc.strerror or exc}. Restore the file, then rerun with "
            "--resume to continue where this run stopped."
        ) from exc


def write_shard(
    task: ShardTask, progress: Callable[[int, int], None] | None = None
) -> ShardResult:
    """Write `task`'s shard atomically and return its location rows; `progress(samples, bytes)`."""
    from webdataset import TarWriter  # imports torch when installed: keep it off import paths

    final = Path(task.out_root, task.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(final)
    rows: list[dict] = []
    try:
        with open(temp, "wb") as raw:
            sink = _HashingWriter(raw)
            writer = TarWriter(sink, user=TAR_USER, group=TAR_GROUP, mode=TAR_MODE,
                               mtime=TAR_MTIME, encoder=False)
            tar = writer.tarstream
            for index, (sample, record) in enumerate(zip(task.samples, task.records.to_pylist())):
                flac = _read(task.source_root, sample.audio_path)
                midi = _read(task.source_root, sample.midi_path)
                facts = flac_facts(flac, Path(task.source_root, PurePosixPath(sample.audio_path)))
                payload = {"flac": flac, "json": encode_record(record), "mid": midi}
                start = tar.offset
                writer.write({"__key__": sample.key, **payload})
                row = _locate(tar, start, payload)
                row.update(
                    key=sample.key,
                    index_in_shard=index,
                    flac_sha256=hashlib.sha256(flac).hexdigest(),
                    **facts,
                )
                rows.append(row)
                if progress is not None:
                    progress(1, len(flac) + len(midi))
            writer.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return ShardResult(task.name, task.path, sink.bytes, sink.sha256.hexdigest(), tuple(rows))


def _locate(tar: tarfile.TarFile, start: int, payload: dict[str, bytes]) -> dict:
    """Data offset and size of each member TarWriter just wrote, from header lengths."""
    written = tar.members[-len(MEMBERS):]
    position = start
    row: dict[str, int] = {}
    for ext, info in zip(MEMBERS, written):
        if not info.name.endswith("." + ext) or info.size != len(payload[ext]):
            raise AssertionError(f"unexpected member order in tar: {info.name}")
        position += len(info.tobuf(tar.format, tar.encoding, tar.errors))
        row[f"{ext}_offset"] = position
        row[f"{ext}_size"] = info.size
        position += _padded(info.size)
    if position != tar.offset:
        raise AssertionError(f"offset bookkeeping is off: {position} != {tar.offset}")
    # Keep only what later offsets need: TarFile would otherwise hold every member's header.
    del tar.members[:]
    return row


def flac_facts(data: bytes, path: Path) -> dict[str, int]:
    try:
        info = soundfile.info(io.BytesIO(data))
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise PackError(
            f"{path} is not a readable audio file ({exc}). Regenerate or restore it, then rerun "
            "with --resume."
        ) from exc
    if info.format != "FLAC":
        raise PackError(f"{path} is {info.format}, not FLAC; SOUSA shards carry FLAC audio only")
    return {"sample_rate": info.samplerate, "channels": info.channels, "num_frames": info.frames}
