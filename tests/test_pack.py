"""Pack: byte-identical output, exact sample placement, offsets, resume, bad input, layouts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from sousa_wds.cli import main
from sousa_wds.errors import DatasetError, PackError, ResumeMismatch
from sousa_wds.format import LABEL_COLUMNS, MANIFEST, METADATA_SCHEMA, SPLITS, encode_record
from sousa_wds.io import parse_size
from sousa_wds.pack import STATE_DIR, PackState, loose, pack, plan_shards
from sousa_wds.pack.state import LOCK_FILE, StateDir
from sousa_wds.pack.tar import ShardResult, source_stamp
from sousa_wds.source import read_dataset
from sousa_wds.verification import verify

from .conftest import SHARD_SIZE


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _metadata(out: Path) -> list[dict]:
    return [row for split in SPLITS
            for row in pq.read_table(out / f"metadata/{split}.parquet").to_pylist()]


def _member(out: Path, row: dict, ext: str) -> bytes:
    with open(out / row["shard_path"], "rb") as fh:
        fh.seek(row[f"{ext}_offset"])
        return fh.read(row[f"{ext}_size"])


def _sources(dataset: Path) -> dict[str, tuple[bytes, bytes, dict]]:
    """key → (flac bytes, midi bytes, label record) straight from the source folder."""
    ds = read_dataset(dataset)
    records = ds.label_rows(ds.samples).to_pylist()
    return {s.key: ((dataset / s.audio_path).read_bytes(), (dataset / s.midi_path).read_bytes(),
                    rec) for s, rec in zip(ds.samples, records)}


# --- determinism -----------------------------------------------------------------------------

def test_output_is_byte_identical_across_runs_and_worker_counts(
    example_dataset: Path, packed: Path, tmp_path: Path
) -> None:
    pack(example_dataset, tmp_path / "w2", shard_size=SHARD_SIZE, workers=2, progress=False)
    pack(example_dataset, tmp_path / "w1", shard_size=SHARD_SIZE, workers=1, progress=False)
    reference = _tree(packed)
    assert len([p for p in reference if p.startswith("data/")]) >= 5
    assert _tree(tmp_path / "w2") == reference
    assert _tree(tmp_path / "w1") == reference


@pytest.mark.parametrize("workers", [1, 2])
def test_shards_synced_and_dropped_from_the_cache_as_they_go_are_the_same_bytes(
    example_dataset: Path, packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    """Every SYNC_EVERY bytes the writer thread syncs the shard and drops that range from the
    page cache: with 64 KiB instead of 128 MB that happens many times in each test shard, and
    the output is the reference's to the byte (only the bytes are checked: whether pages were
    dropped depends on the file system, tmpfs keeps them)."""
    from sousa_wds.pack import tar

    synced: list[int] = []
    real = tar._HashingWriter._sync_and_drop

    def counted(self, start: int, end: int) -> None:
        synced.append(end - start)
        real(self, start, end)

    monkeypatch.setattr(tar._HashingWriter, "SYNC_EVERY", 64 << 10)
    monkeypatch.setattr(tar._HashingWriter, "_sync_and_drop", counted)
    pack(example_dataset, tmp_path / "out", shard_size=SHARD_SIZE, workers=workers,
         progress=False)
    assert _tree(tmp_path / "out") == _tree(packed)
    if workers == 1:  # the workers' calls are in their own processes
        assert len(synced) > 2 * len([p for p in _tree(packed) if p.startswith("data/")])


def test_an_interrupted_shard_is_not_synced_before_it_is_removed(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard left by Ctrl-C (or a changed source file) is deleted: syncing its last up to
    128 MB first would only make the stop wait."""
    from sousa_wds.errors import PackInterrupted
    from sousa_wds.pack import tar

    dataset = read_dataset(example_dataset)
    shard = plan_shards(dataset.samples, shard_size=10**12).shards[0]  # a split's samples
    task = tar.ShardTask(split=shard.split, name=shard.name, path=shard.path,
                         positions=shard.positions, source_root=str(dataset.root),
                         out_root=str(tmp_path))
    synced: list[int] = []
    monkeypatch.setattr(tar, "_datasync", synced.append)
    calls = iter([False, True])
    with pytest.raises(PackInterrupted):
        tar.write_shard(task, stop=lambda: next(calls, True), labels=dataset.labels,
                        samples=dataset.samples)
    assert synced == [] and not any(tmp_path.rglob("*.tar*"))
    tar.write_shard(task, labels=dataset.labels, samples=dataset.samples)
    assert len(synced) == 1  # the finished shard's tail, before its rename


