"""Real multi-process DDP: two torch.distributed ranks (gloo on 127.0.0.1, started like torchrun)
x two DataLoader workers each, over a local pack and an HTTP mirror.

One job (tests/ddp_job.py) runs every scenario, so torch is started twice, not once per test;
each test checks one property of what the ranks gathered.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import sousa_wds
from sousa_wds.pack import pack

from .httpserver import FolderServer

WORLD = 2
WORKERS = 2
BATCH = 3
SEED = 5
MIN_TEMPO = 130
WHERE = f"tempo_bpm >= {MIN_TEMPO}"  # 15 of the example's 20 train samples: odd, so padding
FEW_SHARDS = 7  # samples per shard: 20 train samples in 3 shards, fewer than WORLD * WORKERS
JOB_TIMEOUT = 300  # seconds; a rank waiting for another in a collective fails on its own first

Pairs = list[list[str | bool]]  # (key, padding) in delivery order, as JSON gives them back


@pytest.fixture(scope="module")
def few_shards(example_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("few") / "packed"
    # The library call, not cli.main: the CLI marks torch absent in its process for speed.
    pack(example_dataset, out, max_samples_per_shard=FEW_SHARDS, workers=1)
    return out


@pytest.fixture(scope="module")
def server(packed: Path):
    with FolderServer(packed) as srv:
        yield srv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scenarios(packed: Path, few_shards: Path, url: str) -> dict[str, dict]:
    common = {"batch_size": BATCH, "workers": WORKERS}
    return {
        "http": {"source": url, "token": True, "options": {"seed": SEED},
                 "epochs": [0, 1, 2], **common},
        "resume": {"source": url, "token": True, "options": {"seed": SEED}, "epoch": 1,
                   "stop_after": 2, **common},
        "few_shards": {"source": str(few_shards), "options": {"seed": SEED},
                       "epochs": [0, 1], **common},
        "where": {"source": str(packed), "options": {"seed": SEED, "where": WHERE},
                  "epochs": [0, 1], **common},
        "where_drop_last": {"source": str(packed),
                            "options": {"seed": SEED, "where": WHERE, "drop_last": True},
                            "epochs": [0], **common},
    }


@pytest.fixture(scope="module")
def ddp(packed: Path, few_shards: Path, server: FolderServer,
        tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Run the two ranks once; what each rank saw, as gathered by all_gather_object."""
    work = tmp_path_factory.mktemp("ddp")
    config, out = work / "config.json", work / "gathered.json"
    config.write_text(json.dumps(_scenarios(packed, few_shards, server.url)))
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
           "WORLD_SIZE": str(WORLD), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    if sys.platform == "linux":
        env["GLOO_SOCKET_IFNAME"] = "lo"  # the loopback, whatever the host name resolves to
    logs = [work / f"rank{r}.log" for r in range(WORLD)]
    ranks = []
    for r, log in enumerate(logs):
        with log.open("w") as sink:  # files, not pipes: a full pipe would block a rank
            ranks.append(subprocess.Popen(
                [sys.executable, "-m", "tests.ddp_job", str(config), str(out)], cwd=root,
                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=sink,
                stderr=subprocess.STDOUT))
    try:
        codes = [rank.wait(timeout=JOB_TIMEOUT) for rank in ranks]
    except subprocess.TimeoutExpired:
        for rank in ranks:
            rank.kill()
        pytest.fail(f"the DDP job hung for {JOB_TIMEOUT} s (a rank waiting for another)")
    assert codes == [0] * WORLD, "\n".join(f"rank {r} exit {c}:\n{log.read_text()[-3000:]}"
                                           for r, (c, log) in enumerate(zip(codes, logs)))
    return json.loads(out.read_text())


def _train_keys(source: Path, selected: bool = False) -> set[str]:
    meta = sousa_wds.metadata(source, "train")
    if selected:
        meta = meta[meta.tempo_bpm >= MIN_TEMPO]  # WHERE, written with pandas itself
    return set(meta.key)


