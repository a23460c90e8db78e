"""Each script of examples/ runs against a packed example folder (in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str | Path, timeout: float = 240) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_train_pytorch_trains_and_resumes(packed: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.pt"
    first = run("train_pytorch.py", packed, "--epochs", "2", "--workers", "2", "--batch-size",
                "4", "--max-steps", "2", "--checkpoint", checkpoint)
    assert checkpoint.exists() and "epoch 0" in first
    rest = run("train_pytorch.py", packed, "--epochs", "2", "--workers", "2", "--batch-size", "4",
               "--checkpoint", checkpoint)
    assert "resuming epoch 0" in rest and "epoch 1:" in rest


def test_query_metadata(packed: Path) -> None:
    out = run("query_metadata.py", packed)
    assert "pandas" in out and "duckdb" in out and "first match" in out


def test_random_access(packed: Path, tmp_path: Path) -> None:
    out = run("random_access.py", packed, tmp_path / "out")
    assert "best-scored" in out and len(list((tmp_path / "out").iterdir())) == 3
    assert "row 1 via load_audio: (" in out


@pytest.mark.filterwarnings("ignore")
def test_load_with_datasets(packed: Path) -> None:
    out = run("load_with_datasets.py", packed)
    assert out.count(" Hz, ") == 3 and "metadata:" in out
