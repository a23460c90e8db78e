"""Publishing to the Hub: the pure plan, then `upload`, `verify_remote` and `push` in-process
against tests/hubserver.py through the real huggingface_hub client (`endpoint=` is passed in;
the library's import-time settings are patched per test), and the CLI in two subprocess tests."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import sousa_wds
from sousa_wds.errors import PackError, TokenError, UploadError, VerifyError
from sousa_wds.format import CARD, HUB_MAX_FILE_BYTES, HUB_MAX_FILES_PER_FOLDER, MANIFEST
from sousa_wds.publish.hub import parse_hf_target, redact
from sousa_wds.publish.plan import (
    FileSpec,
    RemoteFile,
    RemoteState,
    RepoShape,
    deletion_paths,
    plan_upload,
    remote_problems,
    upload_patterns,
)
from sousa_wds.publish.push import default_staging, push
from sousa_wds.publish.upload import upload, verify_remote
from sousa_wds.verification import verify
from tests.hubserver import DEFAULT_TOKEN, READ_TOKEN, HubServer

ROOT = Path(__file__).resolve().parents[1]
REPO = "testuser/sousa"
WRONG_TOKEN = "hf_wrong_secret_0123456789"
SECRETS = (DEFAULT_TOKEN, READ_TOKEN, WRONG_TOKEN)


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def folder(packed_copy) -> Path:
    """A writable copy of the session's packed example (conftest, packed without --repo-id:
    its card names USER/SOUSA)."""
    return packed_copy


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The test Hub, with huggingface_hub set up in-process as the CLI environment would:
    LFS instead of Xet, no saved login, no token in the environment."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with HubServer(tmp_path / "hubserver") as server:
        yield server
        server.assert_no_unknown_routes()


def send(hub: HubServer, folder: Path, *, token: str | None = DEFAULT_TOKEN, **options):
    """`upload` to the test Hub; no secret may appear in what it returns or raises."""
    try:
        result = upload(folder, REPO, endpoint=hub.url, token=token, **options)
    except UploadError as exc:
        assert not any(s in str(exc) for s in SECRETS), "token in an error message"
        raise
    assert not any(s in str(result) for s in SECRETS)
    return result


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def remote_files(hub: HubServer) -> dict[str, bytes]:
    return {p: b for p, b in hub.files(REPO).items() if p != ".gitattributes"}


def manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST).read_text())


def section(verb: str, files: int) -> str:
    """How a plan line starts, e.g. `add        19 files`."""
    return f"{verb:<6} {files:>6,} files"


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
    refused = plan_upload("url", expected, None, {}, delete_stale=False, card_problem="edited")
    assert refused.problems == ["edited"] and "refused: edited" in str(refused)


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
    assert default_staging("/data/sousa") == Path("/data/sousa.hf_staging")  # beside, not in
    for bad in ("hf://u/n", "hf://datasets/u/n/data/x.tar", "datasets/u/n"):
        with pytest.raises(VerifyError, match="is not hf://datasets/USER/NAME"):
            parse_hf_target(bad)


def test_redact_removes_tokens_and_every_query_string():
    text = ("507 Server Error for url 'http://h/_hubserver/lfs/x?size=3&sig=SECRETSIG' and "
            "https://cdn.example/o?X-Amz-Signature=abc&X-Amz-Credential=def token=hf_abc sig=zz")
    clean = redact(text, "hf_abc")
    assert "SECRETSIG" not in clean and "abc&" not in clean and "def" not in clean
    assert "hf_abc" not in clean and "sig=zz" not in clean
    assert "http://h/_hubserver/lfs/x?<query redacted>" in clean
    # httpx quotes a header it refuses escaped: the raw token is not in the text
    for token in ("hf_abc\r", "hf_abc\n", "hf_abc\x00"):
        clean = redact(f"Illegal header value {('Bearer ' + token).encode()!r} ({token!r})", token)
        assert "hf_abc" not in clean, clean


# --- against the test Hub ----------------------------------------------------------------


def test_upload_is_exact_and_a_second_run_sends_nothing(hub, folder):
    (folder / "notes.txt").write_text("not part of the pack")
    (folder / "data" / ".train-00000.tar.partial").write_bytes(b"\0half a shard")
    lines: list[str] = []
    result = send(hub, folder, private=True, progress=lines.append)
    files = len(manifest(folder)["files"]) + 1
    assert result.ok and f"{files} files new or changed" in str(result)
    assert any(line.startswith("logged in as testuser") for line in lines)
    expected = {p: b for p, b in local_files(folder).items()
                if p not in ("notes.txt", "data/.train-00000.tar.partial")}
    assert remote_files(hub) == expected  # exactly the manifest's files, byte-identical
    assert hub.is_private(REPO)
    # manifest.json comes last, alone: a remote copy with a manifest is complete
    assert [op for _, op in hub.commits(REPO)[-1].operations] == [MANIFEST]

    hub.clear_log()
    result = send(hub, folder)
    assert result.ok and "0 files new or changed" in str(result)
    assert hub.uploaded_bytes() == 0
    assert not hub.requests(route="lfs_put") and not hub.requests(route="commit")


def test_upload_renders_the_card_for_the_target_repo(hub, folder):
    """The session pack ran without --repo-id: its card says USER/SOUSA (issue 8 §5)."""
    assert '"USER/SOUSA"' in (folder / CARD).read_text()
    before = local_files(folder)
    plan = send(hub, folder, dry_run=True)
    assert f"card: re-rendered for {REPO} (pack wrote it for USER/SOUSA)" in str(plan)
    assert local_files(folder) == before  # a dry run writes nothing, locally either

    result = send(hub, folder)
    card = (folder / CARD).read_text()
    assert result.ok and f'"{REPO}"' in card and "USER/SOUSA" not in card
    assert remote_files(hub)[CARD] == card.encode()
    assert verify(folder, deep=True).ok  # the manifest lists the new card
    assert f"card: names {REPO}" in str(send(hub, folder, dry_run=True))


def test_an_edited_card_is_refused_unless_kept(hub, folder):
    card = folder / CARD
    card.write_text(card.read_text() + "\nOur own citation.\n")
    m = manifest(folder)
    entry = next(f for f in m["files"] if f["path"] == CARD)
    import hashlib

    entry.update(bytes=card.stat().st_size, sha256=hashlib.sha256(card.read_bytes()).hexdigest())
    (folder / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    plan = send(hub, folder, dry_run=True)
    assert not plan.ok and "--keep-card" in str(plan)
    with pytest.raises(UploadError, match="cannot be re-rendered safely"):
        send(hub, folder)
    assert hub.writes() == []
    assert send(hub, folder, keep_card=True).ok
    assert b"Our own citation." in remote_files(hub)[CARD]
    # Edited again, manifest untouched (what --keep-card's advice leads to): the manifest is
    # made to list the kept card. Before: "README.md: N bytes, manifest says M ... pack again".
    card.write_text(card.read_text() + "A second paragraph.\n")
    result = send(hub, folder, keep_card=True)
    assert result.ok and f"{MANIFEST} updated to list it" in str(result.plan)
    assert b"A second paragraph." in remote_files(hub)[CARD]
    assert verify(folder, deep=True).ok


def test_an_interrupted_card_rewrite_is_completed(hub, folder):
    """Card renamed into place, manifest not yet: the next run rewrites only the manifest."""
    send(hub, folder, dry_run=True)
    saved = (folder / MANIFEST).read_bytes()
    assert send(hub, folder).ok
    (folder / MANIFEST).write_bytes(saved)  # as if the run had stopped between the renames
    assert "manifest.json updated to list it" in str(send(hub, folder, dry_run=True))
    assert send(hub, folder).ok and verify(folder, deep=True).ok


def test_interrupted_upload_resumes_without_resending(hub, folder):
    hub.fail_after_uploads(3)
    with pytest.raises(UploadError, match="rerun the same command to resume") as error:
        send(hub, folder)
    assert str(error.value).startswith(f"upload to {REPO} stopped")
    sent_before = hub.lfs_objects(REPO)
    assert len(sent_before) == 3 and remote_files(hub) == {}

    hub.clear_faults()
    hub.clear_log()
    assert send(hub, folder).ok
    resent = [r for r in hub.requests(route="lfs_put") if r.decoded_path.split("/")[-1]
              in sent_before]
    assert resent == []
    assert len(hub.requests(route="lfs_put")) == len(hub.lfs_objects(REPO)) - 3
    assert remote_files(hub) == local_files(folder)


def test_a_signed_upload_url_never_appears_in_the_error(hub, folder):
    """Issue 9.9: the LFS PUT URL carries `?size=..&sig=..`; the failure names no signature."""
    hub.fail_after_uploads(0, status=403)
    with pytest.raises(UploadError) as error:
        send(hub, folder)
    text = str(error.value)
    put = hub.requests(route="lfs_put")[0]
    assert "sig=" in put.query  # the server did hand out a signed URL
    signature = put.query.split("sig=")[1].split("&")[0]
    assert signature not in text and "sig=" not in text and "size=" not in text, text
    assert "?<query redacted>" in text and "403" in text


def test_a_retried_signed_url_is_logged_without_its_signature(hub, folder, caplog):
    """huggingface_hub logs each URL it retries; the LFS PUT's signature was on stderr of a
    run that then succeeded (even with --quiet)."""
    hub.inject_fault(route="lfs_put", status=503, times=1)
    assert send(hub, folder).ok
    put = hub.requests(route="lfs_put")[0]
    signature = put.query.split("sig=")[1].split("&")[0]
    assert "thrown while requesting PUT" in caplog.text  # the retry was logged...
    assert signature not in caplog.text and "?<query redacted>" in caplog.text  # ...redacted


def test_bad_tokens_fail_clearly_and_are_never_shown(hub, folder, monkeypatch):
    with pytest.raises(UploadError, match="rejected the token from --token.*hf auth login"):
        send(hub, folder, token=WRONG_TOKEN)
    monkeypatch.setenv("HF_TOKEN", WRONG_TOKEN)
    with pytest.raises(UploadError, match="token from HF_TOKEN"):
        send(hub, folder, token=None)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with pytest.raises(UploadError, match="read-only"):
        send(hub, folder, token=None)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(UploadError, match="no Hugging Face token"):
        send(hub, folder, token=None)
    assert hub.writes() == []


def test_a_token_is_stripped_or_refused_and_never_shown(hub, folder):
    """A token pasted with its newline (or read from a CRLF file) works, as HF_TOKEN does; one
    with a character no HTTP header carries is refused before any request, without quoting it
    (httpx's own error quotes the header, token included)."""
    assert send(hub, folder, token=DEFAULT_TOKEN + "\r\n", dry_run=True).plan.remote_note is None
    assert send(hub, folder, token=f" {DEFAULT_TOKEN}\n").ok
    assert verify_remote(f"hf://datasets/{REPO}", endpoint=hub.url,
                         token=DEFAULT_TOKEN + "\r").ok
    hub.clear_log()
    calls = (lambda t: send(hub, folder, token=t),
             lambda t: send(hub, folder, token=t, dry_run=True),
             lambda t: verify_remote(f"hf://datasets/{REPO}", endpoint=hub.url, token=t))
    for bad in (f"hf_test\r{WRONG_TOKEN}", f"{WRONG_TOKEN}\x00x", f"{WRONG_TOKEN}\u00e9"):
        for call in calls:
            with pytest.raises(TokenError, match="token from --token holds a character") as error:
                call(bad)
            assert WRONG_TOKEN not in str(error.value) and "hf_test" not in str(error.value)
    assert hub.log == []


def test_a_token_from_hf_token_is_checked_and_named_by_its_source(hub, folder, monkeypatch):
    """HF_TOKEN holding a character no header carries was a raw UnicodeEncodeError from the
    HTTP library; it is the same refusal as --token's, naming HF_TOKEN."""
    monkeypatch.setenv("HF_TOKEN", f"{WRONG_TOKEN}\u00e9")
    hub.clear_log()
    for call in (lambda: upload(folder, REPO, endpoint=hub.url, dry_run=True),
                 lambda: sousa_wds.metadata(f"hf://datasets/{REPO}")):
        with pytest.raises(TokenError, match="token from HF_TOKEN holds a character") as error:
            call()
        assert WRONG_TOKEN not in str(error.value)
    assert hub.log == []


def test_dry_run_plans_without_writing(hub, folder, monkeypatch):
    hub.put_files(REPO, {"README.md": (folder / "README.md").read_bytes(),
                         "audio/train/old.flac": b"\0old"})
    hub.clear_log()
    plan = str(send(hub, folder, dry_run=True, delete_stale=True))
    files = len(manifest(folder)["files"]) + 1
    assert f"datasets/{REPO}" in plan and "dry run: nothing was sent" in plan
    # The card is re-rendered for the repo, so the remote copy of the old one differs too.
    assert section("add", files) in plan and section("skip", 0) in plan
    assert section("delete", 1) in plan and "audio/train/old.flac" in plan
    assert "limit 100,000" in plan
    assert hub.writes() == []

    # Offline and without a token: the local plan, and no request at all.
    from huggingface_hub import constants

    hub.clear_log()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    plan = str(send(hub, folder, dry_run=True, token=None))
    assert "the Hub was not asked" in plan and section("add", files) in plan
    assert hub.log == []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Unreachable endpoint, with a token: the same, said once.
    plan = upload(folder, REPO, endpoint="http://127.0.0.1:9", token=DEFAULT_TOKEN, dry_run=True)
    assert "the Hub was not asked" in str(plan)


def test_delete_stale_removes_the_old_layout(hub, folder):
    hub.put_files(REPO, {"audio/train/a.flac": b"\0a", "midi/train/a.mid": b"MThd\0",
                         "data/train-00099.tar": b"\0old shard"})
    asked = []
    result = send(hub, folder, delete_stale=True, confirm=lambda stale: asked.append(stale))
    assert len(asked[0]) == 3 and len(result.stale) == 3 and not result.deleted  # said no

    result = send(hub, folder, delete_stale=True)
    assert section("delete", 3) in str(result) and "deleted in one commit" in str(result)
    assert remote_files(hub) == local_files(folder)
    assert ".gitattributes" in hub.files(REPO)
    last = hub.commits(REPO)[-1]
    assert sorted(last.operations) == [("deletedFile", "data/train-00099.tar"),
                                       ("deletedFolder", "audio"), ("deletedFolder", "midi")]
    report = verify_remote(f"hf://datasets/{REPO}", endpoint=hub.url, deep=True)
    m = manifest(folder)
    shards = sum(s["shards"] for s in m["splits"].values())
    samples = sum(s["samples"] for s in m["splits"].values())
    assert f"OK ({len(m['files']) + 1} files, {shards} shards, {samples} samples" in str(report)


def test_verification_catches_what_the_hub_serves_wrongly(hub, folder):
    assert send(hub, folder).ok

    # Storage corruption of an LFS shard: the listing still matches, so the rerun sends
    # nothing; the deep post-upload check reads the bytes back and names the file.
    hub.alter_file(REPO, "data/train-00000.tar", b"\0" * 1000)
    hub.clear_log()
    result = send(hub, folder, deep=True)
    assert not result.ok and "data/train-00000.tar: the Hub serves bytes" in str(result)
    assert hub.uploaded_bytes() == 0

    # `verify hf://` alone: regular files are always read back, and a stray shard in a format
    # folder (which `datasets` would read through the card's data/train-* pattern) is named.
    hub.alter_file(REPO, "index/train.json", b"{}")
    hub.put_file(REPO, "data/train-00099.tar", b"\0stray")
    report = verify_remote(f"hf://datasets/{REPO}", endpoint=hub.url)
    assert len(report.problems) == 2
    assert "index/train.json: the Hub serves bytes" in str(report)
    assert "data/train-00099.tar: on the Hub but not in the manifest" in str(report)
    hub.create_repo("testuser/empty")
    with pytest.raises(VerifyError, match="has no manifest.json"):
        verify_remote("hf://datasets/testuser/empty", endpoint=hub.url)


def test_post_upload_check_catches_a_file_changed_after_packing(hub, folder):
    shard = folder / "data" / "validation-00000.tar"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF  # same size: only a hash sees it
    shard.write_bytes(bytes(data))
    with pytest.raises(UploadError, match="validation-00000.tar: sha256 differs"):
        send(hub, folder, deep=True)
    assert hub.writes() == []  # --deep pre-flight stops it before anything is sent
    # Without --deep it is sent (sizes match), and the listing of the data commit shows the
    # difference: the manifest is not committed over data that does not match it.
    with pytest.raises(UploadError, match=f"{MANIFEST} was not committed.*validation-00000.tar: "
                       r"sha256 on the Hub differs.*verify .* --deep") as error:
        send(hub, folder)
    assert str(folder) in str(error.value)
    assert "data/validation-00000.tar" in remote_files(hub) and MANIFEST not in remote_files(hub)
    shard.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 0xFF]))  # as packed again
    assert send(hub, folder).ok and remote_files(hub) == local_files(folder)


