"""The consumer loader: sources, where=, exact-once epochs across ranks and workers, shuffle,
resume, random access, bad shards, CLI. HTTP tests use a real server (tests/httpserver.py)."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

import sousa_wds
from sousa_wds.cli import main
from sousa_wds.errors import LoaderError
from sousa_wds.format import SPLITS
from sousa_wds.read.epoch import PlanConfig, plan_epoch
from sousa_wds.read.http import HTTP_RUN_GAP
from sousa_wds.read.location import HttpLocation
from sousa_wds.read.samples import Rows, decode_audio

from .faults.craft import relist
from .httpserver import FolderServer

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def server(packed: Path):
    with FolderServer(packed) as srv:
        yield srv


@pytest.fixture(scope="module")
def members(packed: Path) -> dict[str, dict[str, bytes]]:
    """key → {ext: bytes} read with tarfile: ground truth independent of the metadata offsets."""
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted((packed / "data").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                key, ext = info.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(info).read()
    return out


def _keys(samples) -> list[str]:
    return [s["key"] for s in samples]


def _pairs(batch: list[dict]) -> list[tuple[str, bool]]:
    return [(s["key"], s["padding"]) for s in batch]


def _check_epoch(per_rank: list[list[tuple[str, bool]]], expected: set[str]) -> None:
    """Every selected key exactly once over the ranks (padding aside), equal counts per rank."""
    real = Counter(k for rank in per_rank for k, pad in rank if not pad)
    assert set(real) == expected
    assert max(real.values()) == 1
    assert len({len(rank) for rank in per_rank}) == 1
    for rank in per_rank:
        assert all(k in expected for k, _ in rank)


# --- sources ---------------------------------------------------------------------------------


def test_metadata_is_the_same_locally_and_over_http(packed: Path, server: FolderServer) -> None:
    local = sousa_wds.metadata(packed, "train")
    remote = sousa_wds.metadata(server.url, "train")
    pd.testing.assert_frame_equal(local, remote)
    assert len(local) and {"key", "shard_path", "flac_offset", "skill_tier"} <= set(local.columns)


def test_samples_are_the_tar_members(packed: Path, members: dict) -> None:
    raw = list(sousa_wds.stream(packed, "train", decode=False, shuffle=False))
    decoded = list(sousa_wds.stream(packed, "train", shuffle=False, midi="mido"))
    meta = sousa_wds.metadata(packed, "train")
    assert _keys(raw) == _keys(decoded) == list(meta.key)  # unshuffled: metadata (shard) order
    for r, d in zip(raw, decoded):
        truth = members[r["key"]]
        assert (r["flac"], r["json"], r["mid"]) == (truth["flac"], truth["json"], truth["mid"])
        audio, rate = sf.read(io.BytesIO(truth["flac"]), dtype="float32", always_2d=True)
        assert d["audio"].dtype == np.float32 and d["audio"].shape == audio.T.shape
        np.testing.assert_array_equal(d["audio"], audio.T)  # (channels, frames)
        assert d["sample_rate"] == rate
        assert d["labels"] == json.loads(truth["json"]) and d["labels"]["sample_id"] == d["key"]
        assert isinstance(d["midi"], mido.MidiFile) and d["padding"] is False


def test_http_stream_equals_local_stream(packed: Path, server: FolderServer) -> None:
    for split in SPLITS:
        local = list(sousa_wds.stream(packed, split, seed=7))
        remote = list(sousa_wds.stream(server.url + "/", split, seed=7))
        assert _keys(local) == _keys(remote)
        for a, b in zip(local, remote):
            np.testing.assert_array_equal(a["audio"], b["audio"])
            assert a["labels"] == b["labels"]


def test_token_goes_on_every_request_and_never_into_messages(packed: Path) -> None:
    with FolderServer(packed, token=TOKEN) as srv:
        samples = list(sousa_wds.stream(srv.url, "train", decode=False, token=TOKEN))
        assert len(samples) == len(sousa_wds.metadata(packed, "train"))
        workers = sousa_wds.stream(srv.url, "train", decode=False, token=TOKEN, shuffle=False)
        pairs = [p for b in workers.loader(batch_size=2, num_workers=2, collate_fn=_pairs)
                 for p in b]
        assert len(pairs) == len(samples)
        shards = [r.path for r in srv.requests if r.path.startswith("data/")]
        assert len(set(shards)) > 1 and len(shards) > len(set(shards))  # main and workers
        assert srv.requests and all(r.authorization == f"Bearer {TOKEN}" for r in srv.requests)
        with pytest.raises(LoaderError, match="401") as denied:
            sousa_wds.stream(srv.url, "train")
        assert TOKEN not in str(denied.value)
        with pytest.raises(LoaderError, match="401") as wrong:
            sousa_wds.metadata(srv.url, token="wrong-token")
        assert "wrong-token" not in str(wrong.value)
        assert TOKEN not in repr(sousa_wds.stream(srv.url, "train", token=TOKEN).source.__dict__)


def test_request_log_shows_no_url_credentials_or_query(packed: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with FolderServer(packed) as srv:
        url = srv.url.replace("http://", "http://user:pw-s3cret@")
        sousa_wds.metadata(url, "train")
        from sousa_wds.read.http import HttpClient

        HttpClient().fetch(f"{srv.url}/manifest.json?X-Amz-Signature=sig-s3cret")
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx2"]
    assert any("metadata/train.parquet" in m for m in requests)
    assert not [m for m in caplog.messages if "s3cret" in m]


def test_http_server_without_range_support_still_streams(packed: Path) -> None:
    with FolderServer(packed, ranges=False) as srv:
        assert _keys(sousa_wds.stream(srv.url, "train", decode=False, seed=2)) == _keys(
            sousa_wds.stream(packed, "train", decode=False, seed=2))
        view = sousa_wds.SampleMap(srv.url, "train", decode=False)
        key = list(view)[-1]
        assert view[key]["key"] == key


def test_a_broken_http_body_is_resumed_where_it_stopped(packed: Path, members: dict) -> None:
    with FolderServer(packed) as srv:
        stream = sousa_wds.stream(srv.url, "train", decode=False, shuffle=False)
        srv.break_next(after_bytes=700_000)  # the first shard's body stops mid-sample
        samples = list(stream)
        assert all(s["flac"] == members[s["key"]]["flac"] for s in samples)
        assert any(r.range and not r.range.startswith("bytes=0-") for r in srv.requests)


def test_a_server_capping_range_responses_is_read_to_the_end(packed: Path,
                                                              members: dict) -> None:
    """A 206 shorter than asked (Content-Range says so) is valid: ask again for the rest."""
    cap = 256 * 1024
    with FolderServer(packed, max_range=cap) as srv:
        samples = list(sousa_wds.stream(srv.url, "train", decode=False, shuffle=False))
        assert _keys(samples) == list(sousa_wds.metadata(packed, "train").key)
        assert all(s["flac"] == members[s["key"]]["flac"] for s in samples)
        data = [r for r in srv.requests if r.path.startswith("data/")]
        assert max(r.bytes_sent for r in data) <= cap and len(data) > len(
            {r.path for r in data})
        key = samples[-1]["key"]
        assert sousa_wds.SampleMap(srv.url, "train", decode=False)[key]["flac"] == (
            members[key]["flac"])


# --- where= ----------------------------------------------------------------------------------


def test_where_opens_only_the_shards_holding_matches(packed: Path, server: FolderServer) -> None:
    meta = sousa_wds.metadata(packed, "train")
    shard = meta.shard.iloc[-1]
    query = f"shard == '{shard}' and tempo_bpm > 0"
    server.clear()
    selected = list(sousa_wds.stream(server.url, "train", where=query, decode=False))
    assert sorted(_keys(selected)) == sorted(meta.query(query).key)
    opened = {r.path for r in server.requests if r.path.startswith("data/")}
    assert opened == {f"data/{shard}"}

    tier = meta.skill_tier.iloc[0]
    server.clear()
    chosen = list(sousa_wds.stream(server.url, "train", decode=False,
                                   where=lambda m: m.skill_tier == tier))
    assert sorted(_keys(chosen)) == sorted(meta[meta.skill_tier == tier].key)
    needed = {f"data/{s}" for s in meta[meta.skill_tier == tier].shard}
    assert {r.path for r in server.requests if r.path.startswith("data/")} == needed


def test_sparse_where_reads_only_the_selected_samples(packed: Path, server: FolderServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    meta = sousa_wds.metadata(packed, "train")
    shard = meta.shard.value_counts().index[0]
    far = meta[meta.shard == shard].iloc[[0, -1]]  # a shard's first and last samples
    keys = list(far.key)
    starts, ends = far.flac_offset - 512, far.mid_offset + far.mid_size
    gap = starts.iloc[1] - ends.iloc[0]
    assert gap > 0

    def data_reads() -> list:
        server.clear()
        got = list(sousa_wds.stream(server.url, "train", where=lambda m: m.key.isin(keys),
                                    decode=False))
        assert sorted(_keys(got)) == sorted(keys)
        return [r for r in server.requests if r.path.startswith("data/")]

    # Read through a small gap (one request) or fetch each sample alone: by gap size.
    reads = data_reads()
    if gap <= HTTP_RUN_GAP:
        assert [r.bytes_sent for r in reads] == [ends.iloc[1] - starts.iloc[0]]
    monkeypatch.setattr(HttpLocation, "run_gap", 0)
    reads = data_reads()
    assert sorted(r.bytes_sent for r in reads) == sorted(ends - starts)


def test_a_where_that_selects_nothing_is_a_warning(packed: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A typo in a value (`'advancd'`) gave an empty stream without a word."""
    n = len(sousa_wds.metadata(packed, "train"))
    assert list(sousa_wds.stream(packed, "train", where="skill_tier == 'advancd'")) == []
    assert (f"where=\"skill_tier == 'advancd'\" selects none of the {n} samples of the train "
            f"split of {packed}: the stream is empty") in caplog.text
    caplog.clear()
    assert list(sousa_wds.stream(packed, "train", where="tempo_bpm > 0", decode=False))
    assert "selects none" not in caplog.text


