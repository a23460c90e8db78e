"""extract: a packed dataset back into the generator's SOUSA folder, from a folder, an HTTP
mirror or the Hub; the round trip through pack, resume, subsets, and hostile metadata."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sousa_wds
from sousa_wds.cli import main
from sousa_wds.errors import ExtractError, LoaderError
from sousa_wds.format import (
    EXERCISE_COLUMNS,
    MANIFEST,
    MEASURE_COLUMNS,
    SAMPLE_COLUMNS,
    SOURCE_SPLIT_FIELDS,
    STROKE_COLUMNS,
    FileEntry,
    Manifest,
    metadata_path,
)
from sousa_wds.pack import pack
from sousa_wds.restore import ExtractProgress
from sousa_wds.restore.plan import plan_extract
from sousa_wds.source import read_dataset

from .conftest import SHARD_SIZE
from .httpserver import FolderServer
from .hubserver import DEFAULT_TOKEN, HubServer

REPO = "testuser/sousa-extract"


def files_of(root: Path, *folders: str) -> dict[str, bytes]:
    """Every file under `root` (or under its `folders`), by relative path."""
    tops = [root / f for f in folders] if folders else [root]
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for top in tops for p in sorted(top.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def extracted(packed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("extract") / "sousa"
    sousa_wds.extract(packed, out)
    return out


def test_pack_of_the_extract_is_byte_identical_to_the_pack(
        packed: Path, extracted: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    pack(extracted, again, shard_size=SHARD_SIZE, workers=1, progress=False)
    first, second = files_of(packed), files_of(again)
    assert sorted(first) == sorted(second)
    assert [p for p in first if first[p] != second[p]] == []  # manifest included


def test_extracted_media_are_the_source_files_byte_for_byte(
        example_dataset: Path, extracted: Path) -> None:
    source = files_of(example_dataset, "audio", "midi")
    assert any(p.startswith("midi/") for p in source)
    assert files_of(extracted, "audio", "midi") == source
    assert not (extracted / ".sousa-wds-extract").exists()  # staging removed when done


def test_labels_have_the_generators_columns_paths_order_and_splits(
        example_dataset: Path, extracted: Path) -> None:
    def table(root: Path, name: str) -> pd.DataFrame:
        return pq.read_table(root / "labels" / f"{name}.parquet").to_pandas()

    for name, columns in (("samples", SAMPLE_COLUMNS), ("exercises", EXERCISE_COLUMNS),
                          ("measures", MEASURE_COLUMNS), ("strokes", STROKE_COLUMNS)):
        assert table(extracted, name).columns.tolist() == list(columns), name
    ours, theirs = table(extracted, "samples"), table(example_dataset, "samples")
    # midi_path only on each group's first sample, as the generator writes it
    paths = ["sample_id", "audio_path", "midi_path"]
    assert (ours[paths].fillna("-").sort_values("sample_id").values.tolist()
            == theirs[paths].fillna("-").sort_values("sample_id").values.tolist())
    assert ours.midi_path.isna().sum() == theirs.midi_path.isna().sum() > 0

    splits = json.loads((example_dataset / "splits.json").read_text())
    restored = json.loads((extracted / "splits.json").read_text())
    for field in SOURCE_SPLIT_FIELDS.values():
        members = set(splits[field])
        # each split's samples and stroke rows in the generator's order
        assert (ours[ours.profile_id.isin(members)].sample_id.tolist()
                == theirs[theirs.profile_id.isin(members)].sample_id.tolist())
        keys = set(theirs[theirs.profile_id.isin(members)].sample_id)
        for name in ("strokes", "measures"):
            a, b = table(extracted, name), table(example_dataset, name)
            pd.testing.assert_frame_equal(
                a[a.sample_id.isin(keys)].reset_index(drop=True),
                b[b.sample_id.isin(keys)].reset_index(drop=True), check_dtype=False)
        assert set(restored[field]) == members & set(theirs.profile_id)
    index = json.loads((extracted / "index.json").read_text())
    assert index["sample_ids"] == ours.sample_id.tolist()
    assert index["num_samples"] == len(ours)
    assert index["config"] == {"audio_format": "flac", "sample_rate": 44100}

    checked = read_dataset(extracted)  # what `sousa-wds check` runs
    assert checked.warnings == ()
    original = read_dataset(example_dataset)
    assert checked.label_rows(checked.samples).sort_by("sample_id").equals(
        original.label_rows(original.samples).sort_by("sample_id"))


def test_an_http_mirror_gives_the_same_folder(packed: Path, extracted: Path,
                                              tmp_path: Path) -> None:
    with FolderServer(packed) as server:
        sousa_wds.extract(server.url, tmp_path / "x")
        assert server.bytes_sent("data/") > 0
    assert files_of(tmp_path / "x") == files_of(extracted)


@pytest.fixture(scope="module")
def hub(packed: Path, tmp_path_factory: pytest.TempPathFactory):
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        server.create_repo(REPO, private=True)
        server.put_files(REPO, {p.relative_to(packed).as_posix(): p.read_bytes()
                                for p in sorted(packed.rglob("*")) if p.is_file()})
        yield server


def test_a_hub_repo_gives_the_same_split(packed: Path, hub: HubServer, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", DEFAULT_TOKEN)
    sousa_wds.extract(f"hf://datasets/{REPO}", tmp_path / "hub", split="validation")
    sousa_wds.extract(packed, tmp_path / "local", split="validation")
    assert files_of(tmp_path / "hub") == files_of(tmp_path / "local")
    assert len(files_of(tmp_path / "hub", "audio")) == len(sousa_wds.metadata(packed,
                                                                               "validation"))
    commit = hub.commits(REPO)[-1].oid
    resolves = [r for r in hub.log if r.route == "resolve"]
    assert resolves and all(f"/resolve/{commit}/" in r.decoded_path for r in resolves)


def test_split_and_where_give_a_valid_subset_with_every_groups_midi(
        packed: Path, tmp_path: Path) -> None:
    query = "skill_tier == 'professional'"
    out = tmp_path / "subset"
    summary = sousa_wds.extract(packed, out, split="train", where=query)
    wanted = sousa_wds.metadata(packed, "train").query(query)
    samples = pq.read_table(out / "labels" / "samples.parquet").to_pandas()
    assert 0 < len(samples) < len(sousa_wds.metadata(packed, "train"))
    assert sorted(samples.sample_id) == sorted(wanted.key) and summary.samples == len(wanted)
    owners = samples.dropna(subset=["midi_path"])
    assert sorted(owners.augmentation_group_id) == sorted(set(samples.augmentation_group_id))
    strokes = pq.read_table(out / "labels" / "strokes.parquet").to_pandas()
    assert set(strokes.sample_id) == set(wanted.key)
    dataset = read_dataset(out)
    assert {s.split for s in dataset.samples} == {"train"}
    assert json.loads((out / "splits.json").read_text())["test_profile_ids"] == []


def test_an_interrupted_extract_resumes_reusing_complete_files(
        packed: Path, extracted: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"

    class Stop(Exception):
        pass

    def stop_after_15(state: ExtractProgress) -> None:
        if state.samples == 15:
            raise Stop

    with pytest.raises(Stop):
        sousa_wds.extract(packed, out, progress=stop_after_15)
    assert not (out / "labels").exists() and (out / ".sousa-wds-extract").is_dir()
    left = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in (".flac", ".mid"))
    assert len(left) >= 15
    damaged, kept = left[0], left[1:]
    damaged.write_bytes(bytes(damaged.stat().st_size))  # right size, wrong bytes
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}

    summary = sousa_wds.extract(packed, out)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == before  # not rewritten
    assert summary.reused == len(kept)
    assert summary.written == len(files_of(extracted, "audio", "midi")) - len(kept)
    assert files_of(out) == files_of(extracted)

    again = sousa_wds.extract(packed, out)
    assert again.written == 0 and again.bytes_written == 0


def _state(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `root` (hidden ones too) with its bytes and inode: what a run changed."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_ino)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_dir_holding_another_dataset_is_refused_and_left_as_it_was(
        packed: Path, dataset_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # DIR is the very SOUSA folder the pack was made from: its media are the planned bytes,
    # its labels are not ours (all 40 rows, the generator's writer): extract must not replace them
    before = _state(dataset_copy)
    with pytest.raises(ExtractError, match=r"labels/samples\.parquet.*new or empty folder"):
        sousa_wds.extract(packed, dataset_copy, split="test")
    assert main(["extract", str(packed), str(dataset_copy), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "did not write" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert _state(dataset_copy) == before  # no staging folder left behind either


def test_a_different_file_at_a_planned_media_path_is_refused(
        packed: Path, extracted: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    take = sorted(files_of(extracted, "audio"))[0]
    (out / take).parent.mkdir(parents=True)
    (out / take).write_bytes(b"my own edited take")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExtractError, match=f"1 file\\(s\\) .*{take}"):
        sousa_wds.extract(packed, out)
    assert files_of(out) == {take: b"my own edited take", "notes.txt": b"mine"}
    assert not (out / ".sousa-wds-extract").exists()
    (out / take).unlink()  # moved away: the run goes ahead and leaves the other file alone
    sousa_wds.extract(packed, out)
    assert files_of(out) == files_of(extracted) | {"notes.txt": b"mine"}


def test_a_finished_extract_is_rerun_but_not_replaced_by_another_selection(
        packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "test"
    sousa_wds.extract(packed, out, split="test")
    first = files_of(out)
    again = sousa_wds.extract(packed, out, split="test")  # the same extract: nothing to do
    assert again.written == 0 and files_of(out) == first
    before = _state(out)
    with pytest.raises(ExtractError, match="did not write"):  # its labels would be replaced
        sousa_wds.extract(packed, out, split="validation")
    assert _state(out) == before


@pytest.mark.parametrize("link", [".sousa-wds-extract", "audio", "labels", "midi/SLUG",
                                  "labels INSIDE", ".sousa-wds-extract/labels"])
def test_a_symlinked_folder_where_extract_writes_is_refused(
        packed: Path, tmp_path: Path, link: str, capsys: pytest.CaptureFixture[str]) -> None:
    out, elsewhere = tmp_path / "dir", tmp_path / "elsewhere"
    slug = sousa_wds.metadata(packed, "test").rudiment_slug.iloc[0]
    rel, _, inside = link.replace("SLUG", slug).partition(" ")
    target = out / "real" if inside else elsewhere
    elsewhere.mkdir()
    target.mkdir(parents=True, exist_ok=True)
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).symlink_to(target, target_is_directory=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["extract", str(packed), str(out), "--split", "test", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{out / rel} is a symbolic link" in err and len(err.splitlines()) == 1
    assert "--resume" not in err  # pack's hint is pack's
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    (out / rel).unlink()  # a real folder in its place: the run goes ahead
    sousa_wds.extract(packed, out, split="test")
    assert not any(elsewhere.iterdir()) and not (out / ".sousa-wds-extract").exists()


def test_a_file_where_extract_writes_a_folder_is_refused_first(
        packed: Path, tmp_path: Path) -> None:
    out = tmp_path / "dir"
    out.mkdir()
    (out / "labels").write_text("my notes")
    with pytest.raises(ExtractError, match="labels is a file where extract writes a folder"):
        sousa_wds.extract(packed, out, split="test")
    assert files_of(out) == {"labels": b"my notes"}  # no media written before the failure


def test_a_link_at_a_temporary_name_is_not_written_through(
        packed: Path, extracted: Path, tmp_path: Path) -> None:
    row = sousa_wds.metadata(packed, "test").iloc[0]
    take = f"audio/{row.rudiment_slug}/{row.key}.flac"
    outside = tmp_path / "precious.txt"
    outside.write_text("precious")
    out = tmp_path / "dir"
    temp = out / take
    temp = temp.with_name(f".{temp.name}.partial")
    temp.parent.mkdir(parents=True)
    temp.symlink_to(outside)
    sousa_wds.extract(packed, out, split="test")
    assert outside.read_text() == "precious"
    assert not (out / take).is_symlink() and (out / take).read_bytes() == files_of(extracted)[take]


def test_an_os_error_in_extract_gives_no_pack_hint(
        packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from sousa_wds.restore import run

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "labels"))

    monkeypatch.setattr(run, "write_labels", full)
    assert main(["extract", str(packed), str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "--resume" not in err and "pack" not in err


def _publish_metadata(pack_dir: Path, split: str, column: str, values: list[str]) -> None:
    """Set (or add) a metadata column and re-list the file in the manifest, as a hostile or
    broken publisher would: the pack stays consistent with its manifest."""
    rel = metadata_path(split)
    table = pq.read_table(pack_dir / rel)
    if column in table.column_names:
        table = table.drop_columns([column])
    pq.write_table(table.append_column(column, pa.array(values, pa.string())), pack_dir / rel)
    _relist(pack_dir, rel)


def _relist(pack_dir: Path, rel: str) -> None:
    """List `rel`'s current bytes in the manifest: the pack is consistent, its content wrong."""
    data = (pack_dir / rel).read_bytes()
    manifest = Manifest.from_json((pack_dir / MANIFEST).read_bytes())
    files = [FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()) if f.path == rel
             else f for f in manifest.files]
    (pack_dir / MANIFEST).write_bytes(
        Manifest.from_dict(manifest.to_dict() | {"files": [f.to_dict() for f in files]})
        .to_json())


