"""Decoding on threads inside one process (`stream(..., decode_threads=N)`): the same samples in
the same order as inline decoding, the same resume state, bounded read-ahead, errors named."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import sousa_wds
from sousa_wds.errors import LoaderError
from sousa_wds.read.epoch import default_decode_threads
from sousa_wds.read.samples import in_order

from .test_loader import _corrupt, _keys


def _same_samples(a: list[dict], b: list[dict]) -> None:
    assert [(s["key"], s["padding"]) for s in a] == [(s["key"], s["padding"]) for s in b]
    for x, y in zip(a, b):
        assert x["sample_rate"] == y["sample_rate"] and x["labels"] == y["labels"]
        assert x["midi"] == y["midi"]
        np.testing.assert_array_equal(x["audio"], y["audio"])


def test_threads_deliver_the_inline_samples_in_the_inline_order(packed: Path) -> None:
    total = len(sousa_wds.metadata(packed, "train"))
    world = next(w for w in range(2, total) if total % w)  # the last rank gets padding
    options = {"seed": 5, "verify": True, "rank": world - 1, "world_size": world}
    inline = list(sousa_wds.stream(packed, "train", **options))
    threaded = list(sousa_wds.stream(packed, "train", decode_threads=3, **options))
    assert any(s["padding"] for s in inline)
    _same_samples(threaded, inline)


def test_results_follow_the_input_order_whatever_finishes_first() -> None:
    def slow_first(i: int) -> int:
        time.sleep(0.02 if i % 3 == 0 else 0.0)  # later items finish before earlier ones
        return i * 10

    assert list(in_order(slow_first, range(20), 3)) == [i * 10 for i in range(20)]


def test_read_ahead_is_bounded_and_closing_stops_reading() -> None:
    pulled: list[int] = []
    started = threading.Event()

    def items():
        for i in range(1000):
            pulled.append(i)
            yield i

    def work(i: int) -> int:
        started.set()
        return i

    results = in_order(work, items(), 2)
    for taken, value in enumerate(results, 1):
        assert value == taken - 1
        assert len(pulled) - taken <= 2 * 2  # never more than 2 * threads in flight
        if taken == 10:
            break
    results.close()
    assert started.is_set() and len(pulled) <= 10 + 2 * 2 + 1


def test_resume_state_counts_only_delivered_samples(packed: Path) -> None:
    """Samples decoded ahead but not yet handed out are not in the state: a checkpoint with
    threads equals the one without, and resuming delivers every sample exactly once."""
    full = _keys(sousa_wds.stream(packed, "train", decode=False, seed=3))
    states = []
    for threads in (1, 3, None):
        ds = sousa_wds.stream(packed, "train", seed=3, decode_threads=threads)
        got = []
        for sample in ds:
            got.append(sample["key"])
            if len(got) == 4:
                break
        assert got == full[:4]
        states.append(ds.state_dict())
    assert states[0] == states[1] == states[2]
    resumed = sousa_wds.stream(packed, "train", seed=3, decode_threads=2)
    resumed.load_state_dict(json.loads(json.dumps(states[1])))
    rest = _keys(resumed)
    assert sorted(full[:4] + rest) == sorted(full)


def test_bad_samples_are_named_or_skipped_with_threads(packed_copy: Path) -> None:
    shard, key = _corrupt(packed_copy, "flac_offset", b"XXXX")  # no FLAC magic
    with pytest.raises(LoaderError) as info:
        list(sousa_wds.stream(packed_copy, "train", decode_threads=2))
    assert shard in str(info.value) and key in str(info.value)
    ds = sousa_wds.stream(packed_copy, "train", decode_threads=2, on_error="skip", seed=4)
    samples = list(ds)
    assert len(samples) == len(sousa_wds.metadata(packed_copy, "train"))
    assert key not in _keys(samples) and sum(s["padding"] for s in samples) == 1
    assert len(ds.skipped) == 1 and key in ds.skipped[0]


def test_default_threads_share_the_cores_among_dataloader_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert [default_decode_threads(w) for w in (1, 2, 3, 8, 16)] == [4, 4, 2, 1, 1]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert [default_decode_threads(w) for w in (1, 2)] == [2, 1]


@pytest.mark.parametrize("threads", [0, -1, 1.5])
def test_decode_threads_must_be_a_positive_integer(packed: Path, threads: object) -> None:
    with pytest.raises(LoaderError, match="decode_threads"):
        sousa_wds.stream(packed, "train", decode_threads=threads)
