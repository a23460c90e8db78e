"""Write one planned shard: a WebDataset tar of `{key}.flac`, `{key}.json`, `{key}.mid` groups.

How it works:
- Our own member loop over the standard library's `tarfile` ("w:" mode): for each sample, one
  header per member in `format.MEMBERS` order, with the fixed fields of `format.names` (integer
  mtime, owner, mode). The order is true because this loop writes it, not checked afterwards.
- Why not `webdataset.TarWriter`: it always opens tarfile in stream mode ("w|"), which copies
  every member again in 10 KiB pieces (25% slower per shard, measured), picks the member order
  itself (sorted extensions) and hides where each member's data lands. What it adds over
  `tarfile` (an encoder per extension, a dict per sample) we do not use: our JSON is encoded by
  `format.encode_record`. webdataset stays the reader our tests check shards with.
- Each member's data offset is `tar.offset` after `addfile` minus its padded size: exact by
  construction, whatever header tarfile wrote (a long name adds a PAX header).
- Two digests cover each byte, each computed once, where the bytes already are: the member's
  sha256 (the metadata's `*_sha256` columns: a reader of one sample checks what it fetched
  without the shard) and the shard's sha256 (the manifest: `verify --deep`, and the upload,
  which would otherwise read every shard again to hash it), on a thread of its own. SHA-256
  runs at ~1.7-1.9 GB/s a core here (SHA-NI), so the second digest costs ~0.55 CPU-s per GB,
  overlapped with the main thread's reading and a third thread's writing.
- The tar goes to a temporary name and is renamed when complete, so a shard under its final
  name is complete. A source file that changes while it is read stops the run, naming it.
- Written bytes are synced as they go and then dropped from the page cache: a shard is read
  again rarely, and on this VM finding fresh cache pages for every block was the kernel's
  largest cost (a 2 GB pack: 5-10 s of system CPU kept cached, 2-4 s dropped).
- FLAC files of a large block or more are read into a few buffers lent by the writer and
  given back once written, instead of a new `bytes` per file: each fresh buffer cost a page
  fault per 4 KiB (the kernel zeroes the page first), about half of all the page faults of a
  pack of ~1.5 MB samples.
- Sample rate, channels and frame count come from the media check (`SourceSample`), which
  opened every FLAC with libsndfile already; the read checks that the file is still the one
  checked (size, mtime, inode).
One sample's media is read at a time; the hashing and writing threads hold a few queued blocks.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from ..errors import PackError, PackInterrupted
from ..format import (
    LOCATION_COLUMNS,
    MEMBERS,
    encode_record,
    tar_member_info,
    tar_padded,
)
from ..io import create_new, drop_cached, no_follow, replace_durably, temp_sibling
from ..source import SampleTable, SourceSample

# progress(samples, bytes): called after each sample, in whichever process wrote it.
Progress = Callable[[int, int], None]
# Polled between samples; True asks the writer to stop (the temporary shard is removed).
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker process needs to write one shard (picklable)."""

    split: str
    name: str
    path: str
    positions: pa.Array  # where its samples are in the dataset's sample table, in shard order
    source_root: str
    out_root: str
    # Its samples (taken) and their label rows, in shard order; None: `write_shard` takes them
    # from the `samples` and `labels` tables it is given (a forked worker's, inherited from the
    # parent instead of taken and pickled by the parent for every task).
    samples: SampleTable | None = None
    records: pa.Table | None = None


# Location columns that name the shard and its members: the same for every sample of a shard,
# added when the metadata is built (`tables.location_table`), not returned per sample.
SHARD_NAMING = ("shard", "shard_path", "audio_shard", "midi_shard", "audio_filename",
                "midi_filename")
# What `write_shard` returns per sample: every other location column but the split.
ROW_SCHEMA = pa.schema([pa.field(n, t) for n, t in LOCATION_COLUMNS.items()
                        if n not in SHARD_NAMING and n != "split"])


@dataclass(frozen=True)
class ShardResult:
    name: str
    path: str
    bytes: int
    sha256: str
    rows: tuple[dict, ...]  # one location row per sample, in shard order
    # How `--resume` tells the shard and its sources are still the ones written: the file's
    # mtime once in place, and `source_stamp` of its samples ("" and 0: not known, rewrite).
    mtime_ns: int = 0
    sources: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "bytes": self.bytes,
                "sha256": self.sha256, "rows": list(self.rows), "mtime_ns": self.mtime_ns,
                "sources": self.sources}

    @property
    def member_bytes(self) -> int:
        return member_bytes(self.rows)

    @classmethod
    def from_json(cls, data: dict) -> ShardResult:
        return cls(data["name"], data["path"], data["bytes"], data["sha256"],
                   tuple(data["rows"]), int(data.get("mtime_ns", 0)),
                   str(data.get("sources", "")))


