"""Publishing to the Hub: the pure plan, then `sousa-wds upload` / `verify hf://` and
`scripts/push_to_hub.py` run in subprocesses against tests/hubserver.py through the real
huggingface_hub client (HF_ENDPOINT is read at import, hence the subprocesses)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sousa_wds.format import HUB_MAX_FILE_BYTES, HUB_MAX_FILES_PER_FOLDER, MANIFEST
from sousa_wds.publish import (
    FileSpec,
    RemoteFile,
    RemoteState,
    RepoShape,
    deletion_paths,
    parse_hf_target,
    plan_upload,
    remote_problems,
    upload_patterns,
)
from tests.hubserver import DEFAULT_TOKEN, READ_TOKEN, HubServer

ROOT = Path(__file__).resolve().parents[1]
REPO = "testuser/sousa"
WRONG_TOKEN = "hf_wrong_secret_0123456789"
SECRETS = (DEFAULT_TOKEN, READ_TOKEN, WRONG_TOKEN)


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def folder(packed_copy) -> Path:
    """A writable copy of the session's packed example (conftest): tests may add strays or
    damage it."""
    return packed_copy


@pytest.fixture
def hub(tmp_path):
    with HubServer(tmp_path / "hubserver") as server:
        yield server
        server.assert_no_unknown_routes()


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def remote_files(hub: HubServer) -> dict[str, bytes]:
    return {p: b for p, b in hub.files(REPO).items() if p != ".gitattributes"}


def run(hub: HubServer, tmp_path: Path, *args: str, token: str | None = DEFAULT_TOKEN,
        env: dict[str, str] | None = None, script: bool = False) -> subprocess.CompletedProcess:
    """`sousa-wds ARGS` (or push_to_hub.py) with no terminal; no secret may appear in output."""
    cmd = [sys.executable, str(ROOT / "scripts" / "push_to_hub.py")] if script else \
        [sys.executable, "-m", "sousa_wds.cli"]
    proc = subprocess.run(
        [*cmd, *args], env=hub.client_env(tmp_path / "hf", token=token, extra=env),
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=ROOT,
    )
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr, f"token printed by {args}"
    return proc


def upload(hub, tmp_path, folder, *extra, **kw) -> subprocess.CompletedProcess:
    return run(hub, tmp_path, "upload", str(folder), REPO, *extra, **kw)


def manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())


def section(verb: str, files: int) -> str:
    """How a plan line starts, e.g. `add        19 files`."""
    return f"{verb:<6} {files:>6,} files"


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


# --- the pure parts ----------------------------------------------------------------------


def test_plan_adds_skips_and_lists_stale_files():
    expected = [FileSpec("data/a.tar", 10, "a" * 64), FileSpec("data/b.tar", 10, "b" * 64),
                FileSpec("index/x.json", 3, "c" * 64), FileSpec(MANIFEST, 5, "d" * 64)]
    remote = RemoteState(True, False, "head", {
        "data/a.tar": RemoteFile("data/a.tar", 10, "oid-a", "a" * 64),  # identical (LFS)
        "data/b.tar": RemoteFile("data/b.tar", 10, "oid-b", "f" * 64),  # changed content
        "index/x.json": RemoteFile("index/x.json", 3, "blob-x", None),  # regular: git oid
        ".gitattributes": RemoteFile(".gitattributes", 9, "ga", None),
        "audio/train/k.flac": RemoteFile("audio/train/k.flac", 4, "o", "e" * 64),
    })
    plan = plan_upload("url", expected, remote, {"index/x.json": "blob-x"}, delete_stale=False)
    assert [f.path for f in plan.add] == ["data/b.tar", MANIFEST]
    assert [f.path for f in plan.skip] == ["data/a.tar", "index/x.json"]
    assert [f.path for f in plan.stale] == ["audio/train/k.flac"]  # never .gitattributes
    assert plan.shape.files == 6  # expected + .gitattributes + the kept stale file
    deleting = plan_upload("url", expected, remote, {}, delete_stale=True)
    assert deleting.shape.files == 5 and "index/x.json" in [f.path for f in deleting.add]
    unknown = plan_upload("url", expected, None, {}, delete_stale=False, remote_note="offline")
    assert len(unknown.add) == 4 and "the Hub was not asked: offline" in str(unknown)


def test_verification_deletion_patterns_and_limits_are_pure():
    spec = FileSpec("data/a.tar", 10, "a" * 64)
    listed = {"data/a.tar": RemoteFile("data/a.tar", 10, "o", "a" * 64)}
    assert remote_problems([spec], listed, {}) == []
    assert "serves bytes" in remote_problems([spec], listed, {"data/a.tar": "0" * 64})[0]
    assert "missing" in remote_problems([spec], {}, {})[0]
    assert "bytes on the Hub" in remote_problems(
        [spec], {"data/a.tar": RemoteFile("data/a.tar", 9, "o", "a" * 64)}, {})[0]

    remote = ["audio/train/a.flac", "audio/test/b.flac", "data/x.tar", "data/old.tar", "README.md"]
    stale = ["audio/train/a.flac", "audio/test/b.flac", "data/old.tar"]
    assert deletion_paths(stale, remote) == ["audio/", "data/old.tar"]

    allow, ignore = upload_patterns(
        ["README.md", "data/a[1].tar", "data/b.tar"],
        ["README.md", "data/a[1].tar", "data/b.tar", "data/.b.tar.partial", "notes.txt",
         ".sousa-wds-pack/state.json"],
    )
    assert allow == ["README.md", "data/*"]
    assert ignore == ["data/.b.tar.partial"]
    assert upload_patterns(["data/a[1].tar"], ["data/a[1].tar", "data/a1.tar"]) == (
        ["data/*"], ["data/a1.tar"])

    crowded = RepoShape.of({f"audio/{i}.flac": 1 for i in range(HUB_MAX_FILES_PER_FOLDER + 1)})
    assert "per folder" in crowded.problems()[0]
    assert "per file" in RepoShape.of({"data/a.tar": HUB_MAX_FILE_BYTES + 1}).problems()[0]
    assert RepoShape.of({"README.md": 1}).problems() == []

    assert parse_hf_target("hf://datasets/u/n@refs%2Fpr%2F1") == ("u/n", "refs/pr/1")
    assert parse_hf_target("hf://datasets/u/n/") == ("u/n", "main")


# --- against the test Hub ----------------------------------------------------------------


def test_upload_is_exact_and_a_second_run_sends_nothing(hub, tmp_path, folder):
    (folder / "notes.txt").write_text("not part of the pack")
    (folder / "data" / ".train-00000.tar.partial").write_bytes(b"\0half a shard")
    proc = ok(upload(hub, tmp_path, folder, "--private"))
    files = len(manifest(folder)["files"]) + 1
    assert "OK" in proc.stdout and f"{files} files new or changed" in proc.stdout
    expected = {p: b for p, b in local_files(folder).items()
                if p not in ("notes.txt", "data/.train-00000.tar.partial")}
    assert remote_files(hub) == expected  # exactly the manifest's files, byte-identical
    assert hub.is_private(REPO)
    # manifest.json comes last, alone: a remote copy with a manifest is complete
    assert [op for _, op in hub.commits(REPO)[-1].operations] == [MANIFEST]

    hub.clear_log()
    proc = ok(upload(hub, tmp_path, folder))
    assert "0 files new or changed" in proc.stdout
    assert hub.uploaded_bytes() == 0
    assert not hub.requests(route="lfs_put") and not hub.requests(route="commit")


def test_interrupted_upload_resumes_without_resending(hub, tmp_path, folder):
    hub.fail_after_uploads(3)
    proc = upload(hub, tmp_path, folder)
    assert proc.returncode == 1
    assert "rerun the same command to resume" in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]  # one actionable line, no traceback
    assert error.startswith("sousa-wds upload: error: upload to") and "Traceback" not in proc.stderr
    sent_before = hub.lfs_objects(REPO)
    assert len(sent_before) == 3 and remote_files(hub) == {}

    hub.clear_faults()
    hub.clear_log()
    ok(upload(hub, tmp_path, folder))
    resent = [r for r in hub.requests(route="lfs_put") if r.decoded_path.split("/")[-1]
              in sent_before]
    assert resent == []
    lfs_total = len(hub.lfs_objects(REPO))
    assert len(hub.requests(route="lfs_put")) == lfs_total - 3
    assert remote_files(hub) == local_files(folder)


def test_bad_tokens_fail_clearly_and_are_never_printed(hub, tmp_path, folder):
    proc = upload(hub, tmp_path, folder, "--token", WRONG_TOKEN)
    assert proc.returncode == 1
    assert "rejected the token from --token" in proc.stderr and "hf auth login" in proc.stderr
    proc = upload(hub, tmp_path, folder, token=WRONG_TOKEN)
    assert proc.returncode == 1 and "token from HF_TOKEN" in proc.stderr
    proc = upload(hub, tmp_path, folder, token=READ_TOKEN)
    assert proc.returncode == 1 and "read-only" in proc.stderr
    proc = upload(hub, tmp_path, folder, token=None)
    assert proc.returncode == 1 and "no Hugging Face token" in proc.stderr
    assert hub.writes() == []


def test_dry_run_plans_without_writing(hub, tmp_path, folder):
    hub.put_files(REPO, {"README.md": (folder / "README.md").read_bytes(),
                         "audio/train/old.flac": b"\0old"})
    hub.clear_log()
    proc = ok(upload(hub, tmp_path, folder, "--dry-run", "--delete-stale"))
    plan = proc.stdout
    files = len(manifest(folder)["files"]) + 1
    assert f"datasets/{REPO}" in plan and "dry run: nothing was sent" in plan
    assert section("add", files - 1) in plan and section("skip", 1) in plan
    assert section("delete", 1) in plan and "audio/train/old.flac" in plan
    assert "limit 100,000" in plan
    assert hub.writes() == []

    # Offline and without a token: the local plan, and no request at all.
    hub.clear_log()
    proc = ok(upload(hub, tmp_path, folder, "--dry-run", token=None,
                     env={"HF_HUB_OFFLINE": "1"}))
    assert "the Hub was not asked" in proc.stdout and section("add", files) in proc.stdout
    assert hub.log == []
    # Unreachable endpoint, with a token: the same, said once.
    proc = ok(upload(hub, tmp_path, folder, "--dry-run", env={"HF_ENDPOINT": "http://127.0.0.1:9"}))
    assert "the Hub was not asked" in proc.stdout


def test_delete_stale_removes_the_old_layout(hub, tmp_path, folder):
    hub.put_files(REPO, {"audio/train/a.flac": b"\0a", "midi/train/a.mid": b"MThd\0",
                         "data/train-00099.tar": b"\0old shard"})
    hub.clear_log()
    proc = upload(hub, tmp_path, folder, "--delete-stale")
    assert proc.returncode == 1 and "add --yes" in proc.stderr
    assert hub.writes() == []  # refused before anything was sent

    proc = ok(upload(hub, tmp_path, folder, "--delete-stale", "--yes"))
    assert section("delete", 3) in proc.stdout and "deleted in one commit" in proc.stdout
    assert remote_files(hub) == local_files(folder)
    assert ".gitattributes" in hub.files(REPO)
    last = hub.commits(REPO)[-1]
    assert sorted(last.operations) == [("deletedFile", "data/train-00099.tar"),
                                       ("deletedFolder", "audio"), ("deletedFolder", "midi")]
    proc = ok(run(hub, tmp_path, "verify", f"hf://datasets/{REPO}", "--deep"))
    m = manifest(folder)
    shards = sum(s["shards"] for s in m["splits"].values())
    samples = sum(s["samples"] for s in m["splits"].values())
    assert f"OK ({len(m['files']) + 1} files, {shards} shards, {samples} samples" in proc.stdout


def test_verification_catches_what_the_hub_serves_wrongly(hub, tmp_path, folder):
    ok(upload(hub, tmp_path, folder))

    # Storage corruption of an LFS shard: the listing still matches, so the rerun sends
    # nothing; the deep post-upload check reads the bytes back and names the file.
    hub.alter_file(REPO, "data/train-00000.tar", b"\0" * 1000)
    hub.clear_log()
    proc = upload(hub, tmp_path, folder, "--deep")
    assert proc.returncode == 1 and "data/train-00000.tar: the Hub serves bytes" in proc.stdout
    assert hub.uploaded_bytes() == 0

    # `verify hf://` alone: regular files are always read back, and a stray shard in a format
    # folder (which `datasets` would read through the card's data/train-* pattern) is named.
    hub.alter_file(REPO, "index/train.json", b"{}")
    hub.put_file(REPO, "data/train-00099.tar", b"\0stray")
    proc = run(hub, tmp_path, "verify", f"hf://datasets/{REPO}")
    assert proc.returncode == 1 and "2 problem(s)" in proc.stdout
    assert "index/train.json: the Hub serves bytes" in proc.stdout
    assert "data/train-00099.tar: on the Hub but not in the manifest" in proc.stdout
    hub.create_repo("testuser/empty")
    proc = run(hub, tmp_path, "verify", "hf://datasets/testuser/empty")
    assert proc.returncode == 1 and "has no manifest.json" in proc.stderr


def test_post_upload_check_catches_a_file_changed_after_packing(hub, tmp_path, folder):
    shard = folder / "data" / "validation-00000.tar"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size: only a hash sees it
    shard.write_bytes(bytes(data))
    proc = upload(hub, tmp_path, folder, "--deep")
    assert proc.returncode == 1 and "validation-00000.tar: sha256 differs" in proc.stderr
    assert hub.writes() == []  # --deep pre-flight stops it before anything is sent
    proc = upload(hub, tmp_path, folder)  # without --deep it goes folder, and is caught after
    assert proc.returncode == 1
    assert "data/validation-00000.tar: sha256 on the Hub differs" in proc.stdout


def test_private_flag_refuses_a_public_repo(hub, tmp_path, folder):
    hub.create_repo(REPO, private=False)
    proc = upload(hub, tmp_path, folder, "--private")
    assert proc.returncode == 1 and "is public" in proc.stderr
    assert hub.uploaded_bytes() == 0


def test_push_to_hub_dry_run_then_real(hub, tmp_path, dataset_copy):
    args = [str(dataset_copy), REPO, "--shard-size", "3MB", "--workers", "1"]
    proc = ok(run(hub, tmp_path, *args, "--dry-run", script=True))
    staging = tmp_path / f"{dataset_copy.name}.hf_staging"  # beside the dataset, not inside
    assert (staging / MANIFEST).is_file()
    assert "dry run: nothing was sent" in proc.stdout and hub.writes() == []

    proc = ok(run(hub, tmp_path, *args, script=True))
    assert "reusing the finished pack" in proc.stderr and "OK" in proc.stdout
    assert remote_files(hub) == local_files(staging)
    assert REPO in (staging / "README.md").read_text()


def test_push_to_hub_stages_beside_the_dataset_and_passes_no_sharding(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("push_to_hub", ROOT / "scripts/push_to_hub.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.default_staging(Path("/data/sousa")) == Path("/data/sousa.hf_staging")

    calls = []
    monkeypatch.setattr(script, "pack", lambda **kw: calls.append(kw) or "a summary")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / MANIFEST).write_text(json.dumps({"options": {"layout": "shards"}}))
    done = script.stage(tmp_path / "sousa", staging, REPO, shard_size=10**9, workers=1,
                        no_sharding=True)
    assert "packed again" in done  # a pack with other options is replaced, not reused
    assert calls[0]["no_sharding"] is True and calls[0]["overwrite"] is True
    assert calls[0]["repo_id"] == REPO  # the card's snippets name the target repo


def test_new_release_retires_the_old_manifest_before_sending_data(
    hub, tmp_path, folder, example_dataset
):
    ok(upload(hub, tmp_path, folder))
    before = len(hub.commits(REPO))
    from sousa_wds.pack import pack

    pack(example_dataset, folder, shard_size=5_000_000, overwrite=True, progress=False)
    ok(upload(hub, tmp_path, folder, "--delete-stale", "--yes"))
    new = hub.commits(REPO)[before:]
    # 1: the old manifest goes, 2: the data, 3: the new manifest, 4: stale shards go
    assert [(kind, path) for kind, path in new[0].operations] == [("deletedFile", MANIFEST)]
    assert [op for _, op in new[2].operations] == [MANIFEST]
    assert remote_files(hub) == local_files(folder)
