"""Shared fixtures: one small real SOUSA dataset and one packed copy per test session.

Tests that change files copy these first; the session copies stay pristine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


# Set by .ci/run: there a decoder that cannot load is a broken install, not a reason to skip.
REQUIRE_DECODE_ENV = "SOUSA_WDS_REQUIRE_DECODE"
_DECODE_PROBE = (
    "import sys; from torchcodec.decoders import AudioDecoder; "
    "AudioDecoder(sys.argv[1]).get_all_samples()"
)


@pytest.fixture(scope="session")
def audio_decoding(example_dataset: Path) -> None:
    """Skip, with the reason, where `datasets` cannot decode audio.

    `datasets`' Audio feature decodes through torchcodec, which needs FFmpeg's shared libraries;
    importing torchcodec alone succeeds without them and the decode then fails. So one real
    FLAC is decoded once, in a subprocess (torchcodec costs ~800 MB and seconds to load).
    """
    flac = next((example_dataset / "audio").rglob("*.flac"))
    probe = subprocess.run([sys.executable, "-c", _DECODE_PROBE, str(flac)],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode == 0:
        return
    last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
    reason = (f"torchcodec cannot decode FLAC here ({last}); install FFmpeg's libraries "
              "(Debian: apt-get install ffmpeg) and the test extra")
    if os.environ.get(REQUIRE_DECODE_ENV) == "1":
        pytest.fail(reason)
    pytest.skip(reason)
