"""get_sample and load_audio by key, called again and again: one range request per sample (the
metadata is read once per source), the right bytes, and the split checks kept."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

import sousa_wds
from sousa_wds.errors import LoaderError

from .httpserver import FolderServer


@pytest.fixture(scope="module")
def members(packed: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted((packed / "data").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                key, ext = info.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return out


def test_get_sample_again_and_again_is_one_request_per_sample(packed: Path,
                                                              members: dict) -> None:
    meta = sousa_wds.metadata(packed, "validation")
    with FolderServer(packed) as server:
        sousa_wds.get_sample(server.url, meta.key.iloc[0], decode=False)  # reads the metadata
        for row in meta.itertuples():
            server.clear()
            sample = sousa_wds.get_sample(server.url, row.key, decode=False)
            assert (sample["flac"], sample["json"], sample["mid"]) == tuple(
                members[row.key][e] for e in ("flac", "json", "mid"))
            own = row.flac_size + row.json_size + row.mid_size
            assert [r.path for r in server.requests] == [row.shard_path]
            assert own <= server.bytes_sent() <= own + 3 * 512 + 2 * 511  # headers + padding
        server.clear()
        decoded = sousa_wds.get_sample(server.url, meta.key.iloc[1])  # other options: same
        assert decoded["audio"].shape[1] == meta.num_frames.iloc[1]
        assert [r.path for r in server.requests] == [meta.shard_path.iloc[1]]


def test_get_sample_split_checks(packed: Path) -> None:
    key = sousa_wds.metadata(packed, "validation").key.iloc[0]
    assert sousa_wds.get_sample(packed, key, split="validation", decode=False)["key"] == key
    with pytest.raises(LoaderError, match=f"no sample '{key}' in the train split of .*: it is "
                       "in the validation split"):
        sousa_wds.get_sample(packed, key, split="train", decode=False)
    with pytest.raises(LoaderError, match="unknown split 'nope'"):
        sousa_wds.get_sample(packed, key, split="nope")


def test_load_midi_by_key_is_one_request_per_sample(packed: Path, members: dict) -> None:
    meta = sousa_wds.metadata(packed, "test")
    with FolderServer(packed) as server:
        sousa_wds.load_midi(meta.key.iloc[0], source=server.url)
        for row in meta.itertuples():
            server.clear()
            assert sousa_wds.load_midi(row.key, source=server.url) == members[row.key]["mid"]
            assert [r.path for r in server.requests] == [row.shard_path]
            assert server.bytes_sent() == row.mid_size + 512
