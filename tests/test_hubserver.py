"""Tests of tests/hubserver.py through the real huggingface_hub client (in subprocesses)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import textwrap
import urllib.error
import urllib.request

import pytest

from tests import hubserver
from tests.hubserver import DEFAULT_TOKEN, HubServer

# The project conftest may import the fixture instead: ``from tests.hubserver import hub_server``.
hub_server = hubserver.hub_server

REPO = "testuser/sousa-test"


def run(hub: HubServer, tmp_path, code: str, token: str | None = DEFAULT_TOKEN, **kw):
    """Run client code; the code may print one JSON line last, returned parsed as ``.result``."""
    proc = hub.run_client(textwrap.dedent(code), hf_home=tmp_path / "hf", token=token, **kw)
    proc.result = None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        with contextlib.suppress(ValueError):
            proc.result = json.loads(lines[-1])
    return proc


def make_folder(root, n_tars=3, tar_size=150_000):
    """A small dataset folder: binary .tar shards (LFS) + text files (regular)."""
    folder = root / "upload"
    (folder / "shards").mkdir(parents=True)
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# SOUSA test\n")
    (folder / "metadata.json").write_text(json.dumps({"n": n_tars}))
    for i in range(n_tars):
        (folder / "shards" / f"train-{i:06d}.tar").write_bytes(os.urandom(tar_size + i))
    return folder


def local_files(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


UPLOAD = """
import sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo({repo!r}, repo_type="dataset", private={private}, exist_ok=True)
api.upload_folder(repo_id={repo!r}, repo_type="dataset", folder_path={folder!r},
                  commit_message="upload shards")
