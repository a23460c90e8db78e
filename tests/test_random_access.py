"""load_audio / load_midi: the seed's consumer API, one range request per member, sha256 checked,
from a local folder, an HTTP mirror and the Hub; SampleMap and get_sample by key."""

from __future__ import annotations

import io
import shutil
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile

import sousa_wds
from sousa_wds.errors import IntegrityError, LoaderError

from .faults.craft import member_bytes
from .httpserver import FolderServer
from .hubserver import DEFAULT_TOKEN, HubServer

REPO = "testuser/sousa-random"


@pytest.fixture(scope="module")
def pack_v2(packed: Path) -> Path:
    """The packed example; its metadata has every member's sha256 (FORMAT_VERSION 2)."""
    columns = set(sousa_wds.metadata(packed, "test").columns)
    assert {"flac_sha256", "json_sha256", "mid_sha256"} <= columns
    return packed


@pytest.fixture(scope="module")
def members(pack_v2: Path) -> dict[str, dict[str, bytes]]:
    """key → {ext: bytes} read with tarfile: ground truth independent of the metadata offsets."""
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted((pack_v2 / "data").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                key, ext = info.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return out


def _expected(flac: bytes) -> tuple[np.ndarray, int]:
    return soundfile.read(io.BytesIO(flac))


def _assert_audio(got: tuple[np.ndarray, int], flac: bytes) -> None:
    audio, rate = got
    want, want_rate = _expected(flac)
    assert rate == want_rate and audio.dtype == want.dtype and audio.shape == want.shape
    np.testing.assert_array_equal(audio, want)


def test_load_audio_takes_a_dict_a_pandas_row_or_a_key(pack_v2: Path, members: dict) -> None:
    meta = sousa_wds.metadata(pack_v2, "test")
    row = meta.iloc[1]
    flac = members[row.key]["flac"]
    _assert_audio(sousa_wds.load_audio(row.to_dict(), source=pack_v2), flac)
    _assert_audio(sousa_wds.load_audio(row, source=pack_v2), flac)
    _assert_audio(sousa_wds.load_audio(row.key, source=pack_v2), flac)
    _assert_audio(sousa_wds.load_audio({"key": row.key}, source=pack_v2), flac)
    assert sousa_wds.load_midi(row.to_dict(), source=pack_v2) == members[row.key]["mid"]
    parsed = sousa_wds.load_midi(row.key, source=pack_v2, as_mido=True)
    assert isinstance(parsed, mido.MidiFile) and parsed.tracks


def test_load_audio_accepts_a_datasets_row(pack_v2: Path, members: dict) -> None:
    from datasets import load_dataset

    rows = load_dataset("parquet", data_files=str(pack_v2 / "metadata" / "validation.parquet"),
                        split="train")
    row = rows[0]
    _assert_audio(sousa_wds.load_audio(row, source=pack_v2), members[row["key"]]["flac"])


def test_load_audio_over_http_is_one_range_request_per_member(pack_v2: Path,
                                                             members: dict) -> None:
    rows = sousa_wds.metadata(pack_v2, "train").iloc[:3]
    with FolderServer(pack_v2) as server:
        for row in rows.itertuples():
            server.clear()
            got = sousa_wds.load_audio(row._asdict(), source=server.url)
            _assert_audio(got, members[row.key]["flac"])
            data = [r for r in server.requests if r.path.startswith("data/")]
            assert len(data) == 1 and data[0].status == 206
            assert data[0].bytes_sent <= row.flac_size + 1024
            server.clear()
            midi = sousa_wds.load_midi(row._asdict(), source=server.url)
            assert midi == members[row.key]["mid"]
            assert [r.bytes_sent <= row.mid_size + 1024 for r in server.requests] == [True]
        # The location is cached: no manifest again; a key reads the metadata once.
        server.clear()
        for key in rows.key:
            sousa_wds.load_audio(key, source=server.url)
        paths = [r.path for r in server.requests]
        assert "manifest.json" not in paths
        assert sorted(p for p in paths if p.startswith("metadata/")) == [
            "metadata/test.parquet", "metadata/train.parquet", "metadata/validation.parquet"]
        assert len([p for p in paths if p.startswith("data/")]) == len(rows)


def test_load_audio_from_threads(pack_v2: Path, members: dict) -> None:
    rows = sousa_wds.metadata(pack_v2, "train").to_dict("records")[:8]
    with FolderServer(pack_v2) as server, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda r: sousa_wds.load_audio(r, source=server.url), rows))
    for row, got in zip(rows, results):
        _assert_audio(got, members[row["key"]]["flac"])


def test_load_audio_checks_the_sha256(pack_v2: Path, tmp_path: Path) -> None:
    copy = tmp_path / "packed"
    shutil.copytree(pack_v2, copy)
    row = sousa_wds.metadata(copy, "test").iloc[0]
    data = bytearray(member_bytes(copy, row, "flac"))
    data[len(data) // 2] ^= 0x01
    with open(copy / row.shard_path, "r+b") as fh:
        fh.seek(int(row.flac_offset))
        fh.write(data)
    with pytest.raises(IntegrityError, match=f"{row.key}.flac does not match flac_sha256"):
        sousa_wds.load_audio(row.to_dict(), source=copy)
    with pytest.raises(LoaderError, match="shard_path"):
        sousa_wds.load_audio(row.to_dict() | {"shard_path": "../../etc/passwd"}, source=copy)
    with pytest.raises(LoaderError, match="repo_id"):
        sousa_wds.load_audio(row.to_dict())


def test_load_audio_from_the_hub_with_a_revision(pack_v2: Path, members: dict,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with HubServer(tmp_path / "hub") as hub:
        hub.create_repo(REPO, private=True)
        hub.put_files(REPO, {p.relative_to(pack_v2).as_posix(): p.read_bytes()
                             for p in sorted(pack_v2.rglob("*")) if p.is_file()})
        commit = hub.commits(REPO)[-1].oid
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", DEFAULT_TOKEN)
        row = sousa_wds.metadata(pack_v2, "validation").iloc[0]
        hub.clear_log()
        got = sousa_wds.load_audio(row.to_dict(), REPO, revision=commit)
        _assert_audio(got, members[row.key]["flac"])
        shard = [r for r in hub.log if r.decoded_path.endswith(row.shard_path)]
        assert len(shard) == 1 and f"/resolve/{commit}/" in shard[0].decoded_path
        assert sousa_wds.load_midi(row.key, REPO) == members[row.key]["mid"]