def test_a_small_file_changed_after_packing_keeps_the_manifest_back(hub, folder):
    """Regular (non-LFS) files are listed by git blob id only: the local bytes, hashed both
    ways, tie that id to the manifest's sha256. Before, the manifest was committed over the
    changed index and only the verification afterwards saw it."""
    index = folder / "index" / "train.json"
    text = bytearray(index.read_bytes())
    at = text.index(b"train-00000.tar")
    text[at:at + 5] = b"TRAIN"  # same size
    index.write_bytes(bytes(text))
    for _rerun in range(2):  # the rerun sends no data (the blob is there): checked the same
        with pytest.raises(UploadError, match=f"{MANIFEST} was not committed.*index/train.json: "
                           "changed after packing"):
            send(hub, folder)
        assert "index/train.json" in remote_files(hub) and MANIFEST not in remote_files(hub)
    text[at:at + 5] = b"train"
    index.write_bytes(bytes(text))
    assert send(hub, folder).ok and remote_files(hub) == local_files(folder)


def test_the_manifest_goes_on_top_of_the_commit_it_was_checked_against(
        hub, folder, monkeypatch):
    """A push landing between the check of the data and the manifest's commit had the manifest
    committed over other data; it was also read from disk again after the check."""
    upload_module = importlib.import_module("sousa_wds.publish.upload")
    checked = upload_module._check_sent_data

    def check_then_another_push(*args, **kwargs):
        commit = checked(*args, **kwargs)
        hub.put_file(REPO, "data/train-00000.tar", b"another release's shard")
        sent.append((folder / MANIFEST).read_bytes())
        (folder / MANIFEST).write_bytes(b"{}")  # and the file is not what is sent
        return commit

    sent: list[bytes] = []

    monkeypatch.setattr(upload_module, "_check_sent_data", check_then_another_push)
    with pytest.raises(UploadError, match="upload to testuser/sousa stopped"):
        send(hub, folder)
    assert MANIFEST not in remote_files(hub)
    monkeypatch.setattr(upload_module, "_check_sent_data", checked)
    (folder / MANIFEST).write_bytes(sent[0])
    assert send(hub, folder).ok and remote_files(hub)[MANIFEST] == sent[0]