def test_a_stream_left_suspended_exits_quietly(packed: Path) -> None:
    """Its reader was closed at interpreter exit after `os` was gone: a traceback on stderr."""
    script = ("import sys, sousa_wds\n"
              "it = iter(sousa_wds.stream(sys.argv[1], 'train', decode=False))\nnext(it)\n")
    done = subprocess.run([sys.executable, "-c", script, str(packed)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""


def test_bad_where_is_an_actionable_error(packed: Path) -> None:
    with pytest.raises(LoaderError, match="no_such_column") as info:
        sousa_wds.stream(packed, where="no_such_column > 3")
    assert "skill_tier" in str(info.value)  # lists the columns
    with pytest.raises(LoaderError, match="unknown column 'skill_teir'. Did you mean "
                       "'skill_tier'\\? Columns: "):
        sousa_wds.stream(packed, where="skill_teir == 'advanced'")
    with pytest.raises(LoaderError, match="boolean mask"):
        sousa_wds.stream(packed, where=lambda m: 3)


def test_where_callable_results_select_the_right_rows(packed: Path) -> None:
    meta = sousa_wds.metadata(packed, "train")
    fast = meta.tempo_bpm >= meta.tempo_bpm.median()
    expected = sorted(meta.key[fast])
    assert 0 < len(expected) < len(meta)

    def selected(where) -> list[str]:
        return sorted(_keys(sousa_wds.stream(packed, "train", where=where, decode=False)))

    # A merge renumbers the rows: a returned DataFrame is matched by key, not index label.
    picks = pd.DataFrame({"key": meta.key[fast].iloc[::-1]})
    assert selected(lambda m: m.merge(picks, on="key")) == expected
    # A boolean Series in another row order, or covering only some rows, is aligned by index.
    assert selected(lambda m: fast.sample(frac=1, random_state=0)) == expected
    assert selected(lambda m: fast[fast]) == expected
    with pytest.raises(LoaderError, match="index"):
        sousa_wds.stream(packed, "train", where=lambda m: fast.set_axis(fast.index + 1000))
    with pytest.raises(LoaderError, match="key column"):
        sousa_wds.stream(packed, "train", where=lambda m: m[["tempo_bpm"]].reset_index())


# --- exact-once epochs -----------------------------------------------------------------------


def _rank_epoch(packed: Path, rank: int, world: int, *, workers: int, batch: int = 3,
                **options) -> tuple[list[tuple[str, bool]], int]:
    ds = sousa_wds.stream(packed, "train", rank=rank, world_size=world, decode=False, **options)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=_pairs)
    batches = list(loader)
    return [pair for b in batches for pair in b], len(batches)


@pytest.mark.parametrize("selection", ["all", "one_shard", "three_samples"])
def test_two_ranks_two_workers_deliver_each_sample_once(packed: Path, selection: str) -> None:
    meta = sousa_wds.metadata(packed, "train")
    where = {
        "all": None,
        "one_shard": f"shard == '{meta.shard.iloc[0]}'",  # one shard for 4 rank x worker slots
        "three_samples": f"key in {list(meta.key[:3])}",  # fewer samples than slots
    }[selection]
    expected = set(meta.query(where).key) if where else set(meta.key)
    results = [_rank_epoch(packed, rank, 2, workers=2, where=where, seed=5) for rank in (0, 1)]
    _check_epoch([r[0] for r in results], expected)
    assert results[0][1] == results[1][1]  # same number of batches: DDP never waits
    padding = sum(pad for r in results for _, pad in r[0])
    assert padding == (-len(expected)) % 2


def test_drop_last_trims_to_equal_shares(packed: Path) -> None:
    meta = sousa_wds.metadata(packed, "train")
    where = f"key in {list(meta.key[:5])}"
    per_rank = [_rank_epoch(packed, r, 2, workers=2, where=where, drop_last=True)[0]
                for r in (0, 1)]
    assert [len(r) for r in per_rank] == [2, 2]
    keys = [k for r in per_rank for k, pad in r]
    assert len(set(keys)) == 4 and not any(pad for r in per_rank for _, pad in r)


def test_rank_and_world_come_from_the_environment(packed: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    meta = sousa_wds.metadata(packed, "train")
    seen = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        seen.append(_pairs(sousa_wds.stream(packed, "train", decode=False)))
    _check_epoch(seen, set(meta.key))
    with pytest.raises(LoaderError, match="rank 3"):
        sousa_wds.stream(packed, rank=3, world_size=3)
    monkeypatch.delenv("RANK")  # every process would silently be rank 0
    with pytest.raises(LoaderError, match="WORLD_SIZE=3 is set but RANK is not"):
        sousa_wds.stream(packed, "train")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert sousa_wds.stream(packed, "train").num_samples == len(meta)


def test_plan_gives_every_position_to_one_worker() -> None:
    frame = pd.DataFrame({
        "shard_path": [f"data/train-{i // 4:05d}.tar" for i in range(22)],
        "key": [f"k{i}" for i in range(22)],
        "flac_sha256": [""] * 22,
        **{f"{m}_offset": [512 + 3000 * (i % 4) + 1024 * j for i in range(22)]
           for j, m in enumerate(("flac", "json", "mid"))},
        **{f"{m}_size": [100] * 22 for m in ("flac", "json", "mid")},
    })
    rows = Rows.from_frame(frame)
    for world in (1, 3, 8, 30):
        covered = Counter()
        for rank in range(world):
            cfg = PlanConfig(seed=1, shuffle=True, shuffle_buffer=3, rank=rank,
                             world_size=world, drop_last=False)
            plans = [plan_epoch(rows, cfg, epoch=4, workers=w) for w in (1, 3)]
            for plan in plans:
                positions = np.concatenate(plan.orders)
                assert sorted(positions) == list(range(len(plan.rows)))
                assert len(plan.rows) == -(-22 // world)
            covered.update(plans[1].rows[~plans[1].padding].tolist())
        assert covered == Counter(range(22))


# --- shuffle and resume ----------------------------------------------------------------------


def test_shuffle_is_deterministic_per_seed_and_epoch(packed: Path) -> None:
    ds = sousa_wds.stream(packed, "train", decode=False, seed=11)
    first = _keys(ds)
    again = _keys(sousa_wds.stream(packed, "train", decode=False, seed=11))
    ds.set_epoch(1)
    second = _keys(ds)
    other_seed = _keys(sousa_wds.stream(packed, "train", decode=False, seed=12))
    assert first == again
    assert second != first and sorted(second) == sorted(first)
    assert other_seed != first
    assert _keys(ds) == second  # a second pass of the same epoch repeats it
    unshuffled = _keys(sousa_wds.stream(packed, "train", decode=False, shuffle=False))
    assert unshuffled == list(sousa_wds.metadata(packed, "train").key)


def test_resume_in_process_continues_the_epoch_twice(packed: Path) -> None:
    full = _keys(sousa_wds.stream(packed, "train", decode=False, seed=3))
    delivered: list[str] = []
    state = None
    for stop_after in (7, 5, None):  # interrupted twice, then run to the end
        ds = sousa_wds.stream(packed, "train", decode=False, seed=3)
        if state is not None:
            ds.load_state_dict(json.loads(json.dumps(state)))  # plain JSON: fits any checkpoint
        for i, sample in enumerate(ds):
            delivered.append(sample["key"])
            if i + 1 == stop_after:
                break
        state = ds.state_dict()
    assert delivered[:7] == full[:7]
    assert sorted(delivered) == sorted(full)
    assert state["epoch"] == 1 and state["consumed"] == []  # a finished epoch points at the next


def test_checkpoint_at_the_partial_last_batch_of_a_resumed_epoch(packed: Path) -> None:
    """Without workers the stream reaches its end while the DataLoader fills a partial last
    batch; a state saved at that batch must still count the samples of the earlier run."""
    keys = set(sousa_wds.metadata(packed, "train").key)
    batch = next(b for b in (3, 4, 6, 7) if len(keys) % b)  # a partial last batch

    def loader():
        ds = sousa_wds.stream(packed, "train", decode=False, seed=3, rank=0, world_size=1)
        return ds.loader(batch, 0, collate_fn=_keys)

    first = loader()
    got: list[str] = []
    for i, keys_of_batch in enumerate(first):
        got += keys_of_batch
        if i == 1:
            state = first.state_dict()
            break
    resumed = loader()
    resumed.load_state_dict(state)
    for keys_of_batch in resumed:
        got += keys_of_batch
        state = resumed.state_dict()  # checkpoint after every batch, the last one included
    assert sorted(got) == sorted(keys)
    # Saved at the last batch, inside the loop: the epoch with every sample delivered (what
    # follows the loop, an evaluation say, has not run yet); after the loop: the next epoch.
    assert state["epoch"] == 0 and state["consumed"] == [[0, len(keys)]]
    assert resumed.state_dict()["epoch"] == 1 and resumed.state_dict()["consumed"] == []
    again = loader()
    again.load_state_dict(state)
    assert list(again) == []  # nothing of the finished epoch is replayed
    assert again.state_dict()["epoch"] == 1


def test_the_state_follows_set_epoch_and_load_state_dict_not_a_pass_left_behind(
        packed: Path) -> None:
    """Before: set_epoch(1) at the last batch of epoch 0 saved epoch 2 (the pass's end marked
    the new epoch done); after a `break` the abandoned pass still made the state, through
    set_epoch and load_state_dict alike."""
    n = len(sousa_wds.metadata(packed, "train"))

    def loader(**options: object):
        ds = sousa_wds.stream(packed, "train", decode=False, seed=3, rank=0, world_size=1)
        return ds.loader(4, collate_fn=_keys, **options)

    first = loader()
    for i, _ in enumerate(first):
        if i == len(first) - 1:
            first.set_epoch(1)  # a loop that sets the next epoch before this one has ended
    assert first.epoch == 1 and first.state_dict()["epoch"] == 1
    assert first.state_dict()["consumed"] == []
    assert sorted(k for b in first for k in b) == sorted(
        sousa_wds.metadata(packed, "train").key)  # epoch 1 whole
    broken = loader()
    for i, _ in enumerate(broken):
        if i == 1:
            break  # steps_per_epoch reached
    assert sum(stop - start for start, stop in broken.state_dict()["consumed"]) == 8
    broken.set_epoch(1)
    fresh = broken.state_dict()
    assert fresh["epoch"] == 1 and fresh["consumed"] == []
    broken.load_state_dict({**fresh, "epoch": 2})
    assert broken.state_dict() == {**fresh, "epoch": 2}  # load, then save: the same state
    # A plain stream too: samples of the pass in progress are not the new epoch's.
    ds = sousa_wds.stream(packed, "train", decode=False, seed=3)
    for i, _ in enumerate(ds):
        if i == n - 2:
            ds.set_epoch(1)
    assert ds.state_dict()["epoch"] == 1 and ds.state_dict()["consumed"] == []
    with pytest.raises(LoaderError, match=r"\.with_epoch\(\) and \.repeat\(\)"):
        sousa_wds.stream(packed, "train", decode=False).with_epoch(30).loader(4)
    for damaged in ({**fresh, "epoch": -3}, {**fresh, "consumed": [[0, n + 5]]},
                    {**fresh, "consumed": [[3, 1]]}, {**fresh, "epoch": 1.5}):
        with pytest.raises(LoaderError, match="do not fit this stream"):
            loader().load_state_dict(damaged)


@pytest.mark.parametrize("workers_after", [2, 1])
def test_resume_with_dataloader_workers_is_exact(packed: Path, workers_after: int) -> None:
    meta = sousa_wds.metadata(packed, "train")
    per_rank = []
    states = []
    for rank in (0, 1):
        ds = sousa_wds.stream(packed, "train", decode=False, seed=9, rank=rank, world_size=2)
        loader = ds.loader(batch_size=2, num_workers=2, collate_fn=_pairs)
        loader.set_epoch(2)
        seen = []
        for i, batch in enumerate(loader):
            seen += batch
            if i == 2:
                break
        states.append(loader.state_dict())
        resumed = sousa_wds.stream(packed, "train", decode=False, seed=9, rank=rank, world_size=2)
        again = resumed.loader(batch_size=2, num_workers=workers_after, collate_fn=_pairs)
        again.load_state_dict(states[-1])
        assert again.epoch == 2
        planned = len(again)
        batches = list(again)
        assert len(batches) == planned
        rest = [pair for batch in batches for pair in batch]
        assert not {k for k, _ in seen} & {k for k, pad in rest if not pad}
        per_rank.append(seen + rest)
    _check_epoch(per_rank, set(meta.key))
    assert states[0]["consumed"] == states[1]["consumed"]  # lockstep ranks share one state


def test_state_from_another_configuration_is_refused(packed: Path) -> None:
    state = sousa_wds.stream(packed, "train", seed=1).state_dict()
    with pytest.raises(LoaderError, match="seed"):
        sousa_wds.stream(packed, "train", seed=2).load_state_dict(state)
    with pytest.raises(LoaderError, match="where"):
        sousa_wds.stream(packed, "train", seed=1, where="tempo_bpm < 0").load_state_dict(state)


# --- decoding options ------------------------------------------------------------------------


def test_mono_tensors_and_raw_midi(packed: Path) -> None:
    stereo = next(iter(sousa_wds.stream(packed, "train", shuffle=False)))
    mono = next(iter(sousa_wds.stream(packed, "train", shuffle=False, mono=True, tensors=True)))
    assert isinstance(mono["audio"], torch.Tensor) and mono["audio"].shape[0] == 1
    np.testing.assert_allclose(mono["audio"][0].numpy(), stereo["audio"].mean(axis=0), atol=1e-6)
    assert isinstance(mono["midi"], bytes) and mono["midi"].startswith(b"MThd")


def _key_audio(batch: list[dict]) -> list[tuple[str, torch.Tensor]]:
    return [(s["key"], s["audio"]) for s in batch]


@pytest.mark.parametrize("mono", [False, True])
def test_dataloader_workers_hand_over_the_decoded_tensors(packed: Path, members: dict,
                                                          mono: bool) -> None:
    ds = sousa_wds.stream(packed, "validation", tensors=True, mono=mono)
    got = [pair for batch in ds.loader(batch_size=2, num_workers=2, collate_fn=_key_audio)
           for pair in batch]
    assert sorted(k for k, _ in got) == sorted(sousa_wds.metadata(packed, "validation").key)
    for key, audio in got:
        expected, _ = decode_audio(members[key]["flac"], mono)
        assert isinstance(audio, torch.Tensor) and audio.shape == expected.shape
        np.testing.assert_array_equal(audio.numpy(), expected)


# --- random access ---------------------------------------------------------------------------


def test_random_access_reads_only_the_sample(packed: Path, server: FolderServer,
                                             members: dict) -> None:
    view = sousa_wds.SampleMap(server.url, "test", decode=False)
    meta = view.metadata
    for key in (meta.key.iloc[0], meta.key.iloc[-1]):
        server.clear()
        sample = view[key]
        assert (sample["flac"], sample["json"], sample["mid"]) == tuple(
            members[key][e] for e in ("flac", "json", "mid"))
        row = meta[meta.key == key].iloc[0]
        own = row.flac_size + row.json_size + row.mid_size
        assert len(server.requests) == 1
        assert own <= server.bytes_sent() <= own + 4 * 512 + 2 * 511  # headers + tar padding
    decoded = sousa_wds.get_sample(server.url, meta.key.iloc[1])
    assert decoded["audio"].shape[1] == meta.num_frames.iloc[1]
    assert view[0]["key"] == meta.key.iloc[0] and len(view) == len(meta)
    with pytest.raises(KeyError, match="nope"):
        view["nope"]
    with pytest.raises(LoaderError, match="no sample 'nope'"):
        sousa_wds.get_sample(packed, "nope")


def test_an_unhashable_key_is_no_sample_like_any_other(packed: Path) -> None:
    """A list as key raised a bare TypeError (unhashable) from the key index."""
    view = sousa_wds.SampleMap(packed, "test", decode=False)
    with pytest.raises(KeyError, match=re.escape("no sample ['a'] in")):
        view[["a"]]
    assert ["a"] not in view and view.get(["a"]) is None
    with pytest.raises(LoaderError, match=re.escape("no sample ['a'] in")):
        sousa_wds.get_sample(packed, ["a"])


def _corrupt(packed_copy: Path, offset_column: str, data: bytes, at: int = 0) -> tuple[str, str]:
    meta = sousa_wds.metadata(packed_copy, "train")
    row = meta.iloc[len(meta) // 2]
    path = packed_copy / row.shard_path
    blob = bytearray(path.read_bytes())
    start = int(row[offset_column]) + at
    blob[start:start + len(data)] = data
    path.write_bytes(bytes(blob))
    return row.shard, row.key


def test_random_access_checks_the_flac_hash(packed_copy: Path) -> None:
    shard, key = _corrupt(packed_copy, "flac_offset", b"\x00\x01\x02", at=5000)
    with pytest.raises(LoaderError, match="flac_sha256") as info:
        sousa_wds.get_sample(packed_copy, key)
    assert shard in str(info.value) and key in str(info.value)
    with pytest.raises(LoaderError, match="flac_sha256"):
        list(sousa_wds.stream(packed_copy, "train", decode=False, verify=True))


# --- bad shards ------------------------------------------------------------------------------


def test_corrupt_sample_error_names_shard_and_key(packed_copy: Path) -> None:
    shard, key = _corrupt(packed_copy, "flac_offset", b"XXXX")  # no FLAC magic
    with pytest.raises(LoaderError) as info:
        list(sousa_wds.stream(packed_copy, "train"))
    assert shard in str(info.value) and key in str(info.value)


def test_skip_replaces_bad_samples_and_counts_them(packed_copy: Path) -> None:
    _, key = _corrupt(packed_copy, "json_offset", b"garbage", at=-512)  # the JSON's tar header
    ds = sousa_wds.stream(packed_copy, "train", on_error="skip", seed=4)
    samples = list(ds)
    full = len(sousa_wds.metadata(packed_copy, "train"))
    assert len(samples) == full  # the count is kept: a padding repeat takes the bad one's place
    assert key not in _keys(samples)
    assert sum(s["padding"] for s in samples) == 1
    assert len(ds.skipped) == 1 and key in ds.skipped[0]


def test_read_errors_are_named_and_skippable(packed: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import sousa_wds.read.location as remote

    real_pread, calls = remote.os.pread, []

    def failing_pread(fd: int, n: int, offset: int) -> bytes:
        calls.append(offset)
        if len(calls) == 3:  # one sample's member: an I/O error of the disk or network mount
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, n, offset)

    monkeypatch.setattr(remote.os, "pread", failing_pread)
    with pytest.raises(LoaderError, match=r"data/.*\.tar.*sample .*Input/output error"):
        list(sousa_wds.stream(packed, "train", decode=False, shuffle=False))
    calls.clear()
    ds = sousa_wds.stream(packed, "train", decode=False, shuffle=False, on_error="skip")
    samples = list(ds)
    assert len(samples) == len(sousa_wds.metadata(packed, "train"))
    assert len(ds.skipped) == 1 and "Input/output error" in ds.skipped[0]


def test_corrupt_metadata_names_the_file(packed_copy: Path) -> None:
    (packed_copy / "metadata" / "train.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    relist(packed_copy, "metadata/train.parquet")  # as a broken publisher would
    with pytest.raises(LoaderError, match=r"metadata/train\.parquet in .*not a readable Parquet"):
        sousa_wds.stream(packed_copy, "train")


@pytest.mark.parametrize("remote", [False, True])
def test_truncated_shard_error_names_shard_and_key(packed_copy: Path, remote: bool) -> None:
    meta = sousa_wds.metadata(packed_copy, "train")
    row = meta.iloc[len(meta) // 2]
    path = packed_copy / row.shard_path
    path.write_bytes(path.read_bytes()[: int(row.flac_offset) + 1000])
    with FolderServer(packed_copy) as srv:
        source = srv.url if remote else packed_copy
        with pytest.raises(LoaderError) as info:
            list(sousa_wds.stream(source, "train", shuffle=False, decode=False))
        assert row.shard in str(info.value) and row.key in str(info.value)
        ds = sousa_wds.stream(source, "train", shuffle=False, decode=False, on_error="skip")
        assert len(list(ds)) == len(meta)
        lost = meta[(meta.shard == row.shard) & (meta.index_in_shard >= row.index_in_shard)]
        assert len(ds.skipped) == len(lost)


# --- bad sources, CLI, import cost -----------------------------------------------------------


def test_bad_sources_say_what_is_expected(tmp_path: Path, packed: Path) -> None:
    with pytest.raises(LoaderError, match="not a local folder"):
        sousa_wds.metadata(str(tmp_path / "missing" / "x" / "y"))
    with pytest.raises(LoaderError, match="not a finished sousa-wds pack"):
        sousa_wds.metadata(tmp_path)
    with pytest.raises(LoaderError, match="unknown split 'val'"):
        sousa_wds.metadata(packed, "val")
    with pytest.raises(LoaderError, match="hf://datasets"):
        sousa_wds.metadata("hf://models/user/name")


def test_loose_layout_is_refused_with_what_to_do(example_dataset: Path, tmp_path: Path) -> None:
    from sousa_wds.pack import pack

    loose = tmp_path / "loose"
    pack(example_dataset, loose, workers=1, progress=False, no_sharding=True)
    meta = sousa_wds.metadata(loose, "train")  # the metadata alone still reads
    key = meta.key.iloc[0]
    for attempt in (lambda: list(sousa_wds.stream(loose, "train")),
                    lambda: sousa_wds.SampleMap(loose, "train"),
                    lambda: sousa_wds.get_sample(loose, key)):
        with pytest.raises(LoaderError, match="loose layout.*--no-sharding"):
            attempt()


def test_cli_get_and_stream(packed: Path, tmp_path: Path, members: dict,
                            capsys: pytest.CaptureFixture[str]) -> None:
    key = sousa_wds.metadata(packed, "validation").key.iloc[0]
    assert main(["get", str(packed), key, "--out", str(tmp_path / "got")]) == 0
    out = capsys.readouterr().out
    assert key in out and "sha256 ok" in out and '"skill_tier"' in out
    for ext in ("flac", "json", "mid"):
        assert (tmp_path / "got" / f"{key}.{ext}").read_bytes() == members[key][ext]
    meta = sousa_wds.metadata(packed, "train")
    expected = meta[meta.tempo_bpm >= 100].key.tolist()[:3]
    assert len(expected) == 3  # the example has enough fast samples to test the limit
    assert main(["stream", str(packed), "--split", "train", "--where", "tempo_bpm >= 100",
                 "--limit", "3"]) == 0
    out = capsys.readouterr().out
    printed = [line.split()[1] for line in out.splitlines() if " bpm " in line]
    assert printed == expected and "3 samples in" in out and "samples/s" in out
    assert main(["stream", str(packed), "--split", "test", "--no-decode", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    printed = [line for line in out.splitlines() if "bytes of FLAC" in line]
    assert len(printed) == 2 and "MB/s" in out
    assert main(["get", str(packed), "no_such_key"]) == 1
    assert "no sample 'no_such_key'" in capsys.readouterr().err


def test_import_stays_light() -> None:
    code = ("import sys, sousa_wds; sousa_wds.__getattr__; "
            "heavy = [m for m in ('torch', 'webdataset', 'huggingface_hub', 'pandas') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stream_is_a_webdataset_pipeline_users_extend(packed: Path) -> None:
    import torch
    import webdataset as wds

    meta = sousa_wds.metadata(packed, "validation")
    ds = sousa_wds.stream(packed, "validation", shuffle=False)
    assert isinstance(ds, wds.DataPipeline) and isinstance(ds, torch.utils.data.IterableDataset)
    pairs = list(ds.map(lambda s: {**s, "frames": s["audio"].shape[1]}).to_tuple("key", "frames"))
    assert pairs == list(zip(meta.key, meta.num_frames))
    batches = list(ds.to_tuple("key", "sample_rate").batched(4))
    assert [len(keys) for keys, _ in batches] == [4] * (len(meta) // 4) + (
        [len(meta) % 4] if len(meta) % 4 else [])
    assert [k for keys, _ in batches for k in keys] == meta.key.tolist()
    assert all(list(rates) == [44100] * len(rates) for _, rates in batches)
    train = sousa_wds.stream(packed, "train", seed=2, decode=False)
    keys = train.map(lambda s: s["key"])  # a copy that shares the epoch with `train`
    first = list(keys)
    train.set_epoch(1)
    assert list(keys) == _keys(train) != first