def test_no_timestamps_or_absolute_paths_in_output(packed: Path, example_dataset: Path) -> None:
    for rel, data in _tree(packed).items():
        assert str(example_dataset).encode() not in data, rel
        assert str(packed).encode() not in data, rel
    with tarfile.open(packed / "data/train-00000.tar") as tar:
        for info in tar:
            assert (info.mtime, info.uname, info.gname, info.mode) == (0, "sousa", "sousa", 0o444)
            assert not info.pax_headers


def test_seed_and_order_change_the_shuffle(example_dataset: Path) -> None:
    samples = read_dataset(example_dataset).samples
    keys = lambda plan: [s.key for shard in plan.shards for s in shard.samples]  # noqa: E731
    a = keys(plan_shards(samples, shard_size=SHARD_SIZE, seed=1))
    assert a == keys(plan_shards(samples, shard_size=SHARD_SIZE, seed=1))
    assert a != keys(plan_shards(samples, shard_size=SHARD_SIZE, seed=2))
    ordered = plan_shards(samples, shard_size=SHARD_SIZE, order="sorted")
    for split in SPLITS:
        split_keys = [s.key for shard in ordered.split_shards(split) for s in shard.samples]
        assert split_keys == sorted(split_keys)


def test_shard_size_and_max_samples(example_dataset: Path) -> None:
    samples = read_dataset(example_dataset).samples
    plan = plan_shards(samples, shard_size=10**12, max_samples_per_shard=3)
    assert all(len(s.samples) <= 3 for s in plan.shards)
    assert plan.num_samples == len(samples)
    plan = plan_shards(samples, shard_size=1)  # every sample overshoots: one per shard
    assert len(plan.shards) == len(samples)