def _check_epoch(per_rank: list[Pairs], expected: set[str]) -> None:
    """Every selected key once over the ranks, equal counts per rank, padding only to even out."""
    real = Counter(key for rank in per_rank for key, pad in rank if not pad)
    assert set(real) == expected
    assert max(real.values()) == 1, [k for k, n in real.items() if n > 1]
    share = -(-len(expected) // WORLD)
    assert [len(rank) for rank in per_rank] == [share] * WORLD
    padding = [key for rank in per_rank for key, pad in rank if pad]
    assert len(padding) == share * WORLD - len(expected)
    assert set(padding) <= expected


def _epoch(ddp: list[dict], scenario: str, index: int) -> list[Pairs]:
    return [rank[scenario]["epochs"][index] for rank in ddp]


def test_every_sample_once_per_epoch_with_equal_batches_per_rank(ddp: list[dict],
                                                                 packed: Path) -> None:
    expected = _train_keys(packed)
    for epoch in range(3):
        _check_epoch(_epoch(ddp, "http", epoch), expected)
    # Equal batch counts keep DDP's gradient all-reduce from waiting on a rank that ran out.
    assert len({(tuple(rank["http"]["batches"]), rank["http"]["len"]) for rank in ddp}) == 1
    assert ddp[0]["http"]["batches"] == [ddp[0]["http"]["len"]] * 3


def test_each_epoch_has_its_own_order_the_same_in_any_process(ddp: list[dict],
                                                               packed: Path) -> None:
    orders = [tuple(key for rank in _epoch(ddp, "http", e) for key, _ in rank) for e in range(3)]
    assert len(set(orders)) == 3
    # The resume scenario's fresh streams start epoch 1 exactly as the first streams did.
    for rank in ddp:
        before = rank["resume"]["before"]
        assert before == rank["http"]["epochs"][1][:len(before)]
    # And so does this process, with rank and world size passed instead of torch.distributed.
    for r in range(WORLD):
        ds = sousa_wds.stream(packed, "train", decode=False, seed=SEED, rank=r, world_size=WORLD)
        loader = ds.loader(batch_size=BATCH, num_workers=WORKERS, collate_fn=list)
        loader.set_epoch(2)
        here = [[s["key"], s["padding"]] for batch in loader for s in batch]
        assert here == ddp[r]["http"]["epochs"][2]


def test_mid_epoch_state_resumes_both_ranks_to_their_remaining_samples(ddp: list[dict],
                                                                       packed: Path) -> None:
    states = [rank["resume"]["state"] for rank in ddp]
    assert states[0] == states[1]  # ranks in lockstep: saving rank 0's state is enough
    assert states[0]["epoch"] == 1
    for rank in ddp:
        before, after = rank["resume"]["before"], rank["resume"]["after"]
        assert len(before) == 2 * BATCH and after
        uninterrupted = rank["http"]["epochs"][1]
        assert Counter(map(tuple, before + after)) == Counter(map(tuple, uninterrupted))
        assert rank["resume"]["end"]["epoch"] == 2  # the finished epoch points at the next
    assert len({len(rank["resume"]["after"]) for rank in ddp}) == 1
    _check_epoch([rank["resume"]["before"] + rank["resume"]["after"] for rank in ddp],
                 _train_keys(packed))


def test_fewer_shards_than_ranks_times_workers(ddp: list[dict], few_shards: Path) -> None:
    shards = sousa_wds.metadata(few_shards, "train")["shard"].nunique()
    assert 1 < shards < WORLD * WORKERS
    expected = _train_keys(few_shards)
    for epoch in range(2):
        _check_epoch(_epoch(ddp, "few_shards", epoch), expected)


def test_where_subset_is_padded_or_trimmed_to_equal_shares(ddp: list[dict], packed: Path) -> None:
    expected = _train_keys(packed, selected=True)
    assert len(expected) % WORLD == 1  # so the shares must be evened out
    for epoch in range(2):
        _check_epoch(_epoch(ddp, "where", epoch), expected)
    trimmed = _epoch(ddp, "where_drop_last", 0)
    assert [len(rank) for rank in trimmed] == [len(expected) // WORLD] * WORLD
    keys = [key for rank in trimmed for key, pad in rank]
    assert not any(pad for rank in trimmed for _, pad in rank)
    assert len(set(keys)) == len(keys) and set(keys) <= expected


def test_each_rank_reads_the_metadata_itself_and_its_workers_never(ddp: list[dict],
                                                                   server: FolderServer) -> None:
    """No rank waits for rank 0 or a collective to get the metadata: each downloads it once per
    stream it builds (three here: the http scenario's and the resume scenario's two), and its
    DataLoader workers fetch only shard ranges."""
    requests = server.requests
    for r in range(WORLD):
        mine = [q for q in requests if q.authorization == f"Bearer rank{r}"]
        fetched = Counter(q.path for q in mine if not q.path.startswith("data/"))
        assert fetched == {"manifest.json": 3, "metadata/train.parquet": 3}
        assert any(q.path.startswith("data/") for q in mine)
    assert all(q.authorization for q in requests)
