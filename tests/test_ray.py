"""Ray Data: `ray_dataset` against `stream()` from a folder, an HTTP mirror and the Hub, the read
plan, `where=` reading only the selected bytes, batch inference and torch batches, and Ray's own
`read_webdataset` reading our shards unchanged; `pack --ray` against a one-worker pack, interrupted
and resumed. One local Ray instance for the module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import ray
import ray.data

import sousa_wds
from sousa_wds.errors import LoaderError
from sousa_wds.format import MANIFEST, MEMBERS
from sousa_wds.pack import STATE_DIR, PackProgress, pack, ray_pool
from sousa_wds.ray_data import plan_reads
from sousa_wds.read.samples import Rows

from .conftest import SHARD_SIZE
from .httpserver import FolderServer
from .hubserver import DEFAULT_TOKEN, HubServer

TOKEN = "secret-ray-token"
REPO = "testuser/sousa-ray"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _by_key(samples) -> dict:
    return {s["key"]: s for s in samples}


def _rms(batch: dict) -> dict:
    """Batch inference: one number per sample from its audio."""
    return {"key": batch["key"],
            "rms": np.array([float(np.sqrt(np.mean(np.square(a)))) for a in batch["audio"]],
                            dtype=np.float32)}


def test_plan_reads_cuts_the_selection_by_shard_into_about_parallelism_runs(
        packed: Path) -> None:
    frame = sousa_wds.metadata(packed, "train")
    rows = Rows.from_frame(frame)
    shards = frame.shard_path.nunique()
    assert shards > 1
    for parallelism in (1, shards, 7, 1000):
        plans = plan_reads(rows, parallelism)
        order = np.concatenate([p.rows for p in plans])
        np.testing.assert_array_equal(order, np.arange(len(frame)))  # every row once, in order
        for p in plans:
            assert set(frame.shard_path.iloc[p.rows]) == {p.shard}  # never across shards
            assert p.nbytes == int((rows.end[p.rows] - rows.start[p.rows]).sum())
        assert len({p.shard for p in plans}) == shards
        assert shards <= len(plans) <= max(shards, parallelism) + shards
    assert len(plan_reads(rows, 1)) == shards
    assert len(plan_reads(rows, 1000)) == len(frame)
    assert plan_reads(Rows.from_frame(frame.iloc[:0]), 4) == []


def test_ray_dataset_equals_stream_and_runs_batch_inference_and_torch_batches(
        packed: Path) -> None:
    ds = sousa_wds.ray_dataset(packed, "train")
    expected = _by_key(sousa_wds.stream(packed, "train", shuffle=False))
    rows = ds.take_all()
    assert sorted(r["key"] for r in rows) == sorted(expected)
    for row in rows:
        sample = expected[row["key"]]
        assert set(row) == set(sample) - {"padding"}
        np.testing.assert_array_equal(row["audio"], sample["audio"])
        assert row["audio"].dtype == np.float32
        assert row["labels"] == sample["labels"]
        assert (row["midi"], row["sample_rate"]) == (sample["midi"], sample["sample_rate"])

    scored = ds.map_batches(_rms, batch_size=4)
    rms = {r["key"]: r["rms"] for r in scored.take_all()}
    assert rms == pytest.approx({k: _rms({"key": [k], "audio": [s["audio"]]})["rms"][0]
                                 for k, s in expected.items()})
    batches = list(scored.select_columns(["rms"]).iter_torch_batches(batch_size=8))
    assert sum(len(b["rms"]) for b in batches) == len(expected)
    assert str(batches[0]["rms"].dtype) == "torch.float32"


def test_where_over_http_reads_only_the_selected_samples_with_the_token(packed: Path) -> None:
    frame = sousa_wds.metadata(packed, "train")
    middle = frame.groupby("shard_path").key.transform(lambda k: np.arange(len(k)) == len(k) // 2)
    wanted = frame[middle & frame.shard_path.isin(frame.shard_path.unique()[:2])]
    where = f"key in [{', '.join(repr(k) for k in wanted.key)}]"
    with FolderServer(packed, token=TOKEN) as server:
        ds = sousa_wds.ray_dataset(f"{server.url}/", "train", where=where, decode=False,
                                   token=TOKEN, verify=True)
        rows = ds.take_all()
        requests = server.requests
    assert TOKEN not in repr(ds) and TOKEN not in str(ds.stats())
    assert sorted(r["key"] for r in rows) == sorted(wanted.key)
    expected = _by_key(sousa_wds.stream(packed, "train", where=where, decode=False))
    for row in rows:
        assert {m: row[m] for m in MEMBERS} == {m: expected[row["key"]][m] for m in MEMBERS}
    assert all(r.authorization == f"Bearer {TOKEN}" for r in requests)
    shard_requests = [r for r in requests if r.path.startswith("data/")]
    assert {r.path for r in shard_requests} == set(wanted.shard_path)
    wanted_rows = Rows.from_frame(wanted)
    assert len(wanted_rows) == 2 and len(set(wanted.shard_path)) == 2
    for shard in set(wanted.shard_path):
        sent = sum(r.bytes_sent for r in shard_requests if r.path == shard)
        mine = wanted.shard_path.to_numpy() == shard
        assert sent == int((wanted_rows.end - wanted_rows.start)[mine].sum())  # no more
        assert sent < (packed / shard).stat().st_size


def test_ray_dataset_from_the_hub_at_a_pinned_revision(
        packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with HubServer(tmp_path / "hub") as hub:
        hub.create_repo(REPO, private=True)
        hub.put_files(REPO, {p.relative_to(packed).as_posix(): p.read_bytes()
                             for p in sorted(packed.rglob("*")) if p.is_file()})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        commit = hub.commits(REPO)[-1].oid
        ds = sousa_wds.ray_dataset(REPO, "validation", revision=commit, token=DEFAULT_TOKEN,
                                   decode=False)
        keys = sorted(r["key"] for r in ds.select_columns(["key"]).take_all())
        hub_requests = [r for r in hub.log if r.server == "hub"]
    assert keys == sorted(sousa_wds.metadata(packed, "validation").key)
    assert any("/data/" in r.decoded_path for r in hub_requests)
    assert all(r.token == DEFAULT_TOKEN for r in hub_requests)
    with pytest.raises(LoaderError, match="revision"):
        sousa_wds.ray_dataset(packed, revision="main")


def test_ray_read_webdataset_reads_our_shards_unchanged(packed: Path) -> None:
    frame = sousa_wds.metadata(packed, "test")
    paths = [str(packed / p) for p in frame.shard_path.unique()]
    rows = ray.data.read_webdataset(paths, decoder=None).take_all()
    expected = _by_key(sousa_wds.stream(packed, "test", shuffle=False, decode=False))
    assert sorted(r["__key__"] for r in rows) == sorted(expected)
    for row in rows:
        sample = expected[row["__key__"]]
        assert {m: row[m] for m in MEMBERS} == {m: sample[m] for m in MEMBERS}


# --- sousa-wds pack --ray ---------------------------------------------------------------------

def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_pack_with_ray_is_byte_identical_to_one_worker_and_resumes(
        example_dataset: Path, packed: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    written: list[str] = []
    run_ray = ray_pool.run_ray

    def spy(tasks, address, progress):  # run_ray itself, noting which shards it was given
        written.extend(t.name for t in tasks)
        return run_ray(tasks, address, progress)

    monkeypatch.setattr(ray_pool, "run_ray", spy)

    def interrupt(p: PackProgress) -> None:
        if p.samples:  # the first shard is done and recorded
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack(example_dataset, out, shard_size=SHARD_SIZE, ray=True, progress=interrupt)
    assert not (out / MANIFEST).exists()
    recorded = len(list((out / STATE_DIR / "shards").glob("*.json")))
    assert recorded >= 1
    assert not list(out.rglob("*.partial"))  # cancelled tasks left no partial shard
    summary = pack(example_dataset, out, shard_size=SHARD_SIZE, ray=True, resume=True)
    assert summary.reused_shards >= recorded
    assert summary.reused_shards < summary.shards  # the rest was written by Ray tasks
    assert _tree(out) == _tree(packed)  # packed: workers=1
    # Every shard went to Ray tasks: all in the first run, the unfinished ones in the second.
    assert len(written) == 2 * summary.shards - summary.reused_shards