def source_stamp(samples: SampleTable) -> str:
    """One digest of what the media check saw of a shard's source files (paths, sizes,
    mtimes): a file rewritten since a shard was written, even at the same size, changes it."""
    digest = hashlib.sha256()
    names = ("audio_path", "audio_bytes", "audio_mtime_ns", "midi_path", "midi_bytes",
             "midi_mtime_ns")
    for values in zip(*(samples.column(name).to_pylist() for name in names)):
        digest.update(("\0".join(map(str, values)) + "\n").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def member_bytes(rows: Iterable[dict]) -> int:
    """Bytes of the members (or loose files) that location rows describe."""
    return sum(row.get(name) or 0 for row in rows
               for name in ("flac_size", "mid_size", "json_size"))


class _Lent(bytearray):
    """A buffer `_HashingWriter.lend` handed out: the writer thread takes views of it as they
    are, without a copy, and puts it back in the pool when `give_back` reaches that thread."""


# What passes from stage to stage: data (a view of a lent buffer or bytes), a lent buffer to
# give back once what came before it is written, or None at the end.
_Block = memoryview | bytes | _Lent | None


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and writes what passes through it on two more threads.

    Member data arrives as one large block per member and is handed over as is (a view of a
    lent buffer, or `bytes`); headers and padding are gathered into CHUNK-sized blocks. One
    thread hashes each block, the next writes it (both release the GIL): the shard's sha256,
    the copy into the page cache and the main thread's reading overlap, so one worker takes
    about as long as its slowest stage instead of their sum.
    """

    CHUNK = 4 << 20
    LARGE = 64 << 10  # blocks at least this big skip the gathering copy
    QUEUED_CHUNKS = 2  # per stage: bounds memory to a few blocks in flight, never a shard
    # Lent buffers: one being read into, one hashed, one written, and some waiting.
    BUFFERS = QUEUED_CHUNKS + 3
    # Sync as we go, on the writing thread, so the final fsync before the rename is short
    # instead of stalling the worker for the whole shard's dirty pages; each synced range
    # then leaves the page cache (`_sync_and_drop`).
    SYNC_EVERY = 128 << 20

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self._buffer = bytearray()
        self._to_hash: queue.Queue[_Block] = queue.Queue(self.QUEUED_CHUNKS)
        self._to_write: queue.Queue[_Block] = queue.Queue(self.QUEUED_CHUNKS)
        self._free: queue.SimpleQueue[_Lent] = queue.SimpleQueue()
        for _ in range(self.BUFFERS):
            self._free.put(_Lent())
        self._error: BaseException | None = None
        self._ended = False  # the end (None) is queued
        self._aborted = False  # left by an exception: the shard is removed, its tail not synced
        self._threads = [threading.Thread(target=stage, daemon=True)
                         for stage in (self._hash, self._write)]
        for thread in self._threads:
            thread.start()

    def writable(self) -> bool:
        return True

    def __exit__(self, *exc_info: Any) -> None:
        self._aborted = exc_info[0] is not None
        super().__exit__(*exc_info)

    def tell(self) -> int:
        return self.bytes

    def lend(self, size: int) -> _Lent:
        """A buffer of at least `size` bytes (waits while all are in flight). Written views of
        it must not change until `give_back(buffer)`."""
        buffer = self._free.get()
        # Headroom: file sizes vary, and a buffer replaced at every new largest file would cost
        # the page faults the pool is there to save (a fifth of a pack's, measured).
        return buffer if len(buffer) >= size else _Lent(size + size // 2)

    def give_back(self, buffer: _Lent) -> None:
        """Return `buffer` to the pool once every block written before this call is written."""
        self._to_hash.put(buffer)

    def write(self, data: Any) -> int:
        if self._error is not None:
            raise self._error
        self.bytes += len(data)
        if len(data) >= self.LARGE:
            self._flush_buffer()
            lent = isinstance(data, memoryview) and isinstance(data.obj, _Lent)
            self._to_hash.put(data if lent or type(data) is bytes else bytes(data))
        else:
            self._buffer += data
            if len(self._buffer) >= self.CHUNK:
                self._flush_buffer()
        return len(data)

    def _flush_buffer(self) -> None:
        if self._buffer:
            self._to_hash.put(bytes(self._buffer))
            self._buffer.clear()

    def close(self) -> None:
        """Flush the last block and wait until everything is hashed and written. Called again
        after a Ctrl-C in the first call, it still waits for both threads before `raw` closes."""
        if not self._ended:
            self._flush_buffer()
            self._to_hash.put(None)
            self._ended = True
        for thread in self._threads:
            thread.join()
        super().close()
        if self._error is not None:
            raise self._error

    def _hash(self) -> None:
        # Both stages keep passing blocks on after an error, so lent buffers come back and no
        # put on a full queue waits forever; the error is raised on the main thread.
        while (block := self._to_hash.get()) is not None:
            if not isinstance(block, _Lent) and self._error is None:
                try:
                    self.sha256.update(block)
                except BaseException as exc:
                    self._error = exc
            self._to_write.put(block)
        self._to_write.put(None)

    def _write(self) -> None:
        written = synced = 0
        while (block := self._to_write.get()) is not None:
            if isinstance(block, _Lent):
                self._free.put(block)
            elif self._error is None:
                try:
                    self._raw.write(block)
                    written += len(block)
                    if written - synced >= self.SYNC_EVERY:
                        self._sync_and_drop(synced, written)
                        synced = written
                except BaseException as exc:  # re-raised on the main thread
                    self._error = exc
        if self._error is None and not self._aborted:
            try:
                self._sync_and_drop(synced, written)
            except BaseException as exc:
                self._error = exc

    def _sync_and_drop(self, start: int, end: int) -> None:
        """Sync the bytes written so far and drop `start`..`end` from the page cache.

        Why drop: a shard is written once and read again rarely, and keeping it cached makes
        the kernel find fresh pages for every next block. Dropping each synced range lets the
        next ones reuse its pages: 2.2 GB written and synced in 128 MB steps took 5.9-7.4 s and
        5.3-6.3 CPU-s on this VM kept cached, 1.7-1.9 s and 1.1-1.2 CPU-s dropped.
        """
        self._raw.flush()
        _datasync(self._raw.fileno())
        drop_cached(self._raw.fileno(), start, end - start)


class _View(io.RawIOBase):
    """A file over one member's bytes for `tarfile.addfile`, whose reads are views of them: the
    writer gets the lent buffer itself instead of a copy."""

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._at = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> memoryview:  # type: ignore[override]
        end = len(self._data) if size < 0 else self._at + size
        piece = self._data[self._at:end]
        self._at += len(piece)
        return piece


_datasync = getattr(os, "fdatasync", os.fsync)  # fdatasync is POSIX-only (not macOS/Windows)
COPY_BUFSIZE = 64 << 20  # larger than any FLAC member: tarfile copies each in one piece
RECORD_BATCH = 256  # label records made Python objects at a time (a shard can hold 10k+)


def read_media(root: str | Path, rel: str, expected_bytes: int,
               expected_mtime_ns: int = 0, into: bytearray | None = None) -> bytes | memoryview:
    """A media file's bytes, exactly as checked: same size and mtime, unchanged while read.
    With `into` (at least `expected_bytes` + 1 long), a view of it holding the bytes.

    The plan (shard cuts, the source fingerprint) was made from the size and mtime the check
    saw (`SourceSample`; an mtime of 0 is unknown); a file rewritten or cut since then would
    put other bytes in the pack than the ones described, so it stops the run, naming the file.
    """
    path = Path(root, PurePosixPath(rel))
    try:
        # Non-blocking open: a FIFO swapped in since the check would block it forever.
        with open(path, "rb", buffering=0, opener=_nonblocking) as fh:
            before = os.fstat(fh.fileno())
            if not stat.S_ISREG(before.st_mode):
                raise PackError(f"{path} changed while packing: it is no longer a regular "
                                "file. Restore it, run `sousa-wds check`, then pack again "
                                "with --resume.")
            data = fh.readall() if into is None else _read_into(fh, into, expected_bytes + 1)
        after = os.stat(path)
    except OSError as exc:
        raise PackError(
            f"cannot read {path}: {exc.strerror or exc}. Restore the file, then rerun with "
            "--resume to continue where this run stopped."
        ) from exc
    stamp = (before.st_ino, before.st_size, before.st_mtime_ns)
    rewritten = expected_mtime_ns not in (0, before.st_mtime_ns)
    if (len(data) != expected_bytes or rewritten
            or stamp != (after.st_ino, after.st_size, after.st_mtime_ns)):
        raise PackError(
            f"{path} changed while packing: {expected_bytes} bytes when the dataset was "
            f"checked, {len(data)} read, {after.st_size} now. Let the generator finish (or "
            "restore the file), then run `sousa-wds check` and pack again with --overwrite."
        )
    return data


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _read_into(fh: io.RawIOBase, buffer: bytearray, limit: int) -> memoryview:
    """Up to `limit` bytes of `fh` read into `buffer`: a view of what was read."""
    view = memoryview(buffer)[:limit]
    got = 0
    while got < limit and (count := fh.readinto(view[got:])):
        got += count
    return view[:got]


def write_shard(
    task: ShardTask, progress: Progress | None = None, stop: StopCheck | None = None,
    labels: pa.Table | None = None, samples: SampleTable | None = None,
) -> ShardResult:
    """Write `task`'s shard atomically and return its location rows. `samples`, `labels`: the
    dataset's tables, where the task's samples and records are taken when it carries none."""
    if task.samples is None:
        assert samples is not None, "a task without samples needs the sample table"
        task = replace(task, samples=samples.take(task.positions))
    assert task.samples is not None
    if task.records is None:
        assert labels is not None, "a task without records needs the label table"
        task = replace(task, records=labels.take(task.samples.column("row")))
    assert task.records is not None
    final = Path(task.out_root, task.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_sibling(final)
    rows: list[dict] = []
    try:
        create_new(temp)  # a link or a hard link left at that name is replaced, not written into
        with open(temp, "wb", opener=no_follow) as raw, _HashingWriter(raw) as sink:
            # The format and encoding `format.tar_framing` describes (tarfile's defaults).
            with tarfile.open(fileobj=sink, mode="w:", format=tarfile.PAX_FORMAT,
                              encoding="utf-8", copybufsize=COPY_BUFSIZE) as tar:
                records = (record for batch in task.records.to_batches(RECORD_BATCH)
                           for record in batch.to_pylist())
                for index, (sample, record) in enumerate(zip(task.samples, records)):
                    if stop is not None and stop():
                        raise PackInterrupted(f"interrupted while writing {final}")
                    rows.append(_write_sample(tar, sink, task, sample, record) | {
                        "key": sample.key, "index_in_shard": index})
                    if progress is not None:
                        progress(1, sample.audio_bytes + sample.midi_bytes)
            sink.close()
        replace_durably(temp, final)
        mtime_ns = os.stat(final).st_mtime_ns
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise PackError(f"cannot write {final}: {exc.strerror or exc}. Free space or fix "
                        "the folder, then rerun with --resume.") from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return ShardResult(task.name, task.path, sink.bytes, sink.sha256.hexdigest(), tuple(rows),
                       mtime_ns, source_stamp(task.samples))


def _write_sample(tar: tarfile.TarFile, sink: _HashingWriter, task: ShardTask,
                  sample: SourceSample, record: dict) -> dict:
    """Add one key group in `MEMBERS` order; return its offsets, sizes, hashes, FLAC facts."""
    # A FLAC smaller than a large block is copied into the writer's gathered chunk anyway: a
    # new `bytes` of that size comes from the heap, and lending would cost thread hand-offs
    # per sample (at 10k ~2 KB samples, 3 s of 10 waiting on the writer's queues).
    buffer = sink.lend(sample.audio_bytes + 1) if sample.audio_bytes >= sink.LARGE else None
    payload = {
        "flac": read_media(task.source_root, sample.audio_path, sample.audio_bytes,
                           sample.audio_mtime_ns, into=buffer),
        "json": encode_record(record),
        "mid": read_media(task.source_root, sample.midi_path, sample.midi_bytes,
                          sample.midi_mtime_ns),
    }
    row: dict[str, Any] = stream_facts(sample)
    for ext in MEMBERS:
        data = payload[ext]
        row[f"{ext}_sha256"] = hashlib.sha256(data).hexdigest()
        source = _View(data) if isinstance(data, memoryview) else io.BytesIO(data)
        tar.addfile(tar_member_info(f"{sample.key}.{ext}", len(data)), source)
        row[f"{ext}_offset"] = tar.offset - tar_padded(len(data))
        row[f"{ext}_size"] = len(data)
    if buffer is not None:
        sink.give_back(buffer)
    tar.members.clear()  # TarFile would otherwise keep every header of the shard in memory
    return row


def stream_facts(sample: SourceSample) -> dict[str, int]:
    """Sample rate, channels and frame count, as the media check read them from the header."""
    assert sample.sample_rate > 0, f"{sample.audio_path}: read without its media check"
    return {"sample_rate": sample.sample_rate, "channels": sample.channels,
            "num_frames": sample.num_frames}