@pytest.mark.parametrize("text,expected", [("500MB", 500_000_000), ("1GB", 10**9),
                                           ("1.5GiB", int(1.5 * 2**30)), ("4096", 4096)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_rejects_nonsense() -> None:
    with pytest.raises(PackError, match="500MB"):
        parse_size("big")


# --- content ---------------------------------------------------------------------------------

def test_every_sample_once_in_contiguous_groups(packed: Path, example_dataset: Path) -> None:
    seen: list[str] = []
    for shard in sorted((packed / "data").glob("*.tar")):
        with tarfile.open(shard) as tar:
            names = tar.getnames()
        assert len(names) % 3 == 0
        for i in range(0, len(names), 3):
            key = names[i].split(".")[0]
            assert names[i:i + 3] == [f"{key}.flac", f"{key}.json", f"{key}.mid"]
            seen.append(key)
    assert sorted(seen) == sorted(_sources(example_dataset))


def test_offsets_read_back_exact_member_bytes(packed: Path, example_dataset: Path) -> None:
    sources = _sources(example_dataset)
    rows = _metadata(packed)
    assert len(rows) == len(sources)
    for row in rows:
        flac, midi, record = sources[row["key"]]
        with open(packed / row["shard_path"], "rb") as fh:
            def read(ext: str, fh=fh, row=row) -> bytes:
                fh.seek(row[f"{ext}_offset"])
                return fh.read(row[f"{ext}_size"])
            assert read("flac") == flac
            assert read("mid") == midi  # the group's MIDI, shared by its samples
            assert read("json") == encode_record(record)
            for ext in ("flac", "mid", "json"):
                assert row[f"{ext}_sha256"] == hashlib.sha256(read(ext)).hexdigest()
        assert row["shard_path"] == f"data/{row['shard']}" == row["audio_shard"]
        assert row["audio_filename"] == f"{row['key']}.flac"
        info = sf.info(io.BytesIO(flac))
        assert (row["sample_rate"], row["channels"], row["num_frames"]) == (
            info.samplerate, info.channels, info.frames)


def test_json_members_are_strict_sorted_and_complete(packed: Path) -> None:
    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in JSON")

    with tarfile.open(packed / "data/train-00000.tar") as tar:
        for info in tar:
            if info.name.endswith(".json"):
                text = tar.extractfile(info).read().decode()
                record = json.loads(text, parse_constant=no_constants)
                assert list(record) == sorted(LABEL_COLUMNS)
                assert record["aug_bit_depth"] is None  # null-typed in the input
                assert "audio_path" not in record and "midi_path" not in record


def test_metadata_has_one_schema_for_every_split(packed: Path) -> None:
    for split in SPLITS:
        schema = pq.read_schema(packed / f"metadata/{split}.parquet")
        assert schema.remove_metadata() == METADATA_SCHEMA
    for table in ("strokes", "measures"):
        schemas = {pq.read_schema(packed / f"labels/{table}/{s}.parquet") for s in SPLITS}
        assert len(schemas) == 1


def test_label_tables_are_split_by_sample(packed: Path, example_dataset: Path) -> None:
    for table in ("strokes", "measures"):
        source = pq.read_table(example_dataset / f"labels/{table}.parquet",
                               columns=["sample_id", "index"]).to_pylist()
        total = 0
        for split in SPLITS:
            meta = pq.read_table(packed / f"metadata/{split}.parquet")
            keys = set(meta.column("key").to_pylist())
            rows = pq.read_table(packed / f"labels/{table}/{split}.parquet",
                                 columns=["sample_id", "index"]).to_pylist()
            assert rows == [r for r in source if r["sample_id"] in keys]  # source row order
            total += len(rows)
        assert total == len(source)


def test_manifest_and_index_describe_the_folder(packed: Path) -> None:
    manifest = json.loads((packed / MANIFEST).read_text())
    files = {f["path"] for f in manifest["files"]}
    on_disk = {p for p in _tree(packed) if p != MANIFEST}
    assert files == on_disk
    assert sum(s["samples"] for s in manifest["splits"].values()) == 40
    index = json.loads((packed / "index/train.json").read_text())
    for entry in index["shardlist"]:
        shard = (packed / "index" / entry["url"]).resolve()
        assert shard.stat().st_size == entry["filesize"]
    assert not (packed / STATE_DIR).exists()


def test_wids_reads_the_index_in_metadata_order(packed: Path, tmp_path: Path) -> None:
    import wids
    for split in SPLITS:
        ds = wids.ShardListDataset(str(packed / f"index/{split}.json"),
                                   cache_dir=str(tmp_path / split), transformations=[])
        meta = pq.read_table(packed / f"metadata/{split}.parquet").to_pylist()
        assert len(ds) == len(meta) > 0
        for i in (0, len(meta) // 2, len(meta) - 1):
            sample, row = ds[i], meta[i]
            assert sample["__key__"] == row["key"]
            assert sample[".json"].read() == _member(packed, row, "json")


def test_webdataset_reads_every_sample_back(packed: Path, example_dataset: Path) -> None:
    import webdataset as wds

    sources = _sources(example_dataset)
    urls = [str(p) for p in sorted((packed / "data").glob("*.tar"))]
    got = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        got[sample["__key__"]] = (sample["flac"], sample["mid"], json.loads(sample["json"]))
    assert set(got) == set(sources)
    for key, (flac, midi, record) in got.items():
        assert flac == sources[key][0] and midi == sources[key][1]
        assert record == json.loads(encode_record(sources[key][2]))


# --- resume, refusal and bad input ------------------------------------------------------------

def test_resume_after_a_killed_run_is_byte_identical(
    example_dataset: Path, tmp_path: Path
) -> None:
    reference, out = tmp_path / "ref", tmp_path / "out"
    options = ["--max-samples-per-shard", "1", "--workers", "1", "--quiet"]
    pack(example_dataset, reference, max_samples_per_shard=1, workers=1, progress=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sousa_wds.cli", "pack", str(example_dataset), str(out), *options])
    deadline = time.monotonic() + 60
    while len(list((out / STATE_DIR / "shards").glob("*.json"))) < 5:
        assert proc.poll() is None, "pack finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / MANIFEST).exists()
    finished = len(list((out / STATE_DIR / "shards").glob("*.json")))
    summary = pack(example_dataset, out, max_samples_per_shard=1, workers=1, resume=True)
    assert summary.reused_shards >= finished >= 5  # resumed, not packed again
    assert _tree(out) == _tree(reference)


def test_resume_refuses_other_options(example_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    ds = read_dataset(example_dataset)
    other = plan_shards(ds.samples, seed=99).options("shards")
    StateDir(out).start(PackState(ds.fingerprint(), other))
    before = _tree(out)
    with pytest.raises(ResumeMismatch, match="another input, with other options.*changed: "
                       "seed 99 -> 1234. Rerun"):
        pack(example_dataset, out, resume=True)
    assert _tree(out) == before
    (out / STATE_DIR / "state.json").write_text('{"fingerprint": "x"}')
    with pytest.raises(ResumeMismatch, match="another sousa-wds version wrote it"):
        pack(example_dataset, out, resume=True)


def test_non_empty_out_is_refused_unless_overwrite(
    example_dataset: Path, packed_copy: Path
) -> None:
    before = _tree(packed_copy)
    with pytest.raises(PackError, match="--overwrite"):
        pack(example_dataset, packed_copy, shard_size=SHARD_SIZE, progress=False)
    assert _tree(packed_copy) == before
    (packed_copy / "notes.txt").write_text("mine")
    pack(example_dataset, packed_copy, shard_size=SHARD_SIZE, overwrite=True, progress=False)
    assert _tree(packed_copy) == before | {"notes.txt": b"mine"}


def test_overwrite_deletes_only_what_pack_wrote(example_dataset: Path, packed_copy: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, --overwrite removed pack's folders whole (a user's files in data/ and labels/,
    an audio/ folder a sharded pack never writes), then deleted any file named as pack names
    its files."""
    mine = {"data/MY_NOTES.txt": b"mine", "labels/my_extra_labels.parquet": b"mine",
            "audio/my_recording.flac": b"mine", "data/.hidden": b"mine",
            # Named as pack names files, but not written by this (sharded) pack: its manifest
            # lists what it wrote. Before, a name was enough to be deleted.
            "audio/train/x.flac": b"mine", "midi/test/y.mid": b"mine",
            "data/train-00099.tar": b"mine", "data/train-000000.tar": b"mine",
            "data/train-\u0660\u0660\u0660\u0660\u0661.tar": b"mine"}
    for rel, data in mine.items():
        (packed_copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (packed_copy / rel).write_bytes(data)
    before = _tree(packed_copy)
    with pytest.raises(PackError, match="--overwrite refused: pack's folders.*hold entries not "
                       "written by the pack it replaces") as refused:
        pack(example_dataset, packed_copy, shard_size=SHARD_SIZE, overwrite=True, progress=False)
    assert all(rel in str(refused.value) for rel in mine)
    assert _tree(packed_copy) == before
    for rel in mine:
        (packed_copy / rel).unlink()
    for folder in ("audio/train", "midi/test", "audio", "midi"):
        (packed_copy / folder).rmdir()
    reference = _tree(packed_copy)
    # A state folder that is a file: refused before the old pack is deleted (before: deleted,
    # then "Not a directory" on every rerun).
    (packed_copy / STATE_DIR).write_text("x")
    with pytest.raises(PackError, match=f"(?s)--overwrite refused.*{STATE_DIR}"):
        pack(example_dataset, packed_copy, shard_size=SHARD_SIZE, overwrite=True, progress=False)
    assert _tree(packed_copy) == reference | {STATE_DIR: b"x"}
    (packed_copy / STATE_DIR).unlink()
    # Stopped once the old files are gone, before the new state: the manifest, deleted last,
    # still marks the folder as a pack, so the same command finishes the job.
    monkeypatch.setattr(StateDir, "start", _raise_keyboard_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pack(example_dataset, packed_copy, shard_size=SHARD_SIZE, overwrite=True, progress=False)
    assert (packed_copy / MANIFEST).is_file() and not (packed_copy / "data").exists()
    monkeypatch.undo()
    pack(example_dataset, packed_copy, shard_size=SHARD_SIZE, overwrite=True, progress=False)
    assert _tree(packed_copy) == reference


def _raise_keyboard_interrupt(*_args: object) -> None:
    raise KeyboardInterrupt


def test_links_where_pack_writes_are_refused(example_dataset: Path, dataset_copy: Path,
                                             packed_copy: Path, tmp_path: Path) -> None:
    """A link in OUT (or a planted lock file link) had pack write wherever it pointed: with
    --resume, the stroke tables went into the source dataset's labels/ folder."""
    interrupted = tmp_path / "interrupted"
    ds = read_dataset(example_dataset)
    StateDir(interrupted).start(PackState(ds.fingerprint(), plan_shards(
        ds.samples, shard_size=SHARD_SIZE).options("shards")))
    (interrupted / "labels").symlink_to(dataset_copy / "labels")
    source = _tree(dataset_copy)
    with pytest.raises(PackError, match=r"(?s)symbolic links where pack writes.*labels"):
        pack(example_dataset, interrupted, shard_size=SHARD_SIZE, resume=True, progress=False)
    (interrupted / "labels").unlink()
    records = interrupted / STATE_DIR / "shards"
    records.rmdir()
    records.symlink_to(tmp_path)  # the shard records would be written there
    with pytest.raises(PackError, match=r"(?s)symbolic links where pack writes.*"
                       rf"{STATE_DIR}/shards"):
        pack(example_dataset, interrupted, shard_size=SHARD_SIZE, resume=True, progress=False)
    (packed_copy / "index" / "train.json").unlink()
    (packed_copy / "index" / "train.json").symlink_to(dataset_copy / "splits.json")
    with pytest.raises(PackError, match=r"(?s)symbolic links where pack writes.*index/train.json"):
        pack(example_dataset, packed_copy, shard_size=SHARD_SIZE, overwrite=True, progress=False)
    assert _tree(dataset_copy) == source
    victim = tmp_path / "victim"
    victim.mkdir()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / LOCK_FILE).symlink_to(victim / "created_by_lock")
    with pytest.raises(PackError, match="lock.*symbolic link"):
        pack(example_dataset, fresh, shard_size=SHARD_SIZE, progress=False)
    assert not any(victim.iterdir())


def test_bad_input_leaves_out_untouched(dataset_copy: Path, packed_copy: Path,
                                        example_dataset: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    (dataset_copy / "splits.json").unlink()
    before = _tree(packed_copy)
    assert main(["pack", str(dataset_copy), str(packed_copy), "--overwrite", "--quiet"]) == 1
    assert _tree(packed_copy) == before
    fresh = tmp_path / "fresh"
    assert main(["pack", str(dataset_copy), str(fresh), "--quiet"]) == 1
    assert not fresh.exists()
    err = capsys.readouterr().err
    assert "splits.json" in err and err.count("sousa-wds pack: error:") == 2
    # OUT cannot be made: nothing was started, so no advice to --resume it.
    (tmp_path / "a_file").write_text("mine")
    assert main(["pack", str(example_dataset), str(tmp_path / "a_file"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "Fix the cause and rerun." in err and "--resume" not in err
    assert (tmp_path / "a_file").read_text() == "mine"


def test_unreadable_flac_names_the_file_and_leaves_no_partial_shard(
    dataset_copy: Path, tmp_path: Path
) -> None:
    victim = sorted((dataset_copy / "audio").rglob("*.flac"))[0]
    victim.write_bytes(b"fLaC but not really")
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=victim.name) as info:  # found by the source check
        pack(dataset_copy, out, max_samples_per_shard=1, workers=1, progress=False)
    assert "BytesIO" not in str(info.value)
    assert not list(out.rglob("*.partial"))
    assert not (out / MANIFEST).exists()


def test_out_inside_the_dataset_is_refused(example_dataset: Path) -> None:
    with pytest.raises(PackError, match="apart from the dataset"):
        pack(example_dataset, example_dataset / "packed", progress=False)
    assert not (example_dataset / "packed").exists()


# --- loose layout ----------------------------------------------------------------------------

def test_no_sharding_writes_loose_files(example_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "loose"
    pack(example_dataset, out, no_sharding=True, progress=False)
    sources = _sources(example_dataset)
    rows = _metadata(out)
    assert len(rows) == len(sources)
    for row in rows:
        assert (out / row["audio_filename"]).read_bytes() == sources[row["key"]][0]
        assert (out / row["midi_filename"]).read_bytes() == sources[row["key"]][1]
        assert row["audio_filename"] == f"audio/{row['split']}/{row['key']}.flac"
        assert row["shard"] is None and row["flac_offset"] is None
        assert row["mid_sha256"] == hashlib.sha256(sources[row["key"]][1]).hexdigest()
        assert row["json_sha256"] is None  # no JSON member in this layout
    assert not (out / "data").exists() and not (out / "index").exists()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["layout"] == "loose"
    assert len(_tree(out)) == 2 * len(rows) + loose.FIXED_FILES
    # What `push --no-sharding` runs before it uploads: every row used to be "damaged"
    # (json_sha256 is null in this layout, as documented).
    for deep in (False, True):
        report = verify(out, deep=deep)
        assert report.ok, str(report)


def test_loose_resume_rewrites_a_file_damaged_in_place(example_dataset: Path,
                                                       tmp_path: Path) -> None:
    """A loose file of the right size was kept whatever it held: a pack that said OK, with
    metadata hashes its files did not match."""
    out, reference = tmp_path / "out", tmp_path / "ref"
    pack(example_dataset, reference, no_sharding=True, progress=False)

    def stop(progress: object) -> None:
        if getattr(progress, "samples", 0) >= 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack(example_dataset, out, no_sharding=True, workers=1, progress=stop)
    placed = sorted((out / "audio").rglob("*.flac"))[0]
    data = bytearray(placed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    placed.write_bytes(bytes(data))
    pack(example_dataset, out, no_sharding=True, resume=True, progress=False)
    assert _tree(out) == _tree(reference)
    assert verify(out, deep=True).ok


def test_no_sharding_refuses_beyond_hub_limits(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loose, "HUB_MAX_FILES_PER_FOLDER", 5)
    with pytest.raises(PackError, match="per folder.*Drop --no-sharding"):
        pack(example_dataset, tmp_path / "loose", no_sharding=True, progress=False)
    assert not (tmp_path / "loose").exists()


def test_metadata_table_types_survive_null_typed_input(packed: Path) -> None:
    table = pq.read_table(packed / "metadata/train.parquet")
    assert table.schema.field("aug_bit_depth").type == pa.int64()
    assert table.schema.field("roll_sustain").type == pa.float64()


def test_pack_cli_prints_summary(example_dataset: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert main(["pack", str(example_dataset), str(out), "--shard-size", "4MB", "--quiet"]) == 0
    assert "40 samples" in capsys.readouterr().out
    assert os.path.isfile(out / MANIFEST)


def test_resume_rewrites_shards_whose_samples_changed(
    example_dataset: Path, tmp_path: Path
) -> None:
    """A finished shard is kept only if it holds exactly the samples the plan gives it now."""
    reference, out = tmp_path / "ref", tmp_path / "out"
    pack(example_dataset, reference, max_samples_per_shard=2, workers=1)
    pack(example_dataset, out, max_samples_per_shard=2, workers=1)
    # Turn the finished pack back into an interrupted one: true records for every shard but
    # the first, whose record lies about its keys (and whose file is damaged).
    ds = read_dataset(example_dataset)
    plan = plan_shards(ds.samples, max_samples_per_shard=2)
    hashes = {f["path"]: f["sha256"] for f in json.loads((out / MANIFEST).read_text())["files"]}
    (out / MANIFEST).unlink()
    states = StateDir(out)
    states.start(PackState(ds.fingerprint(), plan.options("shards")))
    fields = [n for n in METADATA_SCHEMA.names if n.endswith(("_offset", "_size", "_sha256"))]
    fields += ["key", "index_in_shard", "sample_rate", "channels", "num_frames"]
    for shard in plan.shards[1:]:
        rows = [{f: r[f] for f in fields} for r in _metadata(out) if r["shard"] == shard.name]
        on_disk = (out / shard.path).stat()
        states.record(ShardResult(shard.name, shard.path, on_disk.st_size, hashes[shard.path],
                                  tuple(rows), on_disk.st_mtime_ns, source_stamp(shard.samples)))
    first = plan.shards[0]
    damaged = bytearray((out / first.path).read_bytes())
    damaged[600] ^= 0xFF
    (out / first.path).write_bytes(bytes(damaged))
    states.record(ShardResult(first.name, first.path, len(damaged), "0" * 64,
                              ({"key": "someone_else"}, {"key": "another"})))
    summary = pack(example_dataset, out, max_samples_per_shard=2, workers=1, resume=True)
    assert summary.reused_shards == len(plan.shards) - 1
    assert _tree(out) == _tree(reference)


def test_resume_rewrites_a_shard_edited_in_place_and_one_whose_source_changed(
    dataset_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, resume kept a shard whose record and size matched: a shard edited in place (same
    size) or a source FLAC rewritten at the same size since (the fingerprint holds sizes)
    ended in a pack that said OK and held the old bytes. A damaged record was an error."""
    out, reference = tmp_path / "out", tmp_path / "ref"
    states = _interrupted_pack(dataset_copy, out, samples=12)
    records = sorted(states.shards.glob("*.json"))
    assert len(records) >= 5
    edited = out / states.load_record(records[0].stem).path
    data = bytearray(edited.read_bytes())
    data[600] ^= 0xFF
    edited.write_bytes(bytes(data))
    key = states.load_record(records[1].stem).rows[0]["key"]
    flac = dataset_copy / next(s.audio_path for s in read_dataset(dataset_copy).samples
                               if s.key == key)
    data = bytearray(flac.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size; the end check still passes
    flac.write_bytes(bytes(data))
    os.utime(flac, ns=(time.time_ns(), time.time_ns() + 10**9))
    records[2].write_bytes(b"\xff" * 5000)
    summary = pack(dataset_copy, out, max_samples_per_shard=2, workers=1, resume=True)
    assert summary.reused_shards == len(records) - 3
    assert f"{records[2]} is damaged: its shard is written again" in caplog.text
    pack(dataset_copy, reference, max_samples_per_shard=2, workers=1)
    assert _tree(out) == _tree(reference)


def test_resume_refuses_files_that_are_not_its_pack_and_records_of_other_files(
    example_dataset: Path, tmp_path: Path
) -> None:
    """Before, --resume finished "OK" beside a copied shard `data/train-00099.tar` (a loader
    globbing data/ reads it as data) and a user's file, which `verify` then failed; a record
    whose `path` named another shard kept a shard that was never written."""
    out, reference = tmp_path / "out", tmp_path / "ref"
    pack(example_dataset, reference, max_samples_per_shard=2, workers=1)
    states = _interrupted_pack(example_dataset, out, samples=8)
    first, second = sorted(states.shards.glob("*.json"))[:2]
    shutil.copy(out / states.load_record(first.stem).path, out / "data/train-00099.tar")
    (out / "data/MY_NOTES.txt").write_text("mine")
    (out / "manifest.json").mkdir()
    with pytest.raises(PackError, match=r"(?s)--resume refused.*not part of the pack this run "
                       r"resumes.*data/MY_NOTES.txt\n.*data/train-00099.tar\n.*manifest.json"):
        pack(example_dataset, out, max_samples_per_shard=2, workers=1, resume=True)
    for rel in ("data/train-00099.tar", "data/MY_NOTES.txt"):
        (out / rel).unlink()
    (out / "manifest.json").rmdir()
    lying = states.load_record(first.stem)
    other = states.load_record(second.stem)
    (out / lying.path).unlink()  # its record now names the second shard's file, which exists
    states.record(ShardResult(lying.name, other.path, other.bytes, other.sha256, lying.rows,
                              other.mtime_ns, lying.sources))
    summary = pack(example_dataset, out, max_samples_per_shard=2, workers=1, resume=True)
    assert (out / lying.path).is_file() and summary.reused_shards >= 1
    assert _tree(out) == _tree(reference)


def _interrupted_pack(dataset: Path, out: Path, samples: int) -> StateDir:
    """A pack of two samples a shard into `out`, stopped (Ctrl-C) after `samples` samples."""

    def stop(progress: object) -> None:
        if getattr(progress, "samples", 0) >= samples:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack(dataset, out, max_samples_per_shard=2, workers=1, progress=stop)
    return StateDir(out)


def test_resume_never_writes_into_a_hard_link_at_a_temporary_name(
    example_dataset: Path, tmp_path: Path
) -> None:
    """`cp -al` of an interrupted pack, say: the shard writer opened the temporary name as it
    was, and wrote the shard's bytes into the other copy; the label writer too."""
    out = tmp_path / "out"
    states = _interrupted_pack(example_dataset, out, samples=4)
    written = {states.load_record(r.stem).path for r in states.shards.glob("*.json")}
    todo = next(s.path for s in plan_shards(read_dataset(example_dataset).samples,
                                            max_samples_per_shard=2).shards
                if s.path not in written)
    precious = {tmp_path / "precious": out / Path(todo).parent / f".{Path(todo).name}.partial",
                tmp_path / "precious2": out / "labels/strokes/.train.parquet.partial"}
    for mine, temp in precious.items():
        mine.write_text("mine")
        temp.parent.mkdir(parents=True, exist_ok=True)
        os.link(mine, temp)
    pack(example_dataset, out, max_samples_per_shard=2, workers=1, resume=True)
    assert all(mine.read_text() == "mine" for mine in precious)
    assert verify(out).ok


def test_empty_dataset_is_refused(dataset_copy: Path, tmp_path: Path) -> None:
    for name in ("samples", "exercises", "strokes", "measures"):
        path = dataset_copy / "labels" / f"{name}.parquet"
        pq.write_table(pq.read_table(path).slice(0, 0), path)
    with pytest.raises(PackError, match="no samples"):
        pack(dataset_copy, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_reaches_every_sample_and_byte(example_dataset: Path, tmp_path: Path,
                                                workers: int) -> None:
    seen: list = []
    pack(example_dataset, tmp_path / "out", shard_size=SHARD_SIZE, workers=workers,
         progress=seen.append)
    media = sum(len(f) + len(m) for f, m, _ in _sources(example_dataset).values())
    last = seen[-1]
    assert (last.samples, last.total_samples, last.bytes, last.total_bytes) == (
        40, 40, media, media)
    assert [p.samples for p in seen] == sorted(p.samples for p in seen)


def test_library_prints_nothing_and_logs_warnings(
    dataset_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (dataset_copy / "audio" / "stray.flac").write_bytes(b"not listed anywhere")
    with caplog.at_level("WARNING", logger="sousa_wds"):
        pack(dataset_copy, tmp_path / "out", workers=1)
    assert capsys.readouterr() == ("", "")
    assert any("stray.flac" in r.getMessage() for r in caplog.records)


class _SlowFile(io.FileIO):
    """A disk that takes its time: blocks queue up behind the writer thread."""

    def write(self, data) -> int:
        time.sleep(0.005)
        return super().write(data)


def test_a_lent_read_buffer_is_reused_only_after_the_writer_thread_wrote_it(
    tmp_path: Path,
) -> None:
    """Pack reads each FLAC into a buffer the writer lends and hands views of it to the writer
    thread without a copy: a buffer lent again too early would put the next file's bytes
    into the shard in place of this one's."""
    from sousa_wds.pack.tar import _HashingWriter

    class OneBuffer(_HashingWriter):
        BUFFERS = 1  # every lend waits for the buffer lent before it

    raw = _SlowFile(tmp_path / "shard.tar", "w")
    sink = OneBuffer(raw)
    size = _HashingWriter.LARGE + 1  # large enough to be handed over as it is
    lent = []
    for n in range(8):
        buffer = sink.lend(size if n < 7 else 2 * size)  # the last: a larger one
        assert len(buffer) >= size
        buffer[:size] = bytes([n]) * size
        sink.write(memoryview(buffer)[:size])
        sink.write(memoryview(buffer)[size - 100:size])  # small: gathered, so copied
        sink.give_back(buffer)
        lent.append(buffer)
    sink.close()
    raw.close()
    expected = b"".join(bytes([n]) * (size + 100) for n in range(8))
    assert (tmp_path / "shard.tar").read_bytes() == expected
    assert sink.sha256.hexdigest() == hashlib.sha256(expected).hexdigest()
    assert all(b is lent[0] for b in lent[:7]) and lent[7] is not lent[0]


def test_shard_tasks_carry_only_their_own_positions(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task is pickled to a worker: it names its samples by position (the worker takes them
    from its forked tables), and an Arrow slice would pickle the split's whole array."""
    from sousa_wds.pack import run

    seen: list = []
    real = run.run_pool

    def watched(tasks, *args):
        def each():
            for task in tasks:
                seen.append(task)
                yield task
        return real(each(), *args)

    monkeypatch.setattr(run, "run_pool", watched)
    pack(example_dataset, tmp_path / "out", max_samples_per_shard=2, workers=2)
    assert len(seen) > 2
    for task in seen:
        assert task.samples is None and task.records is None
        assert task.positions.offset == 0
        assert task.positions.buffers()[1].size == 8 * len(task.positions)
