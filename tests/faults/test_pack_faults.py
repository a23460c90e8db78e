"""Pack under faults (issue 9): nothing of the source deleted, changes and full disks named,
Ctrl-C stops cleanly and resumes byte-identical, one pack per OUT at a time."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sousa_wds.errors import PackError
from sousa_wds.format import MANIFEST
from sousa_wds.pack import pack


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _metadata(out: Path) -> list[dict]:
    return [row for split in ("train", "validation", "test")
            for row in pq.read_table(out / f"metadata/{split}.parquet").to_pylist()]


# --- 9.1: --overwrite never deletes the source or files pack did not write -------------------

@pytest.mark.parametrize("spelling", ["symlink", "dotdot", "parent"])
def test_overwrite_never_reaches_the_source(dataset_copy: Path, tmp_path: Path,
                                            spelling: str) -> None:
    if spelling == "symlink":
        out = tmp_path / "link"
        out.symlink_to(dataset_copy, target_is_directory=True)
    elif spelling == "dotdot":  # no text prefix of DATASET: a check on spelling misses it
        (tmp_path / "sibling").mkdir()
        out = tmp_path / "sibling" / ".." / dataset_copy.name
    else:  # OUT holds the dataset
        out = dataset_copy.parent
    before = _tree(dataset_copy)
    with pytest.raises(PackError, match="overlap"):
        pack(dataset_copy, out, overwrite=True)
    assert _tree(dataset_copy) == before


def test_overwrite_refuses_a_folder_that_never_held_a_pack(
    example_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "data" / "thesis.csv").write_text("1,2,3")
    (out / "README.md").write_text("my notes")
    before = _tree(out)
    with pytest.raises(PackError, match=r"(?s)holds no sousa-wds pack.*README\.md.*data"):
        pack(example_dataset, out, overwrite=True)
    assert _tree(out) == before


# --- 9.3: a source file that changes while packing ---------------------------------------

def _after_the_check(dataset: Path, monkeypatch: pytest.MonkeyPatch,
                     change: Callable[[Path], None]) -> Path:
    """`change` applied to the dataset's first FLAC once pack has checked and planned it."""
    from sousa_wds.pack import run

    victim = sorted((dataset / "audio").rglob("*.flac"))[0]
    real_plan = run.plan_shards

    def plan_then_change(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        change(victim)
        return plan

    monkeypatch.setattr(run, "plan_shards", plan_then_change)
    return victim


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1000])


