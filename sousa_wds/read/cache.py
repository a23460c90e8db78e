"""An opt-in local cache of a remote pack's files (shards, metadata), each cached whole.

How it works:
- `open_cache(cache_dir, cache_size)` gives a `FileCache` or None: `cache_dir=` (else the
  SOUSA_WDS_CACHE_DIR environment variable; `False` turns the cache off), `cache_size=` (else
  SOUSA_WDS_CACHE_SIZE; "50GB", parsed by `io.parse_size`; none: no cap).
- `PackedDataset` wraps an HTTP or Hub location in a `CachedLocation` once it has read the
  manifest; local folders are never cached. Every file the manifest lists is served from
  `{cache_dir}/blobs/{sha256[:2]}/{sha256}`, fetched whole on first touch; the manifest itself
  is always fetched, since it says what the current files are.
- Keys are content: the sha256 the manifest gives for the file. A Hub manifest comes from the
  pinned commit, a mirror's from the mirror as it is now, so a new revision or an updated mirror
  (changed data) names other keys and never reads stale bytes; files unchanged between revisions
  are shared. Cache paths hold hex digests only: no URL, no token.
- Fill: one process per file at a time (an exclusive `flock` on `locks/{sha256}`, released by
  the kernel if its holder dies; lock files are empty and stay). Others wait, then find the file.
  Bytes are streamed to a hidden temporary sibling while hashed, checked against the manifest's
  sha256 and size, fsynced and renamed (`io.atomic_path`): a half-written file never appears
  under its final name. Wrong bytes from the server raise IntegrityError and are not cached.
  Names in the cache are predictable, so no file is opened through a symbolic link: the
  temporary file is created anew (`io.create_new`; a stale one is unlinked) and written with
  O_NOFOLLOW, a lock file opened with O_NOFOLLOW; a shared cache folder cannot be made to
  write elsewhere.
- Check: a file is hashed when it is fetched, and again whenever it changed since (its inode,
  size and mtime differ from those recorded in `verified/{sha256}` when it was last found
  right), so DataLoader workers, restarted each epoch, do not re-hash a whole split. A mismatch
  is logged (warning naming the file), the file deleted and fetched again. Bytes that rot on the
  disk without any write are not seen here; `verify=True` checks every member as it is read.
- Eviction: after each fill, while the blobs exceed the cap, the least recently used (atime, set
  on each use) are deleted. A reader holding one open keeps reading it (unlinked files live on
  while open). A file larger than the cap is read remotely, not cached.

Why whole files, not ranges: a whole file is checked against the manifest's sha256 in one pass
at download speed, epoch 2 sends no request for shard bytes at all, and the cache needs no index
of pieces. The price: a sparse `where=` selection or a lone `get_sample` downloads every shard it
touches in full (one shard, `--shard-size`, per sample looked up, at worst). So the cache is for
repeated passes over most of a split (training epochs); without `cache_dir` reads stay ranged.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import IntegrityError, LoaderError, MissingFile, PackError
from ..format import FileEntry, Manifest
from ..io import HASH_CHUNK, atomic_path, file_sha256, no_follow, parse_size, write_bytes_atomic
from .location import LocalLocation, Location, _FileRange

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_DIR_ENV = "SOUSA_WDS_CACHE_DIR"
CACHE_SIZE_ENV = "SOUSA_WDS_CACHE_SIZE"
DOWNLOAD_CHUNK = 4 * HASH_CHUNK

# Files this process has hashed and found right: path → (inode, size, mtime_ns) when hashed.
_verified: dict[str, tuple[int, int, int]] = {}
_verified_lock = threading.Lock()


def open_cache(cache_dir: str | os.PathLike[str] | bool | None = None,
               cache_size: str | int | None = None) -> FileCache | None:
    """The cache these arguments (or SOUSA_WDS_CACHE_DIR / SOUSA_WDS_CACHE_SIZE) ask for."""
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        cache_dir = os.environ.get(CACHE_DIR_ENV) or None
        if cache_dir is None and cache_size is not None:
            raise LoaderError(f"cache_size={cache_size!r} caps a cache, and there is none: give "
                              f"cache_dir= (--cache-dir, or {CACHE_DIR_ENV}) too")
        if cache_dir is None:
            return None
    if cache_size is None:
        cache_size = os.environ.get(CACHE_SIZE_ENV) or None
    try:
        cap = None if cache_size is None else parse_size(cache_size)
    except PackError:
        raise LoaderError(f"cache_size={cache_size!r} (or {CACHE_SIZE_ENV}): give a positive "
                          "size such as 50GB, 500MB or a byte count") from None
    return FileCache(Path(cache_dir).expanduser(), cap)


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class FileCache:
    """Whole files by sha256 under `root`, at most `cap` bytes of them (None: no cap)."""

    root: Path
    cap: int | None = None

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256[:2] / sha256

    def _record(self, sha256: str) -> Path:
        return self.root / "verified" / sha256

    def _known(self, path: Path, st: os.stat_result, sha256: str) -> bool:
        """Whether `path`, as it is now (inode, size, mtime), was hashed and found right, by
        this process or (its record under verified/) by any other."""
        signature = _signature(st)
        with _verified_lock:
            if _verified.get(str(path)) == signature:
                return True
        try:
            recorded = tuple(json.loads(self._record(sha256).read_bytes()))
        except (OSError, ValueError, TypeError):
            return False
        if recorded != signature:
            return False
        with _verified_lock:
            _verified[str(path)] = signature
        return True

    def _remember(self, path: Path, sha256: str) -> None:
        """Record that `path` holds its bytes (called under the file's lock)."""
        signature = _signature(path.stat())
        write_bytes_atomic(self._record(sha256), json.dumps(signature).encode())
        with _verified_lock:
            _verified[str(path)] = signature

    @contextmanager
    def _locked(self, sha256: str) -> Iterator[None]:
        path = self.root / "locks" / sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # never through a link: O_CREAT would make (or open) the file it points at
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise LoaderError(f"cannot open the cache's lock file {path}: "
                              f"{exc.strerror or exc}. A lock file is an empty regular file "
                              "you can write (delete a link or anything else there), or "
                              "choose another cache_dir=") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def fits(self, entry: FileEntry) -> bool:
        return self.cap is None or entry.bytes <= self.cap

    def get(self, inner: Location, entry: FileEntry) -> Path:
        """The cached copy of `entry`, checked, fetched from `inner` first when needed."""
        final = self.blob(entry.sha256)
        st = _stat(final)
        if st is None or not self._known(final, st, entry.sha256):
            with self._locked(entry.sha256):
                st = _stat(final)  # another process may have filled or checked it meanwhile
                if st is not None and not self._known(final, st, entry.sha256):
                    if st.st_size == entry.bytes and file_sha256(final) == entry.sha256:
                        self._remember(final, entry.sha256)
                    else:
                        log.warning("cached %s (%s) does not match the manifest's sha256: "
                                    "deleted, fetching it again", final, entry.path)
                        final.unlink(missing_ok=True)
                        st = None
                if st is None:
                    self._fill(inner, entry, final)
                    self._evict(keep=final)
                    st = final.stat()
        os.utime(final, ns=(time.time_ns(), st.st_mtime_ns))  # last use, for eviction
        return final

    def _fill(self, inner: Location, entry: FileEntry, final: Path) -> None:
        digest = hashlib.sha256()
        try:
            with atomic_path(final) as temp, open(temp, "wb", opener=no_follow) as fh:
                reader = inner.open_range(entry.path, 0, entry.bytes)
                try:
                    for at in range(0, entry.bytes, DOWNLOAD_CHUNK):
                        chunk = reader.read(min(DOWNLOAD_CHUNK, entry.bytes - at))
                        digest.update(chunk)
                        fh.write(chunk)
                finally:
                    reader.close()
                if digest.hexdigest() != entry.sha256:
                    raise IntegrityError(
                        f"{entry.path} from {inner.description} does not match its sha256 in "
                        "the manifest: not cached. The server holds other bytes than the pack "
                        "says (re-upload the file, or `sousa-wds verify` the source)")
        except LoaderError:  # the source's (a MissingFile is an OSError too), not the disk's
            raise
        except OSError as exc:
            raise LoaderError(f"cannot write {entry.path} into the cache {self.root}: "
                              f"{exc.strerror or exc}. Free space, choose another cache_dir= "
                              "or lower cache_size=") from exc
        self._remember(final, entry.sha256)

    def _evict(self, keep: Path) -> None:
        """Delete the least recently used blobs until the cache fits its cap."""
        if self.cap is None:
            return
        blobs = []
        for path in (self.root / "blobs").glob("*/*"):
            st = _stat(path)
            if st is not None and not path.name.startswith(".") and path != keep:
                blobs.append((st.st_atime_ns, st.st_size, path))
        total = sum(size for _, size, _ in blobs) + keep.stat().st_size
        for _, size, path in sorted(blobs):
            if total <= self.cap:
                break
            path.unlink(missing_ok=True)
            self._record(path.name).unlink(missing_ok=True)
            total -= size


class CachedLocation:
    """A remote location whose listed files are read from a local FileCache."""

    run_gap = LocalLocation.run_gap  # a cached shard is a local file: skipping is free
    cheap_seeks = True

    def __init__(self, inner: Location, cache: FileCache, manifest: Manifest) -> None:
        self.inner = inner
        self.cache = cache
        self.manifest = manifest
        self.description = inner.description

    def _cached(self, path: str) -> FileEntry | None:
        entry = self.manifest.file(path)
        if entry is not None and not self.cache.fits(entry):
            log.warning("%s (%d bytes) is larger than the cache (cache_size=%d): read remotely",
                        path, entry.bytes, self.cache.cap)
            return None
        return entry

    def read_file(self, path: str) -> bytes:
        entry = self._cached(path)
        if entry is None:
            return self.inner.read_file(path)
        return self._use(entry, Path.read_bytes)

    def open_range(self, path: str, start: int, end: int) -> Any:
        entry = self._cached(path)
        if entry is None:
            return self.inner.open_range(path, start, end)
        return self._use(entry, lambda blob: _FileRange(blob, start))

    def _use(self, entry: FileEntry, use: Callable[[Path], T]) -> T:
        """`use(cached copy)`, fetched again when another process evicts it between the check
        and the use (once open, an evicted file stays readable)."""
        for _ in range(3):
            try:
                return use(self.cache.get(self.inner, entry))
            except MissingFile:  # the source lacks it: not an eviction
                raise
            except FileNotFoundError:
                continue
        raise LoaderError(f"{entry.path}: the cache {self.cache.root} evicted it three times "
                          "before it could be read; raise cache_size=")


def cached(location: Location, manifest: Manifest, cache: FileCache | None) -> Location:
    """`location` read through `cache` (local folders and no cache: as is)."""
    if cache is None or isinstance(location, LocalLocation):
        return location
    return CachedLocation(location, cache, manifest)
