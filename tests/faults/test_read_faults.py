"""Issue 9, reader side: hostile queries, changed members, flaky HTTP, crafted packs.

Each test names the fault it injects and asserts the named error or the exact-once delivery.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import sousa_wds
from sousa_wds.cli import main
from sousa_wds.errors import (
    HttpError,
    IntegrityError,
    LoaderError,
    MissingFile,
    QueryError,
    ShortRead,
)
from sousa_wds.read import http, samples
from sousa_wds.read.samples import header_problem

from ..httpserver import FolderServer
from .craft import member_bytes, rewrite_metadata
from .faultserver import Fault, FaultServer

ROOT = Path(__file__).resolve().parents[2]


# --- helpers: rewrite a packed copy -----------------------------------------------------------


def _patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _rename_member(shard: Path, data_offset: int, name: str) -> None:
    """Give the member whose data starts at `data_offset` a new name (valid checksum)."""
    with open(shard, "r+b") as fh:
        fh.seek(data_offset - 512)
        header = bytearray(fh.read(512))
        header[0:100] = name.encode().ljust(100, b"\0")
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        fh.seek(data_offset - 512)
        fh.write(header)


@pytest.fixture
def v2(packed_copy: Path) -> Path:
    """A writable pack whose metadata has every member's sha256 (FORMAT_VERSION 2)."""
    columns = set(sousa_wds.metadata(packed_copy, "test").columns)
    assert {"flac_sha256", "json_sha256", "mid_sha256"} <= columns
    return packed_copy


@pytest.fixture(scope="module")
def faulty(packed: Path):
    with FaultServer(packed) as server:
        yield server


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Pauses the client asked for, recorded instead of slept."""
    asked: list[float] = []
    monkeypatch.setattr(time, "sleep", asked.append)
    return asked


# --- 9.2: where= strings never run code ---------------------------------------------------------


def test_where_strings_cannot_run_code(packed: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    attacks = [f"@os.system('touch {marker}') == 0",
               f"@os.system('touch {marker}') == 0 or tempo_bpm > 0",
               f"__import__('os').system('touch {marker}') == 0",
               "@sys.exit(3)",
               "key.__class__ == 1"]
    for attack in attacks:
        with pytest.raises(QueryError):
            sousa_wds.stream(packed, "train", where=attack)
    assert not marker.exists()


@pytest.mark.parametrize("query", [
    "skill_tier == 'advanced' and tempo_bpm >= 100",
    "tempo_bpm < 90 or not (skill_tier != 'beginner')",
    "skill_tier in ['advanced', 'professional'] & ~(tempo_bpm > 150)",
    "skill_tier not in [\"beginner\"] | tempo_bpm == 60",
    "rudiment_slug.str.contains('roll')",
    "rudiment_slug.str.startswith('single') and overall_score > -1.5",
    "100 < tempo_bpm",  # a literal on the left (was AttributeError)
    "60 <= tempo_bpm < 150 and -1.5 >= overall_score",
    "tempo_bpm > 100 and not False",  # was refused: ~False is -1, not a condition
    "not (not True) & (tempo_bpm == 60)",
    "tempo_bpm == 60.0 or tempo_bpm == 1e2",
])
def test_where_grammar_selects_what_pandas_selects(packed: Path, query: str) -> None:
    meta = sousa_wds.metadata(packed, "train")
    got = [s["key"] for s in sousa_wds.stream(packed, "train", where=query, decode=False,
                                              shuffle=False)]
    assert sorted(got) == sorted(meta.query(query).key)  # pandas on a trusted, known string


@pytest.mark.parametrize(("query", "named"), [
    ("tempo_bpm >= 100; import os", "';' at position 16"),
    ("tempo_bpm.mean() > 3", "'mean'"),
    ("no_such == 1", "unknown column 'no_such'"),
    ("tempo_bpm in 3", "needs a [...] list"),
    ("tempo_bpm", "is not a condition"),
    # Each of these escaped as another exception before (RecursionError, SyntaxError,
    # ValueError, AttributeError).
    ("(" * 3000 + "tempo_bpm > 1" + ")" * 3000, "more than 50 levels of parentheses and not"),
    ("not " * 3000 + "tempo_bpm > 1", "more than 50 levels"),
    ("tempo_bpm > " + "9" * 5000, "a number of more than 50 characters"),
    ("key == '\\N{NO SUCH NAME}'", "not a valid string literal"),
    ("key == '\\x4'", "not a valid string literal"),
    ("key == 'a\x00'", "not a valid string literal"),
    ("tempo_bpm == [60, 80]", "a [...] list goes after 'in' or 'not in', not next to '=='"),
    ("[60] < tempo_bpm", "a [...] list goes after 'in'"),
    ("60 < 70", "a comparison needs a column on one side, found '<' at position 3"),
    ("60 in [60]", "'in' needs a column on its left"),
])
def test_where_refusals_name_the_token(packed: Path, query: str, named: str) -> None:
    with pytest.raises(QueryError, match=re.escape(named)) as error:
        sousa_wds.stream(packed, "train", where=query)
    # A long query is quoted cut, with its length: a line, not the query again.
    assert len(query) <= 200 or len(str(error.value)) < min(len(query), 1000)


def test_cli_where_with_a_literal_on_the_left(packed: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stream", str(packed), "--no-decode", "--where", "60 < tempo_bpm"]) == 0
    fast = len(sousa_wds.metadata(packed, "train").query("tempo_bpm > 60"))
    assert f"{fast} samples selected in train" in capsys.readouterr().out


# --- 9.5: every member is checked against its sha256 --------------------------------------------


def _change_member(folder: Path, split: str, ext: str) -> str:
    """Change one byte inside a member of the split's first sample (same length); its key."""
    row = next(sousa_wds.metadata(folder, split).itertuples())
    data = member_bytes(folder, row, ext)
    at = data.index(b"0") if ext == "json" else len(data) // 2  # a digit of a score
    changed = b"1" if ext == "json" else bytes([data[at] ^ 0x01])
    _patch(folder / row.shard_path, getattr(row, f"{ext}_offset") + at, changed)
    return row.key


