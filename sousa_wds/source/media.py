"""Check every media file a SOUSA dataset points at, before anything is packed.

How it works:
- A path from `audio_path`/`midi_path` must be relative, without `..`, and resolve inside the
  dataset folder: folders are resolved once each, a file only when `lstat` says it is a link.
- The file must be a regular file (a FIFO would block the first read forever), checked on
  the `lstat` result before it is opened; the same call gives the size and mtime that pack
  compares to notice a file changing while it is read.
- MIDI files must start with `MThd`. FLAC files must start with `fLaC` and be complete: by
  default libsndfile seeks to the last frames the STREAMINFO header announces and decodes
  them (~0.3 ms a file; a truncated or cut file fails). `deep=True` decodes every frame
  (~12 ms per MB-sized file, ~90 MB/s a core), which also finds damage in the middle.
  The same open gives each FLAC's sample rate, channels and frame count, which the metadata
  records: pack takes them from here instead of opening every file with libsndfile again.
- Files are checked in batches in a process per core (`parallel.process_map`), results
  gathered in task order, so the report does not depend on the worker count. Threads gained
  nothing (per-file Python holds the GIL between libsndfile calls); 2 processes took the
  1539 files of the 2 GB benchmark from 0.64 to 0.40 s.
"""

from __future__ import annotations

import array
import os
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import pyarrow as pa
import soundfile

from ..arrays import int_array
from ..errors import DatasetError, Problems
from ..parallel import process_map
from .checks import inside

FLAC_MAGIC = b"fLaC"
MIDI_MAGIC = b"MThd"
TAIL_FRAMES = 64  # decoded at the end of each FLAC: reaching them proves the file is whole
DEEP_BLOCK_FRAMES = 1 << 16  # frames decoded at a time by deep checks (~0.8 MB of int32 stereo)


# What a FLAC's header announces, named as in the metadata (all 0 for MIDI or a failure).
STREAM_FIELDS = ("sample_rate", "channels", "num_frames")
Stream = tuple[int, int, int]
NO_STREAM: Stream = (0, 0, 0)


class Facts:
    """What one `lstat` said about each path checked, in the order given (0 for a path that
    failed or was skipped): pack compares sizes and mtimes to notice changes. For FLAC files
    also what the header announces (0 for MIDI)."""

    def __init__(self) -> None:
        self._sizes = array.array("q")
        self._mtimes = array.array("q")
        self._stream = {name: array.array("q") for name in STREAM_FIELDS}

    def append(self, size: int, mtime_ns: int, stream: Stream) -> None:
        self._sizes.append(size)
        self._mtimes.append(mtime_ns)
        for values, value in zip(self._stream.values(), stream):
            values.append(value)

    def stream(self, name: str) -> pa.Array:
        """`name` (one of `STREAM_FIELDS`) of every path."""
        return int_array(self._stream[name])

    @property
    def sizes(self) -> pa.Array:
        return int_array(self._sizes)

    @property
    def mtimes(self) -> pa.Array:
        return int_array(self._mtimes)


@dataclass
class MediaReport:
    """The facts of the audio and MIDI paths checked, and the problems found."""

    audio: Facts = field(default_factory=Facts)
    midi: Facts = field(default_factory=Facts)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, item: str) -> None:
        self.problems.setdefault(kind, []).append(item)


# kind → (what is wrong, the fix); the order is the order problems are listed in.
PROBLEMS: dict[str, tuple[str, str]] = {
    "path": ("media paths outside the dataset folder (empty, absolute or with '..')",
             "audio_path and midi_path must be relative to the dataset folder, with '/'"),
    "outside": ("media files that resolve outside the dataset folder (symlinks)",
                "copy these files into the dataset folder instead of linking to them"),
    "missing audio": ("audio files that do not exist",
                      "restore these files, or remove their rows from labels/samples.parquet"),
    "missing midi": ("MIDI files that do not exist",
                     "restore these files, or regenerate their augmentation groups"),
    "special": ("media paths that are not regular files (FIFO, folder, device)",
                "replace them with the real files"),
    "unreadable": ("media files that cannot be read",
                   "the generator writes files with mode 0600: run as their owner, or make "
                   "them readable (chmod -R u+rX,g+rX DATASET)"),
    "not flac": ("audio files that are not FLAC",
                 "these files are damaged or another format; regenerate or restore them"),
    "incomplete": ("FLAC files that are incomplete or damaged",
                   "these files were cut or corrupted (an interrupted copy?); restore them"),
    "not midi": ("MIDI files that are not MIDI",
                 "these files are damaged; regenerate their augmentation groups"),
}


# (size, mtime_ns, problem kind or "", the line naming the problem, the FLAC's stream facts)
Checked = tuple[int, int, str, str, Stream]
PROBE_BATCH = 256  # files per worker task: few futures, still an even spread over workers
# Paths made Python strings and handed out at a time (64 tasks): a window's tasks are all
# submitted at once, so this bounds them; workers wait only at the end of a window (~1.5%).
PROBE_WINDOW = 64 * PROBE_BATCH