def _rewrite_same_size(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes: only the mtime tells
    path.write_bytes(bytes(data))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_a_flac_cut_after_the_check_is_named(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = _after_the_check(dataset_copy, monkeypatch, _cut)
    out = tmp_path / "out"
    with pytest.raises(PackError, match=rf"{victim.name} changed while packing"):
        pack(dataset_copy, out, max_samples_per_shard=4, workers=1)
    assert not (out / MANIFEST).exists() and not list(out.rglob("*.partial"))


def test_a_flac_rewritten_with_the_same_size_after_the_check_is_named(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = _after_the_check(dataset_copy, monkeypatch, _rewrite_same_size)
    with pytest.raises(PackError, match=rf"{victim.name} changed while packing"):
        pack(dataset_copy, tmp_path / "out", workers=1)


def test_a_flac_swapped_for_a_fifo_after_the_check_is_named(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the shard writer's open() of the FIFO blocked forever (nothing writes to it)."""
    victim = _after_the_check(dataset_copy, monkeypatch, _fifo)
    with pytest.raises(PackError, match=rf"{victim.name} changed while packing: it is no "
                       "longer a regular file"):
        pack(dataset_copy, tmp_path / "out", workers=1)
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_a_flac_growing_while_read_is_named(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sousa_wds.pack import tar

    victim = sorted((dataset_copy / "audio").rglob("*.flac"))[0]

    class Appending:
        """The file as a generator still writing it: it grows while we read."""

        def __init__(self, path, mode, **options):
            self._fh = open(path, mode, **options)  # noqa: SIM115
            self._path = Path(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._fh.close()

        def __getattr__(self, name):
            return getattr(self._fh, name)

        def _grow(self):
            if self._path.name == victim.name:
                with open(self._path, "ab") as grow:
                    grow.write(b"\0" * 100)

        def readall(self):
            data = self._fh.readall()
            self._grow()
            return data

        def readinto(self, buffer):
            count = self._fh.readinto(buffer)
            self._grow()
            return count

    monkeypatch.setattr(tar, "open", Appending, raising=False)
    with pytest.raises(PackError, match=rf"{victim.name} changed while packing"):
        pack(dataset_copy, tmp_path / "out", workers=1)


# --- 9.4: Ctrl-C during a parallel pack --------------------------------------------------------

def test_ctrl_c_stops_workers_cleanly_and_resume_is_byte_identical(
    example_dataset: Path, tmp_path: Path
) -> None:
    reference, out = tmp_path / "ref", tmp_path / "out"
    pack(example_dataset, reference, max_samples_per_shard=1, workers=1)
    returncode, err = _pack_interrupted(example_dataset, out)
    assert returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "--resume" in err, err
    assert not list(out.rglob("*.partial")) and not (out / MANIFEST).exists()
    summary = pack(example_dataset, out, max_samples_per_shard=1, workers=2, resume=True)
    assert summary.reused_shards >= 1
    assert _tree(out) == _tree(reference)


def _pack_interrupted(dataset: Path, out: Path) -> tuple[int, str]:
    """Run `sousa-wds pack` and Ctrl-C it once its first shard is recorded."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sousa_wds.cli", "pack", str(dataset), str(out),
         "--max-samples-per-shard", "1", "--workers", "2", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # Ctrl-C as a terminal's job gets it: a test run started in the background (`cmd &`
        # in a script) ignores SIGINT, children inherit that, and Python then never raises
        # KeyboardInterrupt (the pack ran on to exit 0).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not list((out / ".sousa-wds-pack" / "shards").glob("*.json")):
        assert proc.poll() is None, "pack finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    # Frozen first, so a loaded machine cannot let the pack finish before the Ctrl-C lands.
    os.killpg(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None and not (out / MANIFEST).exists()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: parent and workers get SIGINT
    os.killpg(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)  # a hang fails here
    return proc.returncode, err


def test_a_worker_killed_mid_pack_is_named_and_resumable(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sousa_wds.pack import pool

    real = pool.write_shard

    def killed_on_the_third(task, *args, **kwargs):
        if task.name.endswith("-00002.tar"):
            os.kill(os.getpid(), signal.SIGKILL)  # the OOM killer, or a user's kill -9
        return real(task, *args, **kwargs)

    monkeypatch.setattr(pool, "write_shard", killed_on_the_third)  # forked workers inherit it
    out = tmp_path / "out"
    with pytest.raises(PackError, match="worker process died"):
        pack(example_dataset, out, max_samples_per_shard=2, workers=2)
    monkeypatch.undo()
    pack(example_dataset, out, max_samples_per_shard=2, workers=2, resume=True)
    assert (out / MANIFEST).is_file()


# --- 9.8: named errors ---------------------------------------------------------------------

def test_strokes_changed_during_pack_is_named(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sousa_wds.pack import run

    strokes = dataset_copy / "labels" / "strokes.parquet"
    real = run.write_metadata

    def metadata_then_regenerate(*args, **kwargs):
        real(*args, **kwargs)
        table = pq.read_table(strokes)
        extra = table.slice(0, 1).set_column(
            table.column_names.index("sample_id"), "sample_id", pa.array(["new_sample"]))
        pq.write_table(pa.concat_tables([table, extra.cast(table.schema)]), strokes)

    monkeypatch.setattr(run, "write_metadata", metadata_then_regenerate)
    with pytest.raises(PackError, match=r"strokes\.parquet .*changed"):
        pack(dataset_copy, tmp_path / "out", workers=1)
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_label_file_rewritten_with_the_same_rows_is_named(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sousa_wds.pack import run

    measures = dataset_copy / "labels" / "measures.parquet"
    real = run.write_metadata

    def metadata_then_rewrite(*args, **kwargs):
        real(*args, **kwargs)
        table = pq.read_table(measures)
        pq.write_table(table.slice(1), measures)  # a regenerated file: one row fewer

    monkeypatch.setattr(run, "write_metadata", metadata_then_rewrite)
    with pytest.raises(PackError, match=r"measures\.parquet changed while packing"):
        pack(dataset_copy, tmp_path / "out", workers=1)


def test_shard_record_cut_short_before_the_metadata_is_named(
    dataset_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Metadata rows are read from the records a block at a time: a record that lost rows
    (edited, or a copy cut short) stops the pack by name, not with Arrow's length error."""
    from sousa_wds.pack import run

    real = run.write_metadata

    def cut_then_metadata(dataset, out, parts):
        record = sorted((out / ".sousa-wds-pack" / "shards").glob("*.json"))[0]
        lines = record.read_bytes().splitlines(keepends=True)
        record.write_bytes(b"".join(lines[:-1]))
        real(dataset, out, parts)

    monkeypatch.setattr(run, "write_metadata", cut_then_metadata)
    with pytest.raises(PackError, match=r"record of shard \S+ .* has \d+ rows for \d+ samples"):
        pack(dataset_copy, tmp_path / "out", workers=1)
    assert not (tmp_path / "out" / MANIFEST).exists()


class _FullDisk:
    """A file on a disk that fills up after `room` bytes."""

    def __init__(self, path, mode, room: int = 300_000, **options):
        self._fh = open(path, mode, **options)  # noqa: SIM115
        self._room = room

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def write(self, data) -> int:
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def test_full_disk_while_writing_a_shard_names_it(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sousa_wds.pack import tar

    monkeypatch.setattr(tar, "open", _FullDisk, raising=False)
    out = tmp_path / "out"
    with pytest.raises(PackError, match=r"cannot write .*data/\S+\.tar: No space left"):
        pack(example_dataset, out, workers=1)
    assert not list(out.rglob("*.partial")) and not list(out.rglob("*.tar"))


def test_full_disk_while_writing_metadata_names_it(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sousa_wds.pack import tables

    class Full(pq.ParquetWriter):
        """The real writer (the file is created, its header written), then a full disk."""

        def write_table(self, table, row_group_size=None):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tables.pq, "ParquetWriter", Full)
    out = tmp_path / "out"
    with pytest.raises(OSError, match=r"No space left on device: .*metadata/train\.parquet"):
        pack(example_dataset, out, workers=1)
    assert not (out / "metadata").exists() or not list((out / "metadata").iterdir())


def test_infinite_scores_are_null_in_json_and_metadata(dataset_copy: Path,
                                                       tmp_path: Path) -> None:
    path = dataset_copy / "labels" / "exercises.parquet"
    table = pq.read_table(path)
    scores = table.column("overall_score").to_pylist()
    scores[0], scores[1] = float("inf"), float("-inf")
    i = table.column_names.index("overall_score")
    pq.write_table(table.set_column(i, "overall_score", pa.array(scores, pa.float64())), path)
    victims = set(table.column("sample_id").to_pylist()[:2])
    out = tmp_path / "out"
    pack(dataset_copy, out, workers=1)
    rows = [r for r in _metadata(out) if r["key"] in victims]
    assert len(rows) == 2
    for row in rows:
        with open(out / row["shard_path"], "rb") as fh:
            fh.seek(row["json_offset"])
            record = json.loads(fh.read(row["json_size"]))
        assert record["overall_score"] is None
        assert row["overall_score"] is None


def test_non_utf8_out_path_is_named_before_anything_is_written(
    example_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / os.fsdecode(b"out-\xff")
    with pytest.raises(PackError, match="not a valid UTF-8 path"):
        pack(example_dataset, out)
    assert not out.exists()


# --- 9.9: one pack per OUT; long keys in the loose layout -----------------------------------

def test_a_second_pack_into_the_same_out_is_refused(example_dataset: Path,
                                                     tmp_path: Path) -> None:
    from sousa_wds.pack.state import out_lock

    out = tmp_path / "out"
    with out_lock(out):  # a first pack is running
        with pytest.raises(PackError, match="another sousa-wds pack is writing into"):
            pack(example_dataset, out, resume=True)
        assert [p.name for p in out.iterdir()] == [".sousa-wds-pack.lock"]
    pack(example_dataset, out)  # once it is gone, OUT is free
    assert (out / MANIFEST).is_file() and not (out / ".sousa-wds-pack.lock").exists()


def test_loose_files_with_long_keys_have_short_enough_temp_names(tmp_path: Path) -> None:
    from sousa_wds.pack.loose import place

    final = tmp_path / "audio" / "train" / f"{'k' * 245}.flac"
    final.parent.mkdir(parents=True)
    place(final, b"fLaC data")
    assert final.read_bytes() == b"fLaC data"
    assert os.listdir(final.parent) == [final.name]


def test_a_worker_killed_holding_a_shared_lock_does_not_hang_the_parent(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies holding a lock it shares with the parent never releases it; the
    parent must still name the death instead of waiting forever."""
    from sousa_wds.pack import pool

    real = pool.write_shard

    def killed_holding_the_progress_lock(task, *args, **kwargs):
        if task.name.endswith("-00002.tar"):
            pool._worker[0].get_lock().acquire()  # the samples counter's lock, never released
            os.kill(os.getpid(), signal.SIGKILL)
        return real(task, *args, **kwargs)

    monkeypatch.setattr(pool, "write_shard", killed_holding_the_progress_lock)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pack(example_dataset, tmp_path / "out", max_samples_per_shard=2, workers=2)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "pack hung on a lock its killed worker held"
    assert len(errors) == 1 and isinstance(errors[0], PackError), errors
    assert "worker process died" in str(errors[0])