@pytest.mark.parametrize(("column", "value"), [
    ("rudiment_slug", "../../outside"), ("rudiment_slug", "/tmp"), ("key", "../outside"),
    ("key", "a/b"), ("rudiment_slug", ".."), ("key", "another_sample"),
])
def test_keys_or_slugs_that_leave_dir_are_refused_before_writing(
        packed_copy: Path, tmp_path: Path, column: str, value: str) -> None:
    values = sousa_wds.metadata(packed_copy, "train")[column].tolist()
    _publish_metadata(packed_copy, "train", column, [value, *values[1:]])
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(ExtractError, match="cannot be file names under DIR") as info:
        sousa_wds.extract(packed_copy, tmp_path / "out" / "dir")
    assert repr(value) in str(info.value)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside DIR or out of it


def _drop(column: str):
    return lambda t: t.drop_columns([column])


def _set(column: str, values):
    return lambda t: t.set_column(t.schema.get_field_index(column), column, values(t))


@pytest.mark.parametrize(("rel", "change", "problem"), [
    ("metadata/test.parquet", _drop("rudiment_slug"), "lacks the column(s) rudiment_slug"),
    ("metadata/test.parquet", _drop("profile_id"), "lacks the column(s) profile_id"),
    ("metadata/test.parquet", _set("flac_size", lambda t: pa.nulls(t.num_rows, pa.int64())),
     "has rows without flac_size"),
    ("metadata/test.parquet", _set("mid_size", lambda t: pa.array([float("nan")] * t.num_rows)),
     "has non-integer offsets or sizes: mid_size (double)"),
    ("labels/strokes/test.parquet", _drop("sample_id"), "lacks the column(s) sample_id"),
    ("labels/measures/test.parquet", None, "is not a readable Parquet file"),
])
def test_a_damaged_table_in_the_pack_is_one_named_error(
        packed_copy: Path, tmp_path: Path, rel: str, change, problem: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = packed_copy / rel
    if change is None:
        path.write_bytes(b"not parquet")
    else:
        pq.write_table(change(pq.read_table(path)), path)
    _relist(packed_copy, rel)
    out = tmp_path / "out"
    assert main(["extract", str(packed_copy), str(out), "--split", "test", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{rel} in {packed_copy} {problem}" in err and "re-pack" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert not (out / "audio").exists()  # refused before any media file
    if rel.startswith("metadata/"):  # before DIR is made; every reader meets the same error
        assert not out.exists()
        with pytest.raises(LoaderError, match=re.escape(f"{rel} in {packed_copy} {problem}")):
            sousa_wds.metadata(packed_copy, "test")
        with pytest.raises(LoaderError, match=re.escape(problem)):
            next(iter(sousa_wds.stream(packed_copy, "test", decode=False)))


def test_a_damaged_member_is_never_written(packed_copy: Path, tmp_path: Path) -> None:
    row = sousa_wds.metadata(packed_copy, "test").iloc[0]
    shard = packed_copy / row.shard_path
    data = bytearray(shard.read_bytes())
    data[row.flac_offset + 100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ExtractError, match=f"sample {row.key} "):
        sousa_wds.extract(packed_copy, tmp_path / "out", split="test")
    assert not (tmp_path / "out" / "audio" / row.rudiment_slug / f"{row.key}.flac").exists()


def test_each_midi_is_checked_against_mid_sha256(packed_copy: Path, tmp_path: Path) -> None:
    meta = sousa_wds.metadata(packed_copy, "test")
    digests = meta.mid_sha256.tolist()
    _publish_metadata(packed_copy, "test", "mid_sha256", ["0" * 64] + digests[1:])
    with pytest.raises(ExtractError, match=f"sample {meta.key.iloc[0]} .*.mid member"):
        sousa_wds.extract(packed_copy, tmp_path / "bad", split="test")


def test_a_sample_the_stream_does_not_deliver_fails_the_run(
        packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sousa_wds.restore import run

    real = run.stream
    monkeypatch.setattr(run, "stream", lambda *a, **k: list(real(*a, **k))[1:])
    with pytest.raises(ExtractError, match="did not deliver every selected sample"):
        sousa_wds.extract(packed, tmp_path / "out", split="validation")
    assert not (tmp_path / "out" / "labels").exists()


def test_dir_inside_the_pack_is_refused(packed_copy: Path) -> None:
    before = files_of(packed_copy)
    with pytest.raises(ExtractError, match="inside the pack"):
        sousa_wds.extract(packed_copy, packed_copy / "sousa")
    with pytest.raises(ExtractError, match="inside the pack"):
        sousa_wds.extract(packed_copy, packed_copy)
    assert files_of(packed_copy) == before


def test_group_members_with_different_midi_keep_their_own_file() -> None:
    frame = pd.DataFrame({
        "key": ["a1", "a2", "a3", "b1"], "sample_id": ["a1", "a2", "a3", "b1"],
        "rudiment_slug": ["flam"] * 4,
        "augmentation_group_id": ["g", "g", "g", None], "flac_size": [10] * 4,
        "flac_sha256": ["0" * 64] * 4, "mid_size": [5, 5, 5, 5],
        "mid_sha256": ["1" * 64, "2" * 64, "1" * 64, "1" * 64],
    })
    plan = plan_extract({"train": frame})
    midi = {s.key: (s.midi.path, s.owns_midi) for s in plan.samples}
    assert midi == {"a1": ("midi/flam/a1.mid", True), "a2": ("midi/flam/a2.mid", True),
                    "a3": ("midi/flam/a1.mid", False), "b1": ("midi/flam/b1.mid", True)}
    with pytest.raises(ExtractError, match=r"two splits \(1\):\s+a3 \(train and test"):
        plan_extract({"train": frame, "test": frame.iloc[2:3]})


def test_a_key_too_long_for_a_file_name_is_refused_before_anything_is_written() -> None:
    """A 300-character key packed and verified, then extract failed half-way (ENAMETOOLONG)
    after writing other samples' files."""
    long_key = "b" * 300
    frame = pd.DataFrame({
        "key": ["a1", long_key], "sample_id": ["a1", long_key], "rudiment_slug": ["flam"] * 2,
        "augmentation_group_id": [None, None], "flac_size": [10] * 2,
        "flac_sha256": ["0" * 64] * 2, "mid_size": [5] * 2, "mid_sha256": ["1" * 64] * 2,
    })
    with pytest.raises(ExtractError, match=r"train row 1: key 'b{40}'... is 300 characters: a "
                       "file name holds at most 250"):
        plan_extract({"train": frame})
    assert len(plan_extract({"train": frame.iloc[:1]}).samples) == 1


def test_cli_extract_prints_a_summary_and_fails_in_one_line(
        packed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["extract", str(packed), str(out), "--split", "validation", "--quiet"]) == 0
    n = len(sousa_wds.metadata(packed, "validation"))
    assert f"extracted {n} samples" in capsys.readouterr().out
    assert len(files_of(out, "audio")) == n
    assert main(["extract", str(packed), str(tmp_path / "none"), "--quiet",
                 "--where", "skill_tier == 'nobody'"]) == 1
    err = capsys.readouterr().err
    assert "nothing to extract" in err and "Traceback" not in err
    assert not (tmp_path / "none").exists()


def test_a_damaged_metadata_file_ends_the_process_with_its_error_not_an_abort(
        packed_copy: Path, tmp_path: Path) -> None:
    """A process that stops right after reading a Parquet file could abort at exit (code 134,
    "terminate called without an active exception") when Arrow's threads still held the
    Python file object it was read from (apache/arrow#33975): the reader hands Arrow a buffer."""
    rel = metadata_path("test")
    path = packed_copy / rel
    pq.write_table(_set("flac_size", lambda t: pa.nulls(t.num_rows, pa.int64()))(
        pq.read_table(path)), path)
    _relist(packed_copy, rel)
    command = [sys.executable, "-m", "sousa_wds.cli", "extract", str(packed_copy),
               str(tmp_path / "out"), "--split", "test", "--quiet"]
    runs = [subprocess.run(command, capture_output=True, text=True) for _ in range(12)]
    assert [r.returncode for r in runs] == [1] * 12, [r.stderr[-300:] for r in runs]
    assert all("has rows without flac_size" in r.stderr for r in runs)


def test_an_os_error_that_is_also_a_value_error_is_one_line(
        packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`io.UnsupportedOperation` is both: the CLI's clause for huggingface_hub's ValueErrors
    must not catch it first and re-raise it as a traceback."""
    import io

    from sousa_wds.restore import run

    def unsupported(*args: object) -> None:
        raise io.UnsupportedOperation("fileno")

    monkeypatch.setattr(run, "write_labels", unsupported)
    assert main(["extract", str(packed), str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sousa-wds extract: error: fileno") and len(err.splitlines()) == 1