"""


def upload_code(folder, repo=REPO, private=True):
    return UPLOAD.format(repo=repo, folder=str(folder), private=private)


def http_get(url, token=None, range_=None):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if range_:
        req.add_header("Range", range_)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# ------------------------------------------------------------------------------------- upload


def test_upload_folder_roundtrip_then_noop(hub_server, tmp_path):
    folder = make_folder(tmp_path)
    proc = run(hub_server, tmp_path, upload_code(folder))
    assert proc.returncode == 0, proc.stderr

    assert hub_server.is_private(REPO)
    remote = hub_server.files(REPO)
    assert remote.pop(".gitattributes")  # created with the repo, like the real Hub
    assert remote == local_files(folder)
    entries = hub_server.entries(REPO)
    assert all(entries[p].lfs for p in remote if p.endswith(".tar"))
    assert not entries["README.md"].lfs and not entries["metadata.json"].lfs
    commits = hub_server.commits(REPO)
    assert [c.message for c in commits] == ["initial commit", "upload shards"]
    assert len(hub_server.requests("lfs_put")) == 3
    assert all(not r.had_auth for r in hub_server.requests("lfs_put"))  # signed URLs
    assert all(r.had_auth for r in hub_server.requests("commit"))
    assert hub_server.unknown_routes == []

    # Second identical upload: nothing re-sent, no commit.
    hub_server.clear_log()
    proc = run(hub_server, tmp_path, upload_code(folder))
    assert proc.returncode == 0, proc.stderr
    assert hub_server.requests("lfs_put") == []
    assert hub_server.requests("commit") == []
    assert [r.route for r in hub_server.writes()] == ["create_repo"]  # 409, exist_ok
    assert hub_server.uploaded_bytes() == 0
    assert len(hub_server.commits(REPO)) == 2


def test_upload_resumes_after_injected_failure(hub_server, tmp_path):
    folder = make_folder(tmp_path, n_tars=4)
    hub_server.create_repo(REPO, private=True)
    hub_server.fail_after_uploads(2)
    proc = run(hub_server, tmp_path, upload_code(folder))
    assert proc.returncode != 0
    assert "507" in proc.stderr
    assert len(hub_server.commits(REPO)) == 1  # nothing committed
    assert len(hub_server.lfs_objects(REPO)) == 2
    first_ok = {r.path for r in hub_server.requests("lfs_put") if r.status == 200}
    assert len(first_ok) == 2

    hub_server.clear_faults()
    hub_server.clear_log()
    proc = run(hub_server, tmp_path, upload_code(folder))
    assert proc.returncode == 0, proc.stderr
    second = [r for r in hub_server.requests("lfs_put")]
    assert len(second) == 2 and not {r.path for r in second} & first_ok  # only the missing ones
    remote = hub_server.files(REPO)
    remote.pop(".gitattributes")
    assert remote == local_files(folder)


def test_commit_failure_then_retry(hub_server, tmp_path):
    folder = make_folder(tmp_path, n_tars=1)
    hub_server.fail_after_commits(0)
    proc = run(hub_server, tmp_path, upload_code(folder))
    assert proc.returncode != 0 and "injected commit failure" in proc.stderr
    hub_server.clear_faults()
    hub_server.clear_log()
    proc = run(hub_server, tmp_path, upload_code(folder))
    assert proc.returncode == 0, proc.stderr
    assert hub_server.requests("lfs_put") == []  # object already uploaded by the failed run
    assert len(hub_server.requests("commit")) == 1


def test_multipart_lfs_upload(tmp_path):
    with HubServer(tmp_path / "srv", multipart_chunk_size=64 * 1024) as hub:
        folder = make_folder(tmp_path, n_tars=1, tar_size=200_000)
        proc = run(hub, tmp_path, upload_code(folder))
        assert proc.returncode == 0, proc.stderr
        assert len(hub.requests("lfs_part")) == 4  # ceil(200000 / 65536)
        assert len(hub.requests("lfs_complete")) == 1
        assert (
            hub.files(REPO)["shards/train-000000.tar"]
            == local_files(folder)["shards/train-000000.tar"]
        )


def test_wrong_token_is_rejected_clearly(hub_server, tmp_path):
    folder = make_folder(tmp_path, n_tars=1)
    proc = run(hub_server, tmp_path, upload_code(folder), token="hf_wrong")
    assert proc.returncode != 0
    assert "Invalid credentials in Authorization header" in proc.stderr
    assert [(r.route, r.status) for r in hub_server.writes()] == [("create_repo", 401)]
    assert {r.status for r in hub_server.log} == {401}

    proc = run(hub_server, tmp_path, "from huggingface_hub import whoami; whoami()", token="hf_x")
    assert proc.returncode != 0 and "Invalid user token" in proc.stderr

    proc = run(
        hub_server, tmp_path, upload_code(folder), token=hub_server.read_token
    )  # read-only token
    assert proc.returncode != 0 and "403" in proc.stderr


def test_whoami_and_create_repo(hub_server, tmp_path):
    code = """
    import json
    from huggingface_hub import HfApi
    api = HfApi()
    url = api.create_repo("testuser/pub", repo_type="dataset", exist_ok=True)
    url2 = api.create_repo("testuser/pub", repo_type="dataset", exist_ok=True)
    print(json.dumps({"name": api.whoami()["name"], "url": url, "same": url == url2,
                      "private": api.repo_info("testuser/pub", repo_type="dataset").private}))
    """
    proc = run(hub_server, tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert proc.result == {
        "name": "testuser",
        "url": f"{hub_server.url}/datasets/testuser/pub",
        "same": True,
        "private": False,
    }


def test_delete_with_create_commit_and_delete_files(hub_server, tmp_path):
    hub_server.put_files(
        REPO,
        {
            "audio/a.flac": b"fLaC" + os.urandom(100),
            "audio/b.flac": b"fLaC" + os.urandom(100),
            "old/x.txt": b"x",
            "old/y.txt": b"y",
            "keep.txt": b"keep",
        },
    )
    code = f"""
    from huggingface_hub import HfApi, CommitOperationDelete
    api = HfApi()
    ops = [CommitOperationDelete("audio/"), CommitOperationDelete("old/x.txt")]
    api.create_commit({REPO!r}, repo_type="dataset", commit_message="drop audio", operations=ops)
    api.delete_files({REPO!r}, delete_patterns=["old/*.txt"], repo_type="dataset")
    """
    proc = run(hub_server, tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert sorted(hub_server.files(REPO)) == [".gitattributes", "keep.txt"]
    ops = hub_server.commits(REPO)[-2].operations
    assert ops == [("deletedFolder", "audio"), ("deletedFile", "old/x.txt")]


# ----------------------------------------------------------------------------------- read side


def seed(hub: HubServer, private=True):
    data = {
        "README.md": b"# readme\n",
        "shards/train-000000.tar": os.urandom(70_000),
        "shards/train-000001.tar": os.urandom(50_000),
        "meta/index.parquet": os.urandom(3000),
        "meta/deep/notes.txt": b"hello\n",
    }
    hub.create_repo(REPO, private=private)
    hub.put_files(REPO, data, message="seed")
    return data


def test_tree_paths_info_and_repo_info(tmp_path):
    with HubServer(tmp_path / "srv", tree_page_size=2, tree_page_size_expand=2) as hub:
        data = seed(hub)
        code = f"""
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        tree = [
            {{"path": e.path, "size": getattr(e, "size", None),
              "sha256": e.lfs.sha256 if getattr(e, "lfs", None) else None,
              "dir": not hasattr(e, "size"), "last": e.last_commit.title}}
            for e in api.list_repo_tree({REPO!r}, repo_type="dataset", recursive=True, expand=True)
        ]
        top = [e.path for e in api.list_repo_tree({REPO!r}, repo_type="dataset")]
        sub = [e.path for e in api.list_repo_tree({REPO!r}, "meta", repo_type="dataset")]
        info = api.get_paths_info({REPO!r}, ["meta", "README.md", "missing"], repo_type="dataset")
        ri = api.repo_info({REPO!r}, repo_type="dataset", files_metadata=True)
        print(json.dumps({{"tree": tree, "top": top, "sub": sub,
                          "info": [type(i).__name__ + ":" + i.path for i in info],
                          "sha": ri.sha, "siblings": sorted(s.rfilename for s in ri.siblings),
                          "exists": [api.file_exists({REPO!r}, p, repo_type="dataset")
                                     for p in ("README.md", "nope.md")]}}))
        """
        proc = run(hub, tmp_path, code)
        assert proc.returncode == 0, proc.stderr
        res = proc.result
        entries = hub.entries(REPO)
        files = {e["path"]: e for e in res["tree"] if not e["dir"]}
        assert set(files) == set(entries)
        for path, e in files.items():
            assert e["size"] == entries[path].size
            assert e["sha256"] == (entries[path].sha256 if entries[path].lfs else None)
        assert files[".gitattributes"]["last"] == "initial commit"
        assert files["README.md"]["last"] == "seed"
        assert {e["path"] for e in res["tree"] if e["dir"]} == {"shards", "meta", "meta/deep"}
        assert len(hub.requests("tree", path_contains="/tree/main")) > 3  # paginated
        assert res["top"] == ["meta", "shards", ".gitattributes", "README.md"]
        assert res["sub"] == ["meta/deep", "meta/index.parquet"]
        assert res["info"] == ["RepoFolder:meta", "RepoFile:README.md"]
        assert res["sha"] == hub.commits(REPO)[-1].oid
        assert res["siblings"] == sorted([*data, ".gitattributes"])
        assert res["exists"] == [True, False]


def test_hf_hub_download_and_private_auth(hub_server, tmp_path):
    data = seed(hub_server, private=True)
    code = f"""
    import json
    from huggingface_hub import hf_hub_download
    out = {{}}
    for name in ("shards/train-000001.tar", "README.md"):
        out[name] = open(hf_hub_download({REPO!r}, name, repo_type="dataset"), "rb").read().hex()
    print(json.dumps(out))
    """
    proc = run(hub_server, tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    for name, hexdata in proc.result.items():
        assert bytes.fromhex(hexdata) == data[name]
    heads = hub_server.requests("resolve", method="HEAD")
    assert [r.status for r in heads] == [302, 200]  # LFS -> redirect to the "CDN"
    assert len(hub_server.requests("cdn")) == 1

    # Without a token the private repo is invisible.
    proc = run(hub_server, tmp_path / "anon", code, token=None)
    assert proc.returncode != 0 and "RepositoryNotFoundError" in proc.stderr


def test_plain_http_range_reads(hub_server):
    data = seed(hub_server, private=True)
    url = f"{hub_server.url}/datasets/{REPO}/resolve/main/shards/train-000000.tar"
    status, headers, body = http_get(url, hub_server.token, "bytes=1000-1999")
    assert status == 206 and body == data["shards/train-000000.tar"][1000:2000]
    assert headers["Content-Range"] == "bytes 1000-1999/70000"
    resolve = hub_server.requests("resolve")[-1]
    assert resolve.had_auth and resolve.status == 302 and resolve.range == "bytes=1000-1999"
    cdn = hub_server.requests("cdn")[-1]
    assert cdn.status == 206 and cdn.bytes_sent == 1000

    # Regular file served directly, with the headers huggingface_hub needs.
    status, headers, body = http_get(
        f"{hub_server.url}/datasets/{REPO}/resolve/main/README.md", hub_server.token, "bytes=-3"
    )
    assert (status, body) == (206, data["README.md"][-3:])
    assert headers["X-Repo-Commit"] == hub_server.commits(REPO)[-1].oid and headers["ETag"]

    assert http_get(url)[0] == 401  # private, no token
    assert http_get(url, "hf_bad")[0] == 401
    assert http_get(url, hub_server.token, "bytes=90000-")[0] == 416
    assert http_get(url.replace("train-000000", "nope"), hub_server.token)[0] == 404

    # Public repo: no token needed.
    hub_server.put_file("testuser/public", "a.tar", b"\0" * 10)
    assert http_get(f"{hub_server.url}/datasets/testuser/public/resolve/main/a.tar")[2] == (
        b"\0" * 10
    )


def test_hffilesystem_seek_read_with_range(hub_server, tmp_path):
    data = seed(hub_server, private=True)
    code = f"""
    import json
    from huggingface_hub import HfFileSystem
    fs = HfFileSystem()
    root = "hf://datasets/{REPO}@main"
    with fs.open(root + "/shards/train-000000.tar", "rb", block_size=1024) as f:
        f.seek(40_000)
        chunk = f.read(300)
    print(json.dumps({{
        "chunk": chunk.hex(),
        "ls": sorted(fs.ls(root + "/shards", detail=False)),
        "glob": fs.glob(root + "/shards/*.tar"),
        "info": fs.info(root + "/shards/train-000001.tar")["size"],
        "find": len(fs.find(root)),
    }}))
    """
    hub_server.clear_log()
    proc = run(hub_server, tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    res = proc.result
    assert bytes.fromhex(res["chunk"]) == data["shards/train-000000.tar"][40_000:40_300]
    assert res["ls"] == [
        f"datasets/{REPO}@main/shards/train-000000.tar",
        f"datasets/{REPO}@main/shards/train-000001.tar",
    ]
    assert len(res["glob"]) == 2 and res["info"] == 50_000 and res["find"] == 6
    ranged = [r for r in hub_server.requests("cdn") if r.range]
    assert ranged and sum(r.bytes_sent for r in ranged) <= 2 * 1024 + 300
    assert all(r.had_auth for r in hub_server.requests("resolve"))


def test_alter_file_simulates_corruption(hub_server):
    data = seed(hub_server, private=False)
    hub_server.alter_file(REPO, "shards/train-000001.tar", b"garbage")
    entry = hub_server.entries(REPO)["shards/train-000001.tar"]
    assert entry.sha256 == hashlib.sha256(data["shards/train-000001.tar"]).hexdigest()
    body = http_get(f"{hub_server.url}/datasets/{REPO}/resolve/main/shards/train-000001.tar")[2]
    assert body == b"garbage" == hub_server.files(REPO)["shards/train-000001.tar"]


def test_generic_faults_and_unknown_routes(hub_server):
    seed(hub_server, private=False)
    url = f"{hub_server.url}/datasets/{REPO}/resolve/main/README.md"
    hub_server.inject_fault(route="resolve", status=503, times=1)
    assert http_get(url)[0] == 503
    assert http_get(url)[0] == 200
    hub_server.inject_fault(route="resolve", action="truncate")
    with pytest.raises(Exception):  # noqa: B017 - IncompleteRead
        http_get(url)
    assert http_get(f"{hub_server.url}/api/nothing-here")[0] == 404
    assert hub_server.unknown_routes == ["GET /api/nothing-here"]
    hub_server.clear_log()  # keep the fixture's teardown warning quiet
