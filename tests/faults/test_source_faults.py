"""Issue 9 faults on the source side: damaged or hostile input is refused with a named error
that lists the file, before OUT exists, and never hangs or ends in a traceback."""

from __future__ import annotations

import functools
import os
import re
import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sousa_wds.cli import main
from sousa_wds.errors import DatasetError
from sousa_wds.source import read_dataset

FIFO_WAIT_SECONDS = 60  # only reached when the reader blocks; then the test unblocks and fails


def _error(root: Path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        read_dataset(root, **kwargs)
    return str(info.value)


def _audio(root: Path, n: int = 0) -> Path:
    return sorted((root / "audio").rglob("*.flac"))[n]


def _cut(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


# --- 9.3 damaged FLAC --------------------------------------------------------------------------

@pytest.mark.parametrize("keep", ["half", "all but 3 bytes"])
def test_truncated_flac_is_found_by_check(dataset_copy: Path, keep: str) -> None:
    flac = _audio(dataset_copy, 3)
    size = flac.stat().st_size
    _cut(flac, size // 2 if keep == "half" else size - 3)
    message = _error(dataset_copy)
    assert "FLAC files that are incomplete or damaged (1)" in message
    assert str(flac) in message


def test_damage_inside_a_flac_is_found_by_check_deep(
    dataset_copy: Path, capsys: pytest.CaptureFixture
) -> None:
    flac = _audio(dataset_copy, 5)
    size = flac.stat().st_size
    with open(flac, "r+b") as fh:  # the header and the last frames stay intact
        fh.seek(size // 2)
        fh.write(b"\0" * 4000)
    read_dataset(dataset_copy)  # the default check reads only the file's end
    message = _error(dataset_copy, deep=True)
    assert "FLAC files that are incomplete or damaged (1)" in message and str(flac) in message
    assert main(["check", "--deep", str(dataset_copy)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sousa-wds check: error:") and str(flac) in err


def test_flac_cut_to_10_bytes_is_named_before_out_exists(
    dataset_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    flac = _audio(dataset_copy, 1)
    _cut(flac, 10)
    out = tmp_path / "out"
    assert main(["pack", str(dataset_copy), str(out), "--workers", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert str(flac) in err and "incomplete or damaged" in err
    assert "BytesIO" not in err
    assert not out.exists()


# --- 9.8 inputs that used to hang or raise a traceback -----------------------------------------

def test_fifo_audio_path_is_refused_without_blocking(dataset_copy: Path) -> None:
    fifo = _audio(dataset_copy, 2)
    fifo.unlink()
    os.mkfifo(fifo)
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            read_dataset(dataset_copy)
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(FIFO_WAIT_SECONDS)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the blocked open return
        worker.join()
        pytest.fail("read_dataset blocked opening a FIFO")
    assert isinstance(outcome.get("error"), DatasetError)
    message = str(outcome["error"])
    assert "not regular files (FIFO, folder, device) (1)" in message and str(fifo) in message


@pytest.mark.parametrize("bad", [{"id": 1}, ["nested"], 7, None])
def test_splits_json_with_non_string_ids(dataset_copy: Path, bad: object) -> None:
    import json

    path = dataset_copy / "splits.json"
    splits = json.loads(path.read_text())
    splits["val_profile_ids"].append(bad)
    path.write_text(json.dumps(splits))
    message = _error(dataset_copy)
    assert f"profile ids that are not strings in {path}" in message
    assert f"val_profile_ids[{len(splits['val_profile_ids']) - 1}]: {bad!r}" in message


def test_deeply_nested_splits_json(dataset_copy: Path) -> None:
    (dataset_copy / "splits.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "unreadable" in _error(dataset_copy)


@pytest.mark.parametrize("table", ["strokes", "measures"])
def test_corrupt_data_page_is_found_by_check(dataset_copy: Path, table: str) -> None:
    path = dataset_copy / "labels" / f"{table}.parquet"
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(j).name for j in range(meta.num_columns)]
    column = meta.row_group(0).column(names.index("timing_std_ms" if table == "measures"
                                                  else "actual_time_ms"))
    with open(path, "r+b") as fh:  # a page of a column the old check never read
        fh.seek(column.data_page_offset)
        fh.write(b"\xff" * 24)
    message = _error(dataset_copy)
    assert f"damaged or invalid rows in {path}" in message


def test_non_utf8_dataset_path_is_a_named_error(
    dataset_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    odd = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    shutil.copytree(dataset_copy, odd)
    out = tmp_path / "out"
    assert main(["check", odd]) == 1
    err = capsys.readouterr().err
    assert "the dataset path is not valid UTF-8" in err and "caf\\xe9" in err
    assert main(["pack", odd, str(out), "--workers", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sousa-wds pack: error:") and "UTF-8" in err
    assert not out.exists()


def test_nul_in_a_media_path_is_named(dataset_copy: Path) -> None:
    from tests.test_source import _labels, _set_column

    paths = _labels(dataset_copy, "samples").column("audio_path").to_pylist()
    paths[4] = "audio/x\x00.flac"
    _set_column(dataset_copy, "samples", "audio_path", paths)
    assert "'audio/x\\x00.flac'" in _error(dataset_copy)


# --- 9.9 links that leave the dataset folder --------------------------------------------------

def test_file_symlink_leaving_the_dataset_is_refused(dataset_copy: Path, tmp_path: Path) -> None:
    flac = _audio(dataset_copy, 0)
    outside = tmp_path / "elsewhere.flac"
    shutil.move(flac, outside)
    flac.symlink_to(outside)
    message = _error(dataset_copy)
    assert "resolve outside the dataset folder (symlinks) (1)" in message
    assert f"{flac} -> {outside}" in message


def test_folder_symlink_leaving_the_dataset_is_refused(dataset_copy: Path, tmp_path: Path) -> None:
    folder = _audio(dataset_copy, 0).parent
    outside = tmp_path / "elsewhere"
    shutil.move(folder, outside)
    folder.symlink_to(outside, target_is_directory=True)
    message = _error(dataset_copy)
    assert "resolve outside the dataset folder (symlinks)" in message
    assert str(outside) in message


def test_label_file_symlink_leaving_the_dataset_is_refused(
    dataset_copy: Path, tmp_path: Path
) -> None:
    labels = dataset_copy / "labels" / "strokes.parquet"
    outside = tmp_path / "strokes.parquet"
    shutil.move(labels, outside)
    labels.symlink_to(outside)
    message = _error(dataset_copy)
    assert f"{labels} -> {outside}" in message


def test_symlinks_inside_the_dataset_are_accepted(dataset_copy: Path, tmp_path: Path) -> None:
    flac = _audio(dataset_copy, 0)
    kept = dataset_copy / "store" / flac.name
    kept.parent.mkdir()
    shutil.move(flac, kept)
    flac.symlink_to(kept)
    link = tmp_path / "link-to-dataset"  # the dataset itself reached through a link
    link.symlink_to(dataset_copy, target_is_directory=True)
    sample = next(s for s in read_dataset(link).samples if s.audio_path.endswith(flac.name))
    assert sample.audio_bytes == kept.stat().st_size


def test_unreadable_media_file_is_named(dataset_copy: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root here, which reads files of any mode: the refusal is simulated.
    from sousa_wds.source import media

    flac = _audio(dataset_copy, 6)

    def refuse(path, *args, **kwargs):
        if str(path) == str(flac):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(media, "open", refuse, raising=False)
    message = _error(dataset_copy)
    assert "media files that cannot be read (1)" in message
    assert f"{flac}: Permission denied" in message


def test_media_problems_are_the_same_whatever_the_worker_count(
        dataset_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 3 files over a process per core name the same files, in the same order, as
    one process checking them all."""
    from sousa_wds.source import media

    _cut(_audio(dataset_copy, 3), 100)
    _cut(_audio(dataset_copy, 17), 10)
    sorted((dataset_copy / "midi").rglob("*.mid"))[2].unlink()
    monkeypatch.setattr(media, "PROBE_BATCH", 3)
    monkeypatch.setattr(media.os, "cpu_count", lambda: 1)
    alone = _error(dataset_copy)
    monkeypatch.setattr(media.os, "cpu_count", lambda: 2)
    forked: list[int] = []
    real = media.process_map

    def counted(workers: int, died: DatasetError):
        forked.append(workers)
        return real(workers, died)

    monkeypatch.setattr(media, "process_map", counted)
    assert _error(dataset_copy) == alone
    assert forked == [2]
    assert "FLAC files that are incomplete or damaged (2)" in alone
    assert "MIDI files that do not exist (1)" in alone


def test_a_media_check_process_that_dies_is_a_named_error(
        dataset_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed mid-check (OOM killer, a libsndfile crash on a hostile FLAC) is one
    DatasetError naming the folder, not a BrokenProcessPool traceback."""
    from sousa_wds.source import media

    parent = os.getpid()
    real = media._Probe.check_all

    @functools.wraps(real)  # workers unpickle the method by its name
    def die_in_worker(self, tasks):
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        return real(self, tasks)

    monkeypatch.setattr(media, "PROBE_BATCH", 3)
    monkeypatch.setattr(media.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(media._Probe, "check_all", die_in_worker)
    with pytest.raises(DatasetError,
                       match=re.escape(f"checking the media files of {dataset_copy} died")):
        read_dataset(dataset_copy)
    assert main(["check", str(dataset_copy)]) == 1


@pytest.mark.parametrize("cpus", [1, 2])
def test_ctrl_c_while_label_rows_are_checked_stops_the_media_check(
        dataset_copy: Path, monkeypatch: pytest.MonkeyPatch, cpus: int) -> None:
    """The stroke and measure tables are checked while the media are: a Ctrl-C there stops
    the media check after the batches in progress instead of waiting for every file."""
    import time

    from sousa_wds.source import checks, media

    real = media._Probe.check_all

    @functools.wraps(real)  # workers unpickle the method by its name
    def slow(self, tasks):
        time.sleep(0.05)
        return real(self, tasks)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(media, "PROBE_BATCH", 1)
    monkeypatch.setattr(media.os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(media._Probe, "check_all", slow)
    monkeypatch.setattr(checks, "label_rows", interrupted)
    files = len(list((dataset_copy / "audio").rglob("*.flac")))
    checked: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        read_dataset(dataset_copy, progress=checked.append)
    assert len(checked) < files // 4  # without the stop: every file (48 with the MIDI)


def test_an_interrupted_process_map_ends_its_workers_without_waiting_for_them() -> None:
    """Ctrl-C inside `process_map` ends the (read-only) workers at once: a graceful shutdown
    would wait for their running tasks, and a second Ctrl-C during it could leave them blocked
    forever, hanging the interpreter's exit."""
    import multiprocessing
    import time

    from sousa_wds.parallel import process_map

    before = set(multiprocessing.active_children())
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), process_map(2, DatasetError("died")) as run_all:
        run_all(time.sleep, [90, 90])  # both workers busy for a minute and a half
        workers = [p for p in multiprocessing.active_children() if p not in before]
        raise KeyboardInterrupt
    assert len(workers) == 2
    assert not any(p.is_alive() for p in workers)
    assert time.monotonic() - started < 60