def probe_media(
    root: str, audio: pa.Array | pa.ChunkedArray, midi: pa.Array | pa.ChunkedArray, *,
    deep: bool = False, progress: Callable[[int], None] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> MediaReport:
    """Check each path given, as often as it is listed (a problem is reported once); a null
    MIDI path is skipped (`checks.group_midi` reports it). `progress(n)` after every n files
    checked.

    `meanwhile()` runs in this thread while the worker processes check the files (a helper
    thread hands them out, and calls `progress`): `read_dataset` checks the stroke and measure
    tables then, which at full scale take about as long as the media. If it raises, the check
    stops after the batches in progress.
    """
    probe = _Probe(root, deep)
    report = MediaReport()
    died = DatasetError(f"a process checking the media files of {root} died (killed, out of "
                        "memory, or libsndfile crashed on a damaged file); run `sousa-wds "
                        "check` again")
    workers = min(os.cpu_count() or 1, -(-(len(audio) + len(midi)) // PROBE_BATCH))
    stop = threading.Event()

    def check_all(run_all: Callable[..., Iterable]) -> None:
        for paths, is_audio, facts in ((audio, True, report.audio), (midi, False, report.midi)):
            for start in range(0, len(paths), PROBE_WINDOW):
                window = paths[start:start + PROBE_WINDOW].to_pylist()
                batches = [[(rel, is_audio) for rel in window[i:i + PROBE_BATCH]]
                           for i in range(0, len(window), PROBE_BATCH)]
                for batch, results in zip(batches, run_all(probe.check_all, batches)):
                    if stop.is_set():
                        return
                    for size, mtime_ns, kind, item, stream in results:
                        facts.append(size, mtime_ns, stream)
                        if kind:
                            report.add(kind, item)
                    if progress is not None:
                        progress(len(batch))

    with process_map(workers, died) as run_all:
        if meanwhile is None:
            check_all(run_all)
            return report
        with ThreadPoolExecutor(1, thread_name_prefix="media-check") as helper:
            try:
                checked = helper.submit(check_all, run_all)
                meanwhile()
                checked.result()  # a worker's death surfaces here, inside process_map: `died`
            except BaseException:
                stop.set()
                raise
    return report


def report_problems(report: MediaReport, problems: Problems) -> None:
    for kind, (what, fix) in PROBLEMS.items():
        problems.add(what, sorted(set(report.problems.get(kind, []))), fix)


class _Probe:
    """Checks one path at a time; folders are resolved once each."""

    def __init__(self, root: str, deep: bool) -> None:
        self.root = root
        self.root_real = os.path.realpath(root)
        self.deep = deep
        self._folders: dict[str, bool] = {}

    def check_all(self, tasks: list[tuple[str | None, bool]]) -> list[Checked]:
        return [self.check(rel, is_audio) if rel is not None or is_audio
                else (0, 0, "", "", NO_STREAM) for rel, is_audio in tasks]

    def check(self, rel: str | None, is_audio: bool) -> Checked:
        """The file's size, mtime and stream facts, or zeros with the problem kind and the line
        naming it."""
        parts = PurePosixPath(rel or "").parts
        if not rel or rel.startswith("/") or ".." in parts or "\0" in rel:
            return 0, 0, "path", repr(rel), NO_STREAM
        path = os.path.join(self.root, *parts)
        if not self._inside(os.path.dirname(path)):
            return 0, 0, "outside", f"{path} -> {os.path.realpath(path)}", NO_STREAM
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                if not inside(self.root_real, real := os.path.realpath(path)):
                    return 0, 0, "outside", f"{path} -> {real}", NO_STREAM
                info = os.stat(path)
        except OSError:
            return 0, 0, "missing audio" if is_audio else "missing midi", path, NO_STREAM
        if not stat.S_ISREG(info.st_mode):
            return 0, 0, "special", path, NO_STREAM
        kind, why, stream = self._content(path, is_audio)
        if kind:
            return 0, 0, kind, f"{path}: {why}", NO_STREAM
        return info.st_size, info.st_mtime_ns, "", "", stream

    def _inside(self, folder: str) -> bool:
        if folder not in self._folders:
            self._folders[folder] = inside(self.root_real, os.path.realpath(folder))
        return self._folders[folder]

    def _content(self, path: str, is_audio: bool) -> tuple[str, str, Stream]:
        magic = FLAC_MAGIC if is_audio else MIDI_MAGIC
        try:
            with open(path, "rb") as fh:
                head = fh.read(len(magic))
        except OSError as exc:
            return "unreadable", exc.strerror or str(exc), NO_STREAM
        if head != magic:
            return ("not flac" if is_audio else "not midi"), f"starts with {head!r}", NO_STREAM
        if is_audio:
            why, stream = flac_check(path, deep=self.deep)
            return ("incomplete" if why else ""), why or "", stream
        return "", "", NO_STREAM


def flac_check(path: str, *, deep: bool = False) -> tuple[str | None, Stream]:
    """Why the FLAC at `path` is not whole (None: its last frames, or all when deep, decode),
    and the sample rate, channels and frames its header announces."""
    try:
        audio = soundfile.SoundFile(path)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        return f"cannot be opened as FLAC ({exc})", NO_STREAM
    with audio:
        frames = audio.frames
        stream = (audio.samplerate, audio.channels, frames)
        try:
            if deep:
                decoded = sum(len(b) for b in audio.blocks(DEEP_BLOCK_FRAMES, dtype="int32"))
            else:
                start = max(0, frames - TAIL_FRAMES)
                audio.seek(start)
                decoded = start + len(audio.read(TAIL_FRAMES, dtype="int32"))
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            what = "some frames" if deep else "the last frames"
            return (f"the header announces {frames} frames but {what} do not decode ({exc})",
                    NO_STREAM)
    if decoded != frames:
        return f"decodes {decoded} of the {frames} frames its header announces", NO_STREAM
    return None, stream