def test_an_invalid_repo_id_is_refused_before_anything_is_written(hub, folder, tmp_path,
                                                                  dataset_copy):
    """Validated first: before, a dry run raised huggingface_hub's HFValidationError, and a
    real run rewrote README.md and manifest.json for `a/b/c` before failing, after which the
    card blocked every upload to the right repo."""
    before = local_files(folder)
    staging = tmp_path / "staging"
    for bad in ("testuser/bad name", "a/b/c", "sousa"):
        for dry_run in (True, False):
            with pytest.raises(UploadError, match=f"{bad!r} is not a Hub dataset repo id.*give "
                               "USER/NAME"):
                upload(folder, bad, endpoint=hub.url, token=DEFAULT_TOKEN, dry_run=dry_run)
            with pytest.raises(UploadError, match="is not a Hub dataset repo id"):
                push(dataset_copy, bad, staging=staging, dry_run=dry_run, endpoint=hub.url,
                     token=DEFAULT_TOKEN, pack_options={"workers": 1, "progress": None})
    assert local_files(folder) == before and not staging.exists() and hub.log == []
    for pasted in ("testuser/sousa\r", "testuser/sousa\n"):  # a line of a CRLF file: one line
        with pytest.raises(UploadError) as refused:
            upload(folder, pasted, endpoint=hub.url, token=DEFAULT_TOKEN)
        assert "\r" not in str(refused.value) and "\n" not in str(refused.value)
        assert str(refused.value).startswith(f"{pasted!r} is not a Hub dataset repo id")
    assert send(hub, folder).ok


