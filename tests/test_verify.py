"""verify: a clean pack passes; each kind of damage is caught and named."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from sousa_wds.cli import main
from sousa_wds.errors import VerifyError
from sousa_wds.format import MANIFEST, metadata_path, tar_framing
from sousa_wds.verification import folder, shards, verify
from sousa_wds.verification.report import load_manifest as verify_manifest


def test_clean_pack_verifies(packed: Path) -> None:
    report = verify(packed, deep=True)
    assert report.ok, str(report)
    assert report.samples == 40 and report.shards >= 5
    assert "OK" in str(report)


def test_flipped_byte_is_caught_by_deep(packed_copy: Path) -> None:
    shard = packed_copy / "data/train-00000.tar"
    data = bytearray(shard.read_bytes())
    data[1500] ^= 0x01  # inside the first FLAC's data, past its 512-byte header
    shard.write_bytes(bytes(data))
    assert verify(packed_copy).ok  # sizes and structure still agree
    report = verify(packed_copy, deep=True)
    assert not report.ok
    text = str(report)
    assert "data/train-00000.tar: sha256 differs" in text
    assert ".flac sha256 differs" in text


def test_deep_verify_dropping_what_it_read_as_it_goes_still_checks_every_byte(
    packed_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every DROP_EVERY bytes a deep read asks whether the next window was cached and drops
    what it brought in: with 64 KiB instead of 32 MB that happens inside every test shard.
    Only the verdicts are checked (what the cache keeps depends on the file system)."""
    from sousa_wds.verification import shards

    monkeypatch.setattr(shards, "DROP_EVERY", 64 << 10)
    assert verify(packed_copy, deep=True).ok
    shard = packed_copy / "data/train-00000.tar"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    report = verify(packed_copy, deep=True)
    assert not report.ok and "data/train-00000.tar" in str(report)


def test_framing_is_every_byte_of_a_real_shard_outside_its_members(packed: Path) -> None:
    """`tar_framing` rebuilt from the member list must be byte for byte what pack wrote."""
    shard = packed / "data/train-00000.tar"
    data = shard.read_bytes()
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    framing, starts, size = tar_framing([(m.name, m.size) for m in members])
    assert size == len(data)
    assert starts == [m.offset_data for m in members]
    covered = sum(len(chunk) for _, chunk in framing) + sum(m.size for m in members)
    assert covered == len(data)
    for at, chunk in framing:
        assert data[at:at + len(chunk)] == chunk


