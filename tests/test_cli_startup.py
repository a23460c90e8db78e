"""The CLI's start-up path: what `sousa-wds --help` imports, and what a command leaves behind.

Speed itself is measured in benchmarks/bench_startup.py; these tests pin the causes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sousa_wds import cli
from sousa_wds.format import MANIFEST


def test_help_does_not_import_pyarrow() -> None:
    """pyarrow costs ~0.4 s of start-up: parsing arguments must not need it."""
    code = ("import sys; from sousa_wds import cli; cli.build_parser().format_help(); "
            "print(sorted(m for m in ('pyarrow', 'pandas', 'numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == "[]"


def _torch_usable() -> bool:
    return sys.modules.get("torch", "absent") is not None


def test_in_process_pack_leaves_torch_importable(
    example_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cli.main([...])` from a program must not mark torch absent for the rest of it."""
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    out = tmp_path / "out"
    assert cli.main(["pack", str(example_dataset), str(out), "--quiet", "--workers", "1"]) == 0
    assert (out / MANIFEST).is_file()
    assert _torch_usable()
    assert cli.main(["verify", str(out), "--quiet"]) == 0
    assert _torch_usable()


def test_the_command_itself_still_skips_torch_for_verify(packed: Path) -> None:
    """The console script (argv from the process) keeps verify free of torch's import."""
    code = ("import sys; from sousa_wds import cli; sys.argv = ['sousa-wds', 'verify', "
            "sys.argv[1], '--quiet']; rc = cli.main(); print(rc, sys.modules.get('torch', 1))")
    out = subprocess.run([sys.executable, "-c", code, str(packed)], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[-2:] == ["0", "None"]
