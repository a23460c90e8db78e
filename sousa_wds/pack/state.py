"""The state of an unfinished pack, kept in `OUT/.sousa-wds-pack/`, and the lock on OUT.

How it works:
- `state.json` is a `PackState`: the sousa-wds and format versions, the source fingerprint and
  the options. `--resume` continues only when the state of the new run equals it.
- `shards/{name}.json` is written after each shard is renamed into place: the shard's offsets
  and hashes, its file's size and mtime, and a digest of its source files' paths, sizes and
  mtimes (`ShardResult`). A shard is kept on resume only if its record holds exactly the
  samples the plan gives it now, the file has the recorded size and mtime (a shard edited in
  place is rewritten), and its sources are as the check sees them now (a FLAC rewritten at
  the same size is packed again). A damaged record only costs its shard being rewritten.
  Damage that keeps the mtime (bit rot) is `verify --deep`'s to find.
- `OUT/.sousa-wds-pack.lock` is held (an exclusive `flock`) for the whole run, so a second pack
  into the same OUT is refused instead of racing. The kernel drops the lock when the process
  dies, even by SIGKILL, so a killed run never blocks the next one.
A damaged state file is a named error saying how to continue.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson

from .. import __version__
from ..errors import PackError, ResumeMismatch
from ..format import FORMAT_VERSION, PackOptions
from ..io import write_bytes_atomic, write_json_atomic
from .plan import PackPlan
from .tar import ROW_SCHEMA, ShardResult, source_stamp

log = logging.getLogger(__name__)

STATE_DIR = ".sousa-wds-pack"
LOCK_FILE = ".sousa-wds-pack.lock"


@dataclass(frozen=True)
class PackState:
    """What an unfinished pack in OUT was started from: resume needs the same."""

    fingerprint: str
    options: PackOptions
    sousa_wds: str = __version__
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return {"fingerprint": self.fingerprint, "format_version": self.format_version,
                "options": self.options.to_dict(), "sousa_wds": self.sousa_wds}

    @classmethod
    def from_json(cls, data: object, where: str) -> PackState:
        """Parse `state.json`; a state of another shape was written by another version."""
        try:
            assert isinstance(data, dict)
            return cls(fingerprint=str(data["fingerprint"]),
                       options=PackOptions(**data["options"]),
                       sousa_wds=str(data["sousa_wds"]),
                       format_version=int(data["format_version"]))
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise ResumeMismatch(
                f"cannot resume from {where}: another sousa-wds version wrote it, or it is "
                f"damaged ({exc!r}). Use --overwrite to start over.") from exc

    def validate(self, previous: PackState, out: Path) -> None:
        """Refuse to resume a pack started from another input, options or version."""
        if previous == self:
            return
        then, now = previous.to_json(), self.to_json()
        changed = [f"{name} {then['options'].get(name)!r} -> {value!r}"
                   for name, value in now["options"].items() if then["options"].get(name) != value]
        changed += [f"{name} {then[name]} -> {now[name]}" for name in ("sousa_wds",
                    "format_version") if then[name] != now[name]]
        if then["fingerprint"] != now["fingerprint"]:
            changed.append("the input dataset (its labels or media sizes changed, or it is "
                           "another dataset)")
        raise ResumeMismatch(
            f"cannot resume into {out}: it was started from another input, with other "
            f"options or by another sousa-wds version; changed: {'; '.join(changed)}. Rerun "
            "with the same options, or use --overwrite.")


@dataclass(frozen=True)
class Recorded:
    """A finished shard as the parent keeps it: the result without its location rows (they
    are in the shard's record: 11k rows as dicts are ~27 MB), and the counts they give."""

    result: ShardResult
    samples: int
    member_bytes: int

    @classmethod
    def of(cls, result: ShardResult) -> Recorded:
        return cls(replace(result, rows=()), len(result.rows), result.member_bytes)


class StateDir:
    """`OUT/.sousa-wds-pack/`: the state of the run and one record per finished shard."""

    def __init__(self, out: Path) -> None:
        self.root = out / STATE_DIR
        self.state_file = self.root / "state.json"
        self.shards = self.root / "shards"

    def exists(self) -> bool:
        return self.state_file.is_file()

    def start(self, state: PackState) -> None:
        self.shards.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.state_file, state.to_json())

    def load(self) -> PackState:
        return PackState.from_json(_load_json(self.state_file), str(self.state_file))

    def record(self, result: ShardResult) -> Recorded:
        """Write the record of a finished shard, where it was written (a worker process or
        this one): its location rows stay there until the metadata is written.

        JSON lines: the shard's fields, then one location row per line, compact (json's C
        encoder: 3x faster) and a row at a time (the encoder holds every piece of a document
        before joining them: +30-45 MB for a shard of 11k rows). Lines let Arrow read the rows
        back as columns (`load_locations`), with no Python object per row."""
        lines = [_compact({k: v for k, v in result.to_json().items() if k != "rows"})]
        lines += map(_compact, result.rows)
        write_bytes_atomic(self._record_path(result.name), "\n".join(lines).encode() + b"\n")
        return Recorded.of(result)

    def load_record(self, name: str) -> ShardResult:
        """The record of shard `name` (rows as dicts), written in this run or a resumed one."""
        path = self._record_path(name)
        head, rows = self._read_record(path)
        try:
            return ShardResult.from_json(
                head | {"rows": [json.loads(line) for line in rows.splitlines()]})
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise _damaged(path, exc) from exc

    def load_locations(self, name: str) -> tuple[ShardResult, Iterator[pa.Table]]:
        """The record of shard `name` without its rows, and the rows as Arrow columns, a block
        of ~2,500 at a time, read by Arrow from the file (the first line, the shard's fields,
        reads as a row of nulls and is dropped): no copy of the file's bytes in Python's heap,
        which keeps them, and no shard's rows whole (a 1 GB shard of small samples holds 16k
        rows; at 100k samples, the metadata's peak 227 -> 222 MB)."""
        path = self._record_path(name)
        try:
            with open(path, "rb") as fh:
                head = json.loads(fh.readline())
            result = ShardResult.from_json(head | {"rows": []})
        except (OSError, UnicodeDecodeError, RecursionError, ValueError, KeyError,
                TypeError) as exc:
            raise _damaged(path, exc) from exc
        return result, self._location_blocks(path)

    @staticmethod
    def _location_blocks(path: Path) -> Iterator[pa.Table]:
        try:
            with pajson.open_json(path, read_options=_ROW_READING,
                                  parse_options=_ROW_PARSING) as reader:
                first = True
                for batch in reader:
                    yield pa.Table.from_batches([batch.slice(1) if first else batch])
                    first = False
        except (OSError, pa.ArrowException) as exc:
            raise _damaged(path, exc) from exc

    def _record_path(self, name: str) -> Path:
        return self.shards / f"{name}.json"

    @staticmethod
    def _read_record(path: Path) -> tuple[dict, bytes]:
        """The first line parsed, and the row lines as they are."""
        try:
            data = path.read_bytes()
            head, _, rows = data.partition(b"\n")
            fields = json.loads(head)
        except (OSError, UnicodeDecodeError, RecursionError, ValueError) as exc:
            raise _damaged(path, exc) from exc
        if not isinstance(fields, dict):
            raise _damaged(path, TypeError("the first line is not a JSON object"))
        return fields, rows

    def finished(self, plan: PackPlan, out: Path) -> dict[str, ShardResult]:
        """Records of finished shards that still match the plan, file and all."""
        planned = {s.name: s for s in plan.shards}
        kept: dict[str, ShardResult] = {}
        for record in sorted(self.shards.glob("*.json")):
            try:
                result = self.load_record(record.stem)
            except PackError:
                log.warning("%s is damaged: its shard is written again", record)
                continue
            if result.name not in planned or result.path != planned[result.name].path:
                continue  # a record naming another file than its shard's is no record of it
            try:
                on_disk = (out / result.path).stat()
            except OSError:
                continue
            if (
                planned[result.name].samples.keys() == [row.get("key") for row in result.rows]
                and (on_disk.st_size, on_disk.st_mtime_ns) == (result.bytes, result.mtime_ns)
                and result.sources == source_stamp(planned[result.name].samples)
            ):
                kept[result.name] = result
        return kept


def _compact(data: dict) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


_ROW_PARSING = pajson.ParseOptions(explicit_schema=ROW_SCHEMA, unexpected_field_behavior="ignore")
_ROW_READING = pajson.ReadOptions(use_threads=False, block_size=1 << 20)  # ~2,500 rows


def _load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise _damaged(path, exc) from exc


def _damaged(path: Path, exc: BaseException) -> PackError:
    return PackError(f"{path} is damaged ({repr(exc)[:200]}); delete it and rerun with "
                     "--resume (its shard is rewritten), or use --overwrite to start over")


@contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive lock on OUT (created if missing) for the block; refuse if taken."""
    import fcntl  # POSIX only, like the durable renames sousa-wds relies on

    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        why = "is a symbolic link" if path.is_symlink() else f"cannot be opened ({exc.strerror})"
        raise PackError(f"the lock file {path} {why}; remove it, then rerun") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The holder unlinks the file as it finishes: a lock taken on that unlinked file
            # (opened just before) would not exclude a run that creates the name anew.
            if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            raise PackError(f"another sousa-wds pack is writing into {out} (it holds {path}); "
                            "wait for it to finish or stop it, then rerun") from None
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
    finally:
        os.close(fd)
