"""Shared fixtures: one small real SOUSA dataset and one packed copy per test session.

Tests that change files copy these first; the session copies stay pristine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sousa_wds.example import make_example
from sousa_wds.pack import pack

EXAMPLE_SAMPLES = 40
SHARD_SIZE = 2_000_000  # small shards: several per split, so cross-shard logic is exercised


@pytest.fixture(scope="session")
def example_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sousa") / "dataset"
    make_example(root, samples=EXAMPLE_SAMPLES, seed=1)
    return root


@pytest.fixture(scope="session")
def packed(tmp_path_factory: pytest.TempPathFactory, example_dataset: Path) -> Path:
    out = tmp_path_factory.mktemp("packed") / "out"
    pack(example_dataset, out, shard_size=SHARD_SIZE, workers=1, progress=False)
    return out


def _writable_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    for path in target.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)  # the generator writes labels 0600
    return target


@pytest.fixture
def dataset_copy(tmp_path: Path, example_dataset: Path) -> Path:
    """A private, writable copy of the example dataset."""
    return _writable_copy(example_dataset, tmp_path / "dataset")


@pytest.fixture
def packed_copy(tmp_path: Path, packed: Path) -> Path:
    """A private, writable copy of the packed example."""
    return _writable_copy(packed, tmp_path / "packed")