@pytest.mark.parametrize("ext", ["json", "mid", "flac"])
def test_changed_member_is_caught_when_verifying(v2: Path, ext: str) -> None:
    key = _change_member(v2, "validation", ext)
    with pytest.raises(IntegrityError, match=rf"{key}\.{ext} does not match {ext}_sha256"):
        list(sousa_wds.stream(v2, "validation", decode=False, verify=True))
    with pytest.raises(IntegrityError, match=f"{ext}_sha256"):
        sousa_wds.get_sample(v2, key, decode=False)
    unchecked = list(sousa_wds.stream(v2, "validation", decode=False, verify=False))
    assert key in {s["key"] for s in unchecked}  # verify=False trusts the bytes (documented)


def test_cli_get_does_not_say_ok_for_a_changed_json(v2: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    key = _change_member(v2, "test", "json")
    assert main(["get", str(v2), key]) == 1
    captured = capsys.readouterr()
    assert "sha256 ok" not in captured.out and "json_sha256" in captured.err


def test_cli_get_names_every_member_it_checked(v2: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    key = sousa_wds.metadata(v2, "test").key.iloc[0]
    assert main(["get", str(v2), key]) == 0
    assert "sha256 ok: flac, json, mid" in capsys.readouterr().out


# --- 9.6: HTTP faults ---------------------------------------------------------------------------


def _local(packed: Path, split: str = "validation") -> list[dict]:
    return list(sousa_wds.stream(packed, split, decode=False, shuffle=False))


def _same(a: list[dict], b: list[dict]) -> None:
    assert [s["key"] for s in a] == [s["key"] for s in b]
    for x, y in zip(a, b):
        assert (x["flac"], x["json"], x["mid"]) == (y["flac"], y["json"], y["mid"])


def test_retry_after_is_honoured(packed: Path, faulty: FaultServer, sleeps: list[float]) -> None:
    faulty.clear()
    faulty.add("metadata/", Fault("status", status=429, retry_after="7"),
               Fault("status", status=503, retry_after="2"))
    remote = sousa_wds.metadata(faulty.url, "validation")
    assert remote.key.tolist() == sousa_wds.metadata(packed, "validation").key.tolist()
    assert len(sleeps) == 2 and 7 <= sleeps[0] <= 7.7 and 2 <= sleeps[1] <= 2.2


@pytest.mark.parametrize("status", [404, 403])
def test_an_error_with_an_endless_body_is_reported_without_reading_it(
    packed: Path, faulty: FaultServer, status: int
) -> None:
    """An error page is quoted, not downloaded: a server may stream one without end."""
    faulty.clear()
    faulty.add("metadata/", Fault("endless", status=status, after=256 << 20))
    with pytest.raises(MissingFile if status == 404 else HttpError, match=f"HTTP {status}"):
        sousa_wds.metadata(faulty.url, "validation")
    sent = max(r.bytes_sent for r in faulty.requests if r.fault == "endless")
    assert sent < 32 << 20  # what the sockets buffer, not the 256 MB on offer


def test_a_small_file_that_breaks_off_is_resumed(packed: Path, faulty: FaultServer,
                                                 sleeps: list[float]) -> None:
    faulty.clear()
    faulty.add("metadata/", Fault("fin", after=1000), Fault("fin", after=3000),
               Fault("reset", after=2000))
    remote = sousa_wds.metadata(faulty.url, "validation")
    assert remote.equals(sousa_wds.metadata(packed, "validation"))
    size = (packed / "metadata" / "validation.parquet").stat().st_size
    ranges = [r.range for r in faulty.requests if r.path.startswith("metadata/")]
    assert ranges[:3] == [None, f"bytes=1000-{size - 1}", f"bytes=4000-{size - 1}"]
    # After an RST the client keeps what it received before it (at most 2000 bytes more).
    assert len(ranges) == 4 and 4000 <= int(ranges[3][6:].split("-")[0]) <= 6000


def test_backoff_grows_with_jitter_and_the_budget_is_configurable(
        faulty: FaultServer, sleeps: list[float], monkeypatch: pytest.MonkeyPatch) -> None:
    faulty.clear()
    faulty.add("manifest.json", *[Fault("status", status=503)] * 10)
    monkeypatch.setenv("SOUSA_WDS_RETRIES", "4")
    with pytest.raises(HttpError, match=r"503.*after 5 tries.*retries=") as failed:
        sousa_wds.metadata(faulty.url, "validation")
    assert failed.value.status == 503
    assert len([r for r in faulty.requests if r.path == "manifest.json"]) == 5
    assert sleeps[0] == 0 and all(b > a for a, b in zip(sleeps[1:], sleeps[2:]))
    faulty.clear()
    faulty.add("manifest.json", *[Fault("status", status=503)] * 10)
    with pytest.raises(HttpError, match="after 2 tries"):
        sousa_wds.stream(faulty.url, "validation", retries=1)
    assert len(faulty.requests) == 2


def test_breaks_that_make_progress_never_use_up_the_budget(
        packed: Path, faulty: FaultServer, sleeps: list[float]) -> None:
    faulty.clear()
    # Far more breaks than the budget (6), each after some progress: RST and FIN alternating.
    faulty.add("data/", *[Fault(kind, after=30_000) for kind in ("reset", "fin") * 8])
    remote = list(sousa_wds.stream(faulty.url, "validation", decode=False, shuffle=False))
    _same(_local(packed), remote)
    assert faulty.pending == 0  # every fault was met
    assert len([r for r in faulty.requests if r.path.startswith("data/")]) >= 17


def test_breaks_without_progress_give_up_with_the_byte_named(
        faulty: FaultServer, sleeps: list[float]) -> None:
    faulty.clear()
    faulty.add("data/", *[Fault("reset", after=0)] * 20)
    with pytest.raises(LoaderError, match=r"broke 3 times in a row at byte \d+ without progress"):
        list(sousa_wds.stream(faulty.url, "validation", decode=False, retries=2))


def test_a_stalled_body_times_out_and_resumes(packed: Path, faulty: FaultServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "TIMEOUT_S", 0.5)
    monkeypatch.setattr(http, "_shared", None)  # a client made with the short timeout
    faulty.clear()
    faulty.add("data/", Fault("stall", after=5_000, seconds=20))
    _same(_local(packed), list(sousa_wds.stream(faulty.url, "validation", decode=False,
                                                shuffle=False)))
    assert faulty.pending == 0


def test_wrong_bytes_from_a_mirror_are_caught(packed: Path, faulty: FaultServer) -> None:
    row = sousa_wds.metadata(packed, "validation").iloc[0]
    faulty.clear()
    faulty.add(row.shard_path, Fault("flip", at=int(row.flac_offset) + 100))
    with pytest.raises(IntegrityError, match=f"{row.key}.flac does not match flac_sha256"):
        list(sousa_wds.stream(faulty.url, "validation", decode=False, verify=True,
                              shuffle=False))


def _silent_flip(path: Path) -> int:
    """An offset in `path` (Parquet) whose byte, inverted, still parses but changes tempo_bpm:
    the last byte of that column's dictionary page, a value stored as is."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    column = next(meta.column(i) for i in range(meta.num_columns)
                  if meta.column(i).path_in_schema == "tempo_bpm")
    at = column.data_page_offset - 1
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    changed = pq.read_table(io.BytesIO(bytes(data))).column("tempo_bpm")
    assert changed != pq.read_table(path).column("tempo_bpm")  # parses, other labels
    return at


def test_metadata_from_a_mirror_is_checked_against_the_manifest(packed: Path,
                                                                faulty: FaultServer) -> None:
    """A flipped byte in the metadata may parse and change labels: only its sha256 in the
    manifest tells (it did not: tempo_bpm 60 was read as -196)."""
    path = packed / "metadata" / "validation.parquet"
    for at in (_silent_flip(path), path.stat().st_size // 2):
        faulty.clear()
        faulty.add("metadata/validation.parquet", Fault("flip", at=at))
        with pytest.raises(IntegrityError, match=r"metadata/validation\.parquet in http://"
                                                 r".*does not match its sha256 in manifest\.json"):
            sousa_wds.metadata(faulty.url, "validation")
    faulty.add("metadata/validation.parquet", Fault("flip", at=_silent_flip(path)))
    with pytest.raises(IntegrityError, match="validation.parquet"):
        sousa_wds.stream(faulty.url, "validation", verify=True)
    assert sousa_wds.metadata(faulty.url, "validation").equals(
        sousa_wds.metadata(packed, "validation"))


def test_changed_local_metadata_is_refused(packed_copy: Path) -> None:
    path = packed_copy / "metadata" / "test.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"metadata/test.parquet in {packed_copy}"):
        sousa_wds.SampleMap(packed_copy, "test")
    path.write_bytes(bytes(data) + b"\0")
    with pytest.raises(IntegrityError, match=r"is \d+ bytes where manifest\.json says \d+"):
        sousa_wds.metadata(packed_copy, "test")


def test_truncated_shard_over_http_is_a_short_read(packed_copy: Path) -> None:
    row = sousa_wds.metadata(packed_copy, "validation").iloc[-1]
    shard = packed_copy / row.shard_path
    shard.write_bytes(shard.read_bytes()[:int(row.flac_offset) + 10])
    with FaultServer(packed_copy) as server, pytest.raises(LoaderError, match="ends at byte"):
        list(sousa_wds.stream(server.url, "validation", decode=False, shuffle=False))


# --- 9.8 / 9.9: crafted packs -------------------------------------------------------------------


def test_get_out_never_writes_outside_the_folder(packed_copy: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    row = sousa_wds.metadata(packed_copy, "test").iloc[0]
    evil = "../../evil"
    for ext in ("flac", "json", "mid"):  # a hostile mirror: tar names and metadata agree
        _rename_member(packed_copy / row.shard_path, int(getattr(row, f"{ext}_offset")),
                       f"{evil}.{ext}")
    rewrite_metadata(packed_copy, "test",
                      lambda f: f.assign(key=f.key.where(f.key != row.key, evil)))
    out = tmp_path / "a" / "b" / "out"
    assert main(["get", str(packed_copy), evil, "--out", str(out)]) == 1
    assert "cannot name a file" in capsys.readouterr().err
    assert not list(tmp_path.rglob("evil*"))


def test_shard_paths_outside_the_pack_are_refused(packed: Path, tmp_path: Path) -> None:
    """A metadata row whose shard_path leaves the pack: stream and SampleMap read a file
    outside the local folder, or requested one outside the base URL, with the token."""
    import shutil

    pack_dir = tmp_path / "mirror" / "sousa"
    shutil.copytree(packed, pack_dir)
    (tmp_path / "outside").mkdir()
    shard = sousa_wds.metadata(packed, "test").shard_path.iloc[0]
    shutil.copy(packed / shard, tmp_path / "outside" / "x.tar")  # a readable shard there
    escape = "../../outside/x.tar"
    rewrite_metadata(pack_dir, "test", lambda f: f.assign(shard_path=escape))
    refused = re.escape(f"has shard_path {escape!r}, which has an empty, '.' or '..' part")
    with pytest.raises(LoaderError, match=refused):
        list(sousa_wds.stream(pack_dir, "test", decode=False))
    with pytest.raises(LoaderError, match=refused):
        sousa_wds.SampleMap(pack_dir, "test")
    with FolderServer(tmp_path, token="secret") as server:
        with pytest.raises(LoaderError, match=refused):
            list(sousa_wds.stream(f"{server.url}/mirror/sousa", "test", decode=False,
                                  token="secret"))
        assert server.requests and all(r.path.startswith("mirror/sousa/")
                                       for r in server.requests)
    rewrite_metadata(pack_dir, "test", lambda f: f.assign(shard_path=str(tmp_path / "x.tar")))
    with pytest.raises(LoaderError, match="which is not a relative POSIX path"):
        sousa_wds.get_sample(pack_dir, sousa_wds.metadata(packed, "test").key.iloc[0])


def test_pax_size_header_is_read_for_huge_members() -> None:
    size = 9 * 2**30  # more than a ustar size field holds
    info = tarfile.TarInfo("k.flac")
    info.size = size
    raw = info.tobuf(tarfile.PAX_FORMAT)
    before, block = raw[:-512], raw[-512:]
    assert header_problem(block, "k.flac", size, before) is None
    wrong = header_problem(block, "k.flac", size + 1, before)
    assert "says 9663676416 bytes, the metadata 9663676417" in wrong
    assert "says 0 bytes" in header_problem(block, "k.flac", size)  # the ustar field alone
    assert "tar member is 'k.flac'" in header_problem(block, "x.flac", size, before)


def _pax_sized_copy(packed: Path, target: Path, split: str) -> None:
    """`packed` with the split's shards rewritten as pack writes members of 8 GiB and more: the
    size in a PAX header, the ustar size field 0; the metadata offsets follow."""
    import shutil

    shutil.copytree(packed, target)
    meta = sousa_wds.metadata(packed, split)
    offsets: dict[tuple[str, str], int] = {}
    for shard_path in meta.shard_path.unique():
        members = []
        with tarfile.open(packed / shard_path) as tar:
            for info in tar:
                members.append((info, tar.extractfile(info).read()))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as out:
            for info, data in members:
                if info.name.endswith(".flac"):
                    info.pax_headers = {"size": str(len(data))}
                out.addfile(info, io.BytesIO(data))
        raw = bytearray(buffer.getvalue())
        with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
            for info in tar:
                offsets[(shard_path, info.name)] = info.offset_data
                if info.name.endswith(".flac"):  # zero the ustar size, as for a huge member
                    at = info.offset_data - 512
                    raw[at + 124:at + 136] = b"0" * 11 + b"\0"
                    raw[at + 148:at + 156] = b" " * 8
                    raw[at + 148:at + 156] = b"%06o\0 " % sum(raw[at:at + 512])
        (target / shard_path).write_bytes(bytes(raw))

    def change(frame):
        for ext in ("flac", "json", "mid"):
            frame[f"{ext}_offset"] = [offsets[(s, f"{k}.{ext}")]
                                      for s, k in zip(frame.shard_path, frame.key)]
        return frame
    rewrite_metadata(target, split, change)


def test_members_with_a_pax_size_are_streamed(packed: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    crafted = tmp_path / "pax"
    _pax_sized_copy(packed, crafted, "validation")
    monkeypatch.setattr(samples, "USTAR_MAX_SIZE", 2000)  # every FLAC counts as huge here
    expected = _local(packed)
    _same(expected, list(sousa_wds.stream(crafted, "validation", decode=False, shuffle=False,
                                          verify=True)))
    with FaultServer(crafted) as server:
        _same(expected, list(sousa_wds.stream(server.url, "validation", decode=False,
                                              shuffle=False, verify=True)))


def test_set_epoch_reaches_persistent_workers(packed: Path) -> None:
    from torch.utils.data import DataLoader

    def keys(loader) -> list[str]:
        return [s["key"] for s in loader]

    ds = sousa_wds.stream(packed, "train", seed=3, decode=False)
    persistent = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    got = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        got.append(keys(persistent))
    fresh = []
    for epoch in (0, 1):
        other = sousa_wds.stream(packed, "train", seed=3, decode=False)
        other.set_epoch(epoch)
        fresh.append(keys(DataLoader(other, batch_size=None, num_workers=2)))
    assert got == fresh and got[0] != got[1]


CLAIM = """
import resource, sys
limit = 1000 * 2**20  # address space: a 1.5 GB buffer cannot be allocated
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import sousa_wds
try:
    sousa_wds.get_sample(sys.argv[1], sys.argv[2], decode=False)
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_a_member_claiming_1_5_gb_is_a_named_error(packed_copy: Path) -> None:
    key = sousa_wds.metadata(packed_copy, "test").key.iloc[0]
    rewrite_metadata(packed_copy, "test", lambda f: f.assign(
        flac_size=np.where(f.key == key, 1_500_000_000, f.flac_size)))
    result = subprocess.run([sys.executable, "-c", CLAIM, str(packed_copy), key],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.stdout.startswith("ShortRead"), result.stdout + result.stderr
    assert "ends at byte" in result.stdout and "test-" in result.stdout
    with FaultServer(packed_copy) as server, pytest.raises(ShortRead):
        sousa_wds.get_sample(server.url, key, decode=False)
