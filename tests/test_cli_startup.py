"""The CLI's start-up path: what `sousa-wds --help` imports, and what a command leaves behind.

Speed itself is measured in benchmarks/bench_startup.py; these tests pin the causes.
"""

from __future__ import annotations

import os
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


def test_pack_never_imports_pandas(example_dataset: Path, tmp_path: Path) -> None:
    """pyarrow's pandas shim imports pandas (~1 s) on `pa.array`/`pa.scalar`/`group_by`:
    check and pack build their arrays through `sousa_wds.arrays` instead."""
    code = ("import sys; from sousa_wds.pack import pack; "
            "pack(sys.argv[1], sys.argv[2], workers=1); print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(example_dataset), str(tmp_path / "o")],
                         check=True, capture_output=True, text=True).stdout.split()
    assert out[-1] == "False"


@pytest.mark.parametrize("typ", ["string", "binary", "int64", "int8"])
def test_arrays_column_matches_pa_array(typ: str) -> None:
    import pyarrow as pa

    from sousa_wds.arrays import column

    arrow_type = getattr(pa, typ)()
    make = {"string": lambda i: f"é{i}", "binary": lambda i: bytes([i % 256]) * (i % 4),
            "int64": lambda i: i * 7 - 50, "int8": lambda i: i % 100 - 50}[typ]
    for values in ([], [make(1)], [make(i) for i in range(19)],
                   [None if i % 3 == 0 else make(i) for i in range(19)], [None]):
        got = column(values, arrow_type)
        got.validate(full=True)
        assert got.equals(pa.array(values, arrow_type))


def test_repeated_label_rows_with_null_index_are_found() -> None:
    import pyarrow as pa

    from sousa_wds.source.checks import _RowKeys

    keys = _RowKeys(pa.array(["a", "b"]))
    keys.add(pa.array(["a", "a", "b", "b", "b"]), pa.array([None, None, 1, 2, 1], pa.int64()))
    keys.finish(None)  # type: ignore[arg-type]  (no second pass: rows are contiguous)
    assert keys.repeated() == ["a index None", "b index 1"]


@pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64",
                    reason="the pool is chosen on x86-64 Linux only")
def test_check_and_pack_give_arrow_a_pool_that_hands_memory_back(example_dataset: Path,
                                                                  tmp_path: Path) -> None:
    """The command itself picks jemalloc for all of Arrow, C++ included (the Parquet writer
    allocates there; with the wheels' mimalloc the pack parent kept ~60 MB more), freeing
    pages at once in every arena (decay 0 by the environment), before pyarrow loads; a program
    calling `main([...])` keeps its own pool."""
    code = ("import sys; from sousa_wds import cli; sys.argv = ['sousa-wds', *sys.argv[1:]]; "
            "rc = cli.main(); import os, pyarrow as pa; "
            "print(os.environ['JE_ARROW_MALLOC_CONF'], rc, pa.default_memory_pool().backend_name)")
    for argv in (["check", str(example_dataset)],
                 ["pack", str(example_dataset), str(tmp_path / "out"), "--quiet"]):
        out = subprocess.run([sys.executable, "-c", code, *argv], check=True,
                             capture_output=True, text=True).stdout.split()
        assert out[-3:] == ["dirty_decay_ms:0,muzzy_decay_ms:0", "0", "jemalloc"], argv
    code = ("import sys; from sousa_wds import cli; rc = cli.main(['check', sys.argv[1]]); "
            "import pyarrow as pa; print(rc, pa.default_memory_pool().backend_name)")
    out = subprocess.run([sys.executable, "-c", code, str(example_dataset)], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[-2] == "0" and out[-1] != "jemalloc"