def test_private_flag_refuses_a_public_repo(hub, folder):
    hub.create_repo(REPO, private=False)
    with pytest.raises(UploadError, match="is public"):
        send(hub, folder, private=True)
    assert hub.uploaded_bytes() == 0


def test_new_release_retires_the_old_manifest_before_sending_data(hub, folder, example_dataset):
    assert send(hub, folder).ok
    before = len(hub.commits(REPO))
    from sousa_wds.pack import pack

    pack(example_dataset, folder, shard_size=5_000_000, overwrite=True,
         repo_id=REPO)
    assert send(hub, folder, delete_stale=True).ok
    new = hub.commits(REPO)[before:]
    # 1: the old manifest goes, 2: the data, 3: the new manifest, 4: stale shards go
    assert [(kind, path) for kind, path in new[0].operations] == [("deletedFile", MANIFEST)]
    assert [op for _, op in new[2].operations] == [MANIFEST]
    assert remote_files(hub) == local_files(folder)


def test_leftover_shards_of_a_bigger_release_refuse_the_upload_as_they_fail_verify(
        hub, folder, example_dataset):
    """A release with fewer shards leaves the old ones in data/, where the card's
    `data/train-*.tar` reads them: the upload is refused before anything is sent (the dry run
    says so), and when their deletion is declined, upload and `verify hf://` of the same
    commit agree that the copy is not OK."""
    from sousa_wds.pack import pack

    assert send(hub, folder).ok
    pack(example_dataset, folder, shard_size=5_000_000, overwrite=True, repo_id=REPO)
    leftovers = sorted(set(remote_files(hub)) - set(local_files(folder)))
    assert leftovers and all(p.startswith("data/") for p in leftovers)
    before, writes = remote_files(hub), len(hub.writes())
    plan = send(hub, folder, dry_run=True)
    assert not plan.ok and f"refused: {len(leftovers)} file(s) on the Hub" in str(plan)
    with pytest.raises(UploadError, match="nothing was sent.*--delete-stale") as refused:
        send(hub, folder)
    assert all(path in str(refused.value) for path in leftovers)
    assert remote_files(hub) == before
    assert [w.path for w in hub.writes()[writes:]] == ["/api/repos/create"]  # exist_ok
    target = f"hf://datasets/{REPO}"
    result = send(hub, folder, delete_stale=True, confirm=lambda stale: False)
    report = verify_remote(target, endpoint=hub.url)
    assert not result.ok and not report.ok
    assert result.verification.problems == report.problems
    for path in leftovers:
        assert (f"{path}: on the Hub but not in the manifest (left over from another "
                "upload? `sousa-wds upload --delete-stale` removes it)") in str(result)
    result = send(hub, folder, delete_stale=True)
    assert result.ok and verify_remote(target, endpoint=hub.url).ok
    assert [f.path for f in result.deleted] == leftovers


