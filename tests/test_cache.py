"""The local cache of remote packs (sousa_wds.read.cache) against real HTTP and Hub servers:
what is fetched once and never again, concurrent fills, corruption, eviction, changed data."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import re
import shutil
from pathlib import Path

import pytest

import sousa_wds
from sousa_wds import cli
from sousa_wds.errors import IntegrityError, LoaderError, MissingFile
from sousa_wds.example import make_example
from sousa_wds.format import MANIFEST, Manifest
from sousa_wds.pack import pack
from sousa_wds.read.cache import FileCache

from .conftest import SHARD_SIZE
from .httpserver import FolderServer
from .hubserver import DEFAULT_TOKEN, HubServer

REPO = "testuser/sousa-cached"


def _manifest(root: Path) -> Manifest:
    return Manifest.from_json((root / MANIFEST).read_bytes())


def _blobs(cache: Path) -> dict[str, Path]:
    return {p.name: p for p in (cache / "blobs").glob("*/*")} if cache.exists() else {}


def _raw(source: object, cache: Path | None, **options: object) -> list[tuple[str, bytes]]:
    """(key, flac bytes) of the train split, unshuffled."""
    samples = sousa_wds.stream(source, "train", decode=False, shuffle=False, cache_dir=cache,
                               **options)
    return [(s["key"], s["flac"]) for s in samples]


def _shard_gets(server: FolderServer) -> list[str]:
    return [r.path for r in server.requests if r.path.startswith("data/")]


def test_epoch_two_sends_no_shard_bytes_and_local_sources_are_not_cached(
        packed: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    expected = _raw(packed, cache)
    assert not cache.exists()  # a local folder is read in place
    train_shards = {s for s in sousa_wds.metadata(packed).shard_path}
    with FolderServer(packed) as server:
        ds = sousa_wds.stream(server.url, "train", decode=False, seed=3, cache_dir=cache)
        first = sorted((s["key"], s["flac"]) for s in ds)
        assert first == sorted(expected)
        assert sorted(_shard_gets(server)) == sorted(train_shards)  # each shard once, whole
        server.clear()
        ds.set_epoch(1)
        assert sorted((s["key"], s["flac"]) for s in ds) == first
        assert server.bytes_sent("data/") == 0
        again = _raw(server.url, cache)  # a new stream: only the manifest is fetched
        assert again == expected
        assert [r.path for r in server.requests] == [MANIFEST]
    manifest = _manifest(packed)
    blobs = _blobs(cache)
    for path in [*train_shards, "metadata/train.parquet"]:
        entry = manifest.file(path)
        assert entry is not None
        assert hashlib.sha256(blobs[entry.sha256].read_bytes()).hexdigest() == entry.sha256


def test_dataloader_workers_share_the_cache(packed: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    expected = sorted(k for k, _ in _raw(packed, None))
    with FolderServer(packed) as server:
        ds = sousa_wds.stream(server.url, "train", decode=False, cache_dir=cache)
        loader = ds.loader(batch_size=4, num_workers=2, collate_fn=list)
        for epoch in range(2):
            server.clear()
            loader.set_epoch(epoch)
            keys = sorted(s["key"] for batch in loader for s in batch)
            assert keys == expected
            gets = _shard_gets(server)
            if epoch == 0:  # the two workers' shards, each fetched once
                assert gets and sorted(gets) == sorted(set(gets))
            else:
                assert gets == []


def _fill(url: str, cache: str, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    view = sousa_wds.SampleMap(url, "train", decode=False, cache_dir=cache)
    for key in view:
        view[key]


def test_two_processes_filling_one_cache_fetch_each_shard_once(packed: Path,
                                                                tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    with FolderServer(packed) as server:
        procs = [ctx.Process(target=_fill, args=(server.url, str(cache), barrier))
                 for _ in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        assert [proc.exitcode for proc in procs] == [0, 0]
        gets = _shard_gets(server)
        assert sorted(gets) == sorted(set(gets))  # no shard fetched twice
        metadata_gets = [r for r in server.requests if r.path == "metadata/train.parquet"]
        assert len(metadata_gets) == 1
    manifest = _manifest(packed)
    assert {f.sha256 for f in manifest.files if f.path in set(gets)} <= set(_blobs(cache))
    for name, path in _blobs(cache).items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == name
    assert not [p for p in cache.rglob(".*")]  # no temporary file left


def test_a_corrupt_cache_file_is_detected_deleted_and_fetched_again(
        packed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    with FolderServer(packed) as server:
        expected = _raw(server.url, cache)
        shard = sorted(set(_shard_gets(server)))[0]
        blob = _blobs(cache)[_manifest(packed).file(shard).sha256]  # type: ignore[union-attr]
        data = bytearray(blob.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, a member's byte changed
        blob.write_bytes(bytes(data))
        server.clear()
        with caplog.at_level(logging.WARNING, logger="sousa_wds"):
            assert _raw(server.url, cache) == expected
        assert _shard_gets(server) == [shard]
    assert str(blob) in caplog.text and shard in caplog.text
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def test_a_new_process_trusts_unchanged_files_without_hashing_them(
        packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sousa_wds.read import cache as cache_module

    cache = tmp_path / "cache"
    with FolderServer(packed) as server:
        expected = _raw(server.url, cache)
        monkeypatch.setattr(cache_module, "_verified", {})  # what a fresh worker knows
        monkeypatch.setattr(cache_module, "file_sha256", _no_hashing)
        server.clear()
        assert _raw(server.url, cache) == expected
        assert server.bytes_sent("data/") == 0


def _no_hashing(path: Path) -> str:
    raise AssertionError(f"{path} was hashed again although it did not change")


def test_the_size_cap_evicts_and_a_file_over_the_cap_is_read_remotely(
        packed: Path, tmp_path: Path) -> None:
    manifest = _manifest(packed)
    shards = [f for f in manifest.files if f.path.startswith("data/train-")]
    assert len(shards) >= 3
    cap = 2 * max(f.bytes for f in shards)
    cache = tmp_path / "cache"
    with FolderServer(packed) as server:
        expected = _raw(server.url, cache, cache_size=cap)
        blobs = _blobs(cache)
        assert sum(p.stat().st_size for p in blobs.values()) <= cap
        assert len(blobs) < len(shards) + 1  # not every shard and the metadata stayed
        tiny = tmp_path / "tiny"
        assert _raw(server.url, tiny, cache_size="1KB") == expected
        assert not _blobs(tiny)
    with pytest.raises(LoaderError, match="cache_size"):
        sousa_wds.metadata(packed, cache_dir=cache, cache_size="lots")
    # A cap without a cache was ignored without a word (`--cache-size` alone on the CLI).
    with pytest.raises(LoaderError, match="cache_size='1GB' caps a cache, and there is none: "
                       "give cache_dir="):
        sousa_wds.metadata(packed, cache_size="1GB")


def test_changed_data_behind_the_same_url_never_serves_stale_bytes(
        packed: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    other = tmp_path_factory.mktemp("other")
    make_example(other / "dataset", samples=12, seed=2)
    pack(other / "dataset", other / "packed", shard_size=SHARD_SIZE, workers=1, progress=False)
    served = tmp_path / "served"
    shutil.copytree(packed, served)
    cache = tmp_path / "cache"
    with FolderServer(served) as server:
        assert _raw(server.url, cache) == _raw(packed, None)
        shutil.rmtree(served)
        shutil.copytree(other / "packed", served)  # the mirror is updated in place
        assert _raw(server.url, cache) == _raw(other / "packed", None)


def test_wrong_bytes_from_the_server_are_not_cached(packed_copy: Path, tmp_path: Path) -> None:
    shard = sorted(packed_copy.glob("data/train-*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))  # the manifest still has the original sha256
    cache = tmp_path / "cache"
    with FolderServer(packed_copy) as server, pytest.raises(IntegrityError, match="sha256"):
        _raw(server.url, cache)
    entry = _manifest(packed_copy).file(f"data/{shard.name}")
    assert entry is not None and entry.sha256 not in _blobs(cache)
    assert not [p for p in cache.rglob(".*")]


def test_links_planted_in_the_cache_are_never_written_through(packed: Path,
                                                              tmp_path: Path) -> None:
    """The cache's names are predictable (blobs/xx/.SHA.partial, verified/.SHA.partial,
    locks/SHA): links planted there, in a shared cache, made a fill write the file they point
    at. A stale temporary file of a crashed fill is replaced."""
    manifest = _manifest(packed)
    test_sha = manifest.file("metadata/test.parquet").sha256
    train_sha = manifest.file("metadata/train.parquet").sha256
    cache = tmp_path / "cache"
    victims = {}
    for name, planted in [("blob", f"blobs/{test_sha[:2]}/.{test_sha}.partial"),
                          ("record", f"verified/.{test_sha}.partial")]:
        victims[name] = tmp_path / f"{name}.txt"
        victims[name].write_bytes(b"precious user data\n")
        (cache / planted).parent.mkdir(parents=True, exist_ok=True)
        (cache / planted).symlink_to(victims[name])
    stale = cache / "blobs" / train_sha[:2] / f".{train_sha}.partial"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file from a fill that was killed" * 1000)
    with FolderServer(packed) as server:
        for split in ("test", "train"):
            assert sousa_wds.metadata(server.url, split, cache_dir=cache).equals(
                sousa_wds.metadata(packed, split))
        for victim in victims.values():
            assert victim.read_bytes() == b"precious user data\n"
        for sha in (test_sha, train_sha):
            blob = _blobs(cache)[sha]
            assert not blob.is_symlink() and hashlib.sha256(blob.read_bytes()).hexdigest() == sha
        assert not [p for p in cache.rglob(".*")]  # no temporary file, planted or stale, left

        validation_sha = manifest.file("metadata/validation.parquet").sha256
        absent = tmp_path / "created-through-the-lock"
        lock = cache / "locks" / validation_sha
        lock.symlink_to(absent)
        with pytest.raises(LoaderError, match=re.escape(f"lock file {lock}: Too many levels")):
            sousa_wds.metadata(server.url, "validation", cache_dir=cache)
        assert not absent.exists()


def test_a_file_missing_at_the_source_is_a_missing_file_not_a_cache_failure(
        packed_copy: Path, tmp_path: Path) -> None:
    """A 404 during a fill was reported as a failure to write the cache ("Free space ...")
    and was no longer a MissingFile: it is a FileNotFoundError, which the fill took for a disk
    error."""
    shard = sorted(packed_copy.glob("data/train-*.tar"))[0]
    shard.unlink()
    (packed_copy / "metadata" / "test.parquet").unlink()
    cache = tmp_path / "cache"
    with FolderServer(packed_copy) as server:
        with pytest.raises(MissingFile, match=r"metadata/test\.parquet does not exist") as info:
            sousa_wds.metadata(server.url, "test", cache_dir=cache)
        assert "cache" not in str(info.value)
        messages, tries = [], []
        for cache_dir in (False, cache):
            server.clear()
            with pytest.raises(LoaderError) as info:
                _raw(server.url, cache_dir)
            messages.append(str(info.value))
            tries.append(len([r for r in server.requests if r.path.endswith(shard.name)]))
        assert messages[0] == messages[1]  # the same error, with the cache or without
        assert tries[1] <= tries[0]  # not taken for an eviction and fetched again
        assert f"{shard.name} does not exist" in messages[1]
    manifest = _manifest(packed_copy)
    for path in (f"data/{shard.name}", "metadata/test.parquet"):
        assert manifest.file(path).sha256 not in _blobs(cache)
    assert not [p for p in cache.rglob(".*")]


def test_a_file_evicted_between_check_and_read_is_fetched_again(
        packed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process may evict a blob right after this one found it checked: reading the
    metadata then failed with a bare FileNotFoundError (shards, opened by range, were
    retried). The eviction is made at that moment, by deleting the blob as _evict would."""
    cache = tmp_path / "cache"
    evictions = []
    known = FileCache._known

    def evicted_after_the_check(self: FileCache, path: Path, st: object, sha: str) -> bool:
        found = known(self, path, st, sha)
        if found:
            path.unlink()
            evictions.append(path)
        return found

    with FolderServer(packed) as server:
        expected = sousa_wds.metadata(server.url, "test", cache_dir=cache)  # fills the cache
        monkeypatch.setattr(FileCache, "_known", evicted_after_the_check)
        server.clear()
        assert sousa_wds.metadata(server.url, "test", cache_dir=cache).equals(expected)
        assert len(evictions) == 1
        assert [r.path for r in server.requests] == [MANIFEST, "metadata/test.parquet"]