def test_clean_deep_pass_does_not_hash_whole_shards(packed: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Member digests and framing pin every byte: the second digest is only for damage."""
    scan = shards._scan

    def one_digest_per_byte(path: Path, regions: list, whole: object) -> tuple[int, bool]:
        assert whole is None, f"{path} hashed as a whole"
        return scan(path, regions, whole)

    monkeypatch.setattr(shards, "_scan", one_digest_per_byte)
    assert verify(packed, deep=True).ok


def test_shards_cut_into_runs_still_name_the_damaged_member(
        packed_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of one sample each: every run boundary is checked, and a flip inside a later run
    falls back to the full check of that shard alone."""
    monkeypatch.setattr(folder, "MIN_RUN_BYTES", 1)
    monkeypatch.setattr(folder, "RUNS_PER_WORKER", 10_000)
    entry = next(f for f in verify_manifest(packed_copy).files
                 if f.path == "data/train-00000.tar")
    rows = [r for r in pq.read_table(packed_copy / metadata_path("train")).to_pylist()
            if r["shard_path"] == entry.path]
    assert len(shards.pinned_runs(entry, rows, 1) or []) == len(rows) > 2
    with monkeypatch.context() as patch:
        patch.setattr(shards, "_check_digests", _refuse_full_read)
        assert verify(packed_copy, deep=True).ok
    shard = packed_copy / entry.path
    flac = _member(shard, 6)  # the third sample's .flac
    data = bytearray(shard.read_bytes())
    data[flac.offset_data + flac.size // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert verify(packed_copy, deep=True).problems == [
        f"{entry.path}: sha256 differs from the manifest (content changed)",
        f"{entry.path}: key {flac.name.removesuffix('.flac')}: .flac sha256 differs from the "
        "metadata",
    ]


def _refuse_full_read(path: Path, *args: object) -> None:
    raise AssertionError(f"{path} needed the full check")


def _member(shard: Path, index: int) -> tarfile.TarInfo:
    with tarfile.open(shard) as tar:
        return tar.getmembers()[index]


def test_deep_pass_hashes_across_read_blocks(packed_copy: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks smaller than a member and not aligned to 512 split members at odd places:
    a clean pack still verifies, and a flipped byte is charged to the right member."""
    monkeypatch.setattr(shards, "HASH_BLOCK", 1000)
    assert verify(packed_copy, deep=True).ok
    shard = packed_copy / "data/train-00000.tar"
    mid = _member(shard, 5)  # the second sample's .mid
    assert mid.name.endswith(".mid")
    data = bytearray(shard.read_bytes())
    data[mid.offset_data + mid.size - 1] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = verify(packed_copy, deep=True).problems
    assert problems == [
        "data/train-00000.tar: sha256 differs from the manifest (content changed)",
        f"data/train-00000.tar: key {mid.name.removesuffix('.mid')}: .mid sha256 differs "
        "from the metadata",
    ]


def test_damage_between_members_is_caught_by_the_shard_digest(packed_copy: Path) -> None:
    shard = packed_copy / "data/train-00000.tar"
    json_member = _member(shard, 1)
    assert json_member.name.endswith(".json") and json_member.size % 512
    data = bytearray(shard.read_bytes())
    data[json_member.offset_data + json_member.size] ^= 0x01  # tar padding after the JSON
    shard.write_bytes(bytes(data))
    assert verify(packed_copy).ok
    assert verify(packed_copy, deep=True).problems == [
        "data/train-00000.tar: sha256 differs from the manifest (content changed)"]


def test_shards_of_an_unreadable_split_are_still_hashed(packed_copy: Path) -> None:
    (packed_copy / metadata_path("validation")).write_bytes(b"not parquet")
    shard = packed_copy / "data/validation-00000.tar"
    data = bytearray(shard.read_bytes())
    data[1500] ^= 0x01
    shard.write_bytes(bytes(data))
    text = str(verify(packed_copy, deep=True))
    assert "data/validation-00000.tar: sha256 differs from the manifest" in text
    assert "metadata/validation.parquet: unreadable" in text


def test_truncated_shard(packed_copy: Path) -> None:
    shard = packed_copy / "data/train-00001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    text = str(verify(packed_copy))
    assert "data/train-00001.tar: 5000 bytes, manifest says" in text
    assert "data/train-00001.tar: not a readable tar" in text and "after key " in text


def test_missing_shard(packed_copy: Path) -> None:
    (packed_copy / "data/validation-00000.tar").unlink()
    report = verify(packed_copy)
    assert "data/validation-00000.tar: missing" in str(report)
    assert not report.ok


def test_extra_sample(packed_copy: Path) -> None:
    from webdataset import TarWriter

    shard = packed_copy / "data/test-00000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    buffer = io.BytesIO()
    with TarWriter(buffer, mtime=0, encoder=False) as writer:
        for i in range(0, len(members), 3):
            key = members[i][0].name.split(".")[0]
            writer.write({"__key__": key, **{m.name.split(".", 1)[1]: d
                                             for m, d in members[i:i + 3]}})
        writer.write({"__key__": "intruder_sample", "flac": members[0][1],
                      "json": b'{"sample_id":"intruder_sample"}', "mid": members[2][1]})
    shard.write_bytes(buffer.getvalue())
    text = str(verify(packed_copy))
    assert "key intruder_sample: in the shard but not in the metadata" in text


def test_stray_file_in_data_is_named(packed_copy: Path) -> None:
    (packed_copy / "data/train-00099.tar").write_bytes(b"")
    assert "data/train-00099.tar: not in the manifest" in str(verify(packed_copy))


def test_missing_manifest_is_an_error(packed_copy: Path) -> None:
    (packed_copy / MANIFEST).unlink()
    with pytest.raises(VerifyError, match="--resume"):
        verify(packed_copy)


def test_duplicate_metadata_row(packed_copy: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = packed_copy / "metadata/test.parquet"
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table, table.slice(0, 1)]), path)
    key = table.column("key")[0].as_py()
    text = str(verify(packed_copy))
    assert f"key {key}: 2 metadata rows" in text
    n = table.num_rows
    assert f"metadata/test.parquet: {n + 1} rows, manifest says {n}" in text
    assert f"metadata/test.parquet: {path.stat().st_size} bytes, manifest says" in text


def test_verify_cli_exit_codes(packed: Path, packed_copy: Path,
                               capsys: pytest.CaptureFixture) -> None:
    assert main(["verify", str(packed), "--quiet"]) == 0
    (packed_copy / "data/train-00000.tar").unlink()
    assert main(["verify", str(packed_copy), "--quiet"]) == 1
    assert "data/train-00000.tar: missing" in capsys.readouterr().out
    # A URL or a bare USER/NAME is no folder: say what verify takes, with no empty bar before.
    for target in ("http://127.0.0.1:9/sousa", "testuser/sousa"):
        assert main(["verify", target]) == 1
        err = capsys.readouterr().err
        assert err == (f"sousa-wds verify: error: {target}: no such folder; verify checks a local "
                       "packed folder, or a Hub copy given as hf://datasets/USER/NAME[@REVISION]\n")


def test_a_pack_and_its_source_mistaken_for_each_other_are_named(
        packed: Path, example_dataset: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    """Before: `check` on a pack listed five missing label files, `verify` and `stream` on the
    generator's folder suggested `pack --resume`, `extract` said only "manifest.json does not
    exist"."""
    for command in (["verify"], ["stream"], ["extract"]):
        args = [*command, str(example_dataset)] + ([str(tmp_path / "x")] if command == [
            "extract"] else [])
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "it is a SOUSA dataset as the generator writes it: pack it first" in err, err
        assert err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    assert main(["check", str(packed)]) == 1
    assert capsys.readouterr().err == (
        f"sousa-wds check: error: {packed} is a sousa-wds pack, not the folder the SOUSA "
        f"generator wrote: check a pack with `sousa-wds verify {packed}`\n")


def test_a_verify_process_that_dies_is_a_named_error(packed: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A run worker killed (OOM killer, a kill -9) is one VerifyError naming the folder, not a
    BrokenProcessPool traceback, and the CLI prints it as one line."""
    parent = os.getpid()
    real = shards.run_matches

    def die_in_worker(path: Path, run: shards.PinnedRun) -> bool:
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        return real(path, run)

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(folder, "run_matches", die_in_worker)
    with pytest.raises(VerifyError, match=re.escape(
            f"verify process died while reading the shards of {packed}")):
        verify(packed, deep=True)
    assert main(["verify", str(packed), "--deep"]) == 1