# --- push: pack + verify + upload --------------------------------------------------------


def test_push_dry_run_never_deletes_and_a_real_push_cleans_up(hub, tmp_path, dataset_copy):
    staging = tmp_path / "staging"
    options = {"shard_size": 3_000_000, "workers": 1, "progress": None}
    # A finished pack with other options is there: a dry run must not replace it.
    from sousa_wds.pack import pack

    pack(dataset_copy, staging, shard_size=5_000_000, workers=1)
    before = local_files(staging)
    result = push(dataset_copy, REPO, staging=staging, dry_run=True, pack_options=options,
                  endpoint=hub.url, token=DEFAULT_TOKEN)
    assert "a real run packs again, replacing it" in str(result) and not result.ok
    assert local_files(staging) == before and hub.writes() == []

    data = json.loads((staging / MANIFEST).read_text())
    data["format_version"] = 1  # a pack by an older sousa-wds: replaced, not an error
    (staging / MANIFEST).write_text(json.dumps(data))
    result = push(dataset_copy, REPO, staging=staging, pack_options=options, endpoint=hub.url,
                  token=DEFAULT_TOKEN, keep_staging=True)
    assert result.ok and "packed again" in str(result) and "format version 1" in str(result)
    assert remote_files(hub) == local_files(staging)
    assert f'"{REPO}"' in remote_files(hub)[CARD].decode()
    result = push(dataset_copy, REPO, staging=staging, pack_options=options, endpoint=hub.url,
                  token=DEFAULT_TOKEN)
    assert result.ok and "reusing the finished pack" in str(result)
    assert result.removed and not staging.exists()