def test_hub_cache_by_env_var_holds_no_token(packed: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SOUSA_WDS_CACHE_DIR", str(cache))
    with HubServer(tmp_path / "hub") as hub:
        hub.create_repo(REPO, private=True)
        hub.put_files(REPO, {p.relative_to(packed).as_posix(): p.read_bytes()
                             for p in sorted(packed.rglob("*")) if p.is_file()})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", DEFAULT_TOKEN)
        expected = _raw(packed, None)
        assert _raw(REPO, None) == expected  # cache_dir=None: the variable's folder
        assert _blobs(cache)
        hub.clear_log()
        assert _raw(f"hf://datasets/{REPO}", None) == expected
        key = expected[0][0]
        assert sousa_wds.get_sample(REPO, key, split="train", decode=False)["flac"] == \
            expected[0][1]
        fetched = [r.decoded_path for r in hub.log if r.route == "resolve"]
        assert fetched and not any("/data/" in p for p in fetched)  # no shard bytes again
        assert _raw(REPO, False) == expected  # cache_dir=False turns it off
    names = [str(p.relative_to(cache)) for p in cache.rglob("*")]
    assert names and not any(DEFAULT_TOKEN in name for name in names)
    assert not any(DEFAULT_TOKEN.encode() in p.read_bytes() for p in cache.rglob("*")
                   if p.is_file())


def test_cli_get_and_stream_take_cache_dir(packed: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    key = sousa_wds.metadata(packed, "test").key.iloc[0]
    with FolderServer(packed) as server:
        assert cli.main(["get", server.url, key, "--cache-dir", str(cache)]) == 0
        assert cli.main(["stream", server.url, "--split", "test", "--limit", "2", "--no-decode",
                         "--cache-dir", str(cache), "--cache-size", "1GB"]) == 0
        server.clear()
        assert cli.main(["get", server.url, key, "--split", "test",
                         "--cache-dir", str(cache)]) == 0
        assert server.bytes_sent("data/") == 0
    assert key in capsys.readouterr().out