def test_push_never_deletes_a_folder_that_holds_no_pack(hub, tmp_path, dataset_copy):
    """Issue 9.1: push_to_hub.py passed overwrite=True, so pack deleted data/ and README.md
    of any staging folder."""
    staging = tmp_path / "mine"
    (staging / "data").mkdir(parents=True)
    (staging / "data" / "precious.txt").write_text("keep me")
    (staging / CARD).write_text("my notes")
    before = local_files(staging)
    for dry_run in (True, False):
        with pytest.raises(PackError, match="not empty"):
            push(dataset_copy, REPO, staging=staging, dry_run=dry_run, endpoint=hub.url,
                 token=DEFAULT_TOKEN, pack_options={"workers": 1, "progress": None})
        assert local_files(staging) == before
    assert hub.writes() == []


# --- the command line --------------------------------------------------------------------


def run(hub: HubServer, tmp_path: Path, *args: str, token: str | None = DEFAULT_TOKEN
        ) -> subprocess.CompletedProcess:
    """`sousa-wds ARGS` in a subprocess (HF_ENDPOINT and the token in its environment, as a
    user runs it) with no terminal; no secret may appear in its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "sousa_wds.cli", *args],
        env=hub.client_env(tmp_path / "hf", token=token),
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=ROOT,
    )
    for secret in SECRETS:
        assert secret not in proc.stdout + proc.stderr, f"token printed by {args}"
    return proc


def test_cli_upload_and_verify(hub, folder, monkeypatch, capsys):
    """The commands in-process, with the endpoint set as HF_ENDPOINT sets it at import."""
    from huggingface_hub import constants

    from sousa_wds.cli import main

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert not any(s in out + err for s in SECRETS) and "Traceback" not in err
        return code, out, err

    code, _, err = cli("upload", str(folder), REPO, "--token", WRONG_TOKEN)
    assert code == 1 and err.startswith("sousa-wds upload: error: the Hub rejected the token")
    code, _, err = cli("upload", str(folder), REPO, "--token", DEFAULT_TOKEN, "--delete-stale")
    assert code == 1 and "add --yes" in err  # no terminal to ask
    assert hub.writes() == []
    code, out, err = cli("upload", str(folder), REPO, "--token", DEFAULT_TOKEN, "--quiet")
    assert code == 0 and err == "" and "OK" in out
    code, out, _ = cli("verify", f"hf://datasets/{REPO}", "--deep")
    assert code == 0 and "OK" in out and "sha256 checked" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("sousa-wds ")


def test_cli_says_one_line_for_an_invalid_repo_id(hub, folder, monkeypatch, capsys):
    from huggingface_hub import constants

    from sousa_wds.cli import main
    from sousa_wds.publish import hub as hub_calls

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)

    def cli(*args: str) -> tuple[int, str]:
        code = main(list(args))
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return code, err

    code, err = cli("upload", str(folder), "a/b/c", "--token", DEFAULT_TOKEN, "--dry-run")
    assert code == 1 and err.startswith("sousa-wds upload: error: 'a/b/c' is not a Hub dataset")
    # The CLI's net for huggingface_hub's validation errors where no check of ours came first
    # (here: the Hub client's own check of the repo id, ours disabled).
    monkeypatch.setattr(hub_calls, "check_repo_id", lambda repo_id: None)
    code, err = cli("upload", str(folder), "testuser/bad name", "--token", DEFAULT_TOKEN,
                    "--dry-run")
    assert code == 1 and err.startswith("sousa-wds upload: error: Repo id must use"), err


def test_cli_names_stale_files_before_asking_to_delete_them(hub, folder, monkeypatch, capsys):
    """They may be the user's own (a LICENSE, notes): the question comes after their names,
    at most MAX_LISTED of them."""
    import io

    from huggingface_hub import constants

    from sousa_wds.cli import main
    from sousa_wds.errors import MAX_LISTED

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    own = {"LICENSE": b"my own license"} | {f"docs/note-{i:02}.md": b"n" for i in range(24)}
    hub.put_files(REPO, own)
    answers = io.StringIO("n\n")
    answers.isatty = lambda: True  # a terminal to ask
    monkeypatch.setattr("sys.stdin", answers)
    code = main(["upload", str(folder), REPO, "--token", DEFAULT_TOKEN, "--delete-stale",
                 "--quiet"])
    out = capsys.readouterr().out
    asked = out.index("Delete these 25 stale files from the Hub? [y/N]")
    named = out[:asked]
    assert "LICENSE  14 B" in named and "docs/note-18.md" in named
    assert "docs/note-19.md" not in named and f"... and {25 - MAX_LISTED} more" in named
    assert code == 0 and set(own) <= set(hub.files(REPO))  # the answer was no


def test_cli_push(hub, tmp_path, dataset_copy):
    args = ["push", str(dataset_copy), REPO, "--shard-size", "3MB", "--workers", "1", "--quiet"]
    staging = tmp_path / f"{dataset_copy.name}.hf_staging"  # beside the dataset, not inside
    proc = run(hub, tmp_path, *args, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "dry run: nothing was sent" in proc.stdout and hub.writes() == []
    assert (staging / MANIFEST).is_file()  # kept for the real run
    proc = run(hub, tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert "reusing the finished pack" in proc.stdout and "removed the staging copy" in proc.stdout
    assert not staging.exists() and MANIFEST in remote_files(hub)


def test_cli_upload_interrupted_says_how_to_resume(folder, monkeypatch, capsys):
    from sousa_wds.cli import main

    upload_module = importlib.import_module("sousa_wds.publish.upload")

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(upload_module, "upload", interrupted)
    assert main(["upload", str(folder), REPO, "--quiet"]) == 130
    assert capsys.readouterr().err == ("sousa-wds upload: interrupted; files already sent stay "
                                       "on the Hub: rerun the same command to resume\n")


def test_what_refuses_the_real_run_refuses_the_dry_run_and_creates_no_repo(hub, folder):
    """Before: a dry run with a rejected token, a missing revision or --private against a
    public repo said OK; a real run to a new repo's missing branch created the (public) repo
    before refusing."""
    for options in ({"token": WRONG_TOKEN}, {"revision": "dev"}):
        hub.create_repo(REPO)
        result = send(hub, folder, dry_run=True, **options)
        assert not result.ok and "refused:" in str(result), str(result)
    result = send(hub, folder, dry_run=True, private=True)
    assert not result.ok and "exists and is public" in str(result)
    assert hub.writes() == []
    with pytest.raises(UploadError, match="testuser/new does not exist yet, so it has no "
                       "revision 'dev'.*nothing was written or sent"):
        upload(folder, "testuser/new", endpoint=hub.url, token=DEFAULT_TOKEN, revision="dev")
    assert hub.writes() == []


def test_verify_hf_with_a_rejected_token_says_how_to_log_in(hub, folder):
    assert send(hub, folder).ok
    with pytest.raises(VerifyError, match="the token was rejected: .*hf auth login") as error:
        verify_remote(f"hf://datasets/{REPO}", endpoint=hub.url, token=WRONG_TOKEN)
    assert WRONG_TOKEN not in str(error.value)
