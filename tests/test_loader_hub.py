"""The loader against a Hub-protocol server (tests/hubserver.py): hf:// and user/name sources,
private repos, pinned revisions, and the token kept away from the CDN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sousa_wds
from sousa_wds.errors import LoaderError, TokenError

from .hubserver import DEFAULT_TOKEN, HubServer

REPO = "testuser/sousa-packed"


@pytest.fixture(scope="module")
def hub(packed: Path, tmp_path_factory: pytest.TempPathFactory):
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        server.create_repo(REPO, private=True)
        server.put_files(REPO, {p.relative_to(packed).as_posix(): p.read_bytes()
                                for p in sorted(packed.rglob("*")) if p.is_file()})
        yield server


@pytest.fixture
def hub_env(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", DEFAULT_TOKEN)
    hub.clear_log()
    return hub


def test_hub_stream_equals_local_with_the_token_on_every_hub_request(
        packed: Path, hub_env: HubServer) -> None:
    local = list(sousa_wds.stream(packed, "train", seed=4))
    remote = list(sousa_wds.stream(f"hf://datasets/{REPO}", "train", seed=4))
    assert [s["key"] for s in local] == [s["key"] for s in remote]
    for a, b in zip(local, remote):
        np.testing.assert_array_equal(a["audio"], b["audio"])
        assert a["labels"] == b["labels"]
    hub_requests = [r for r in hub_env.log if r.server == "hub"]
    shards = [r for r in hub_requests if "/data/" in r.decoded_path]
    assert len({r.decoded_path for r in shards}) == len(set(sousa_wds.metadata(packed).shard))
    assert all(r.token == DEFAULT_TOKEN for r in hub_requests)
    cdn = [r for r in hub_env.log if r.server == "cdn"]
    assert cdn and not any(r.had_auth for r in cdn)  # signed CDN URLs never get the token
    hub_env.assert_no_unknown_routes()


def test_hub_random_access_and_revision_forms(packed: Path, hub_env: HubServer) -> None:
    commit = hub_env.commits(REPO)[-1].oid
    key = sousa_wds.metadata(packed, "test").key.iloc[-1]
    for source in (REPO, f"{REPO}@{commit}", f"hf://datasets/{REPO}@main"):
        sample = sousa_wds.get_sample(source, key, split="test", decode=False)
        assert sample["key"] == key
    resolves = [r for r in hub_env.log if r.route == "resolve"]
    assert all(f"/resolve/{commit}/" in r.decoded_path for r in resolves)  # pinned to a commit


def test_a_mistyped_local_path_is_not_sent_to_the_hub(
        packed: Path, hub_env: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`demo/pakced` (a typo of a local folder) read as a Hub repo id: 12-15 s of retries on a
    machine without the Hub, then a network error that never named the missing folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "testuser").mkdir()
    with pytest.raises(LoaderError, match=r"'testuser/sousa-packed' is not a local folder "
                       r"\(testuser/ has no 'sousa-packed'\); for the Hub dataset of that name, "
                       r"give hf://datasets/testuser/sousa-packed"):
        sousa_wds.metadata(REPO, "test")
    assert hub_env.log == []
    assert len(sousa_wds.metadata(f"hf://datasets/{REPO}", "test")) == len(
        sousa_wds.metadata(packed, "test"))


def test_private_hub_repo_without_token_says_how_to_authenticate(hub_env: HubServer) -> None:
    with pytest.raises(LoaderError, match="HF_TOKEN"):
        sousa_wds.metadata(f"hf://datasets/{REPO}", token=False)
    with pytest.raises(LoaderError, match="no such dataset repo or revision"):
        sousa_wds.metadata(f"hf://datasets/{REPO}@no-such-branch")


def test_a_token_is_stripped_or_refused_and_never_shown(hub_env: HubServer) -> None:
    """A token with its newline works; one no HTTP header can carry is refused before any
    request, for the Hub and for other servers, and the error never quotes it."""
    frame = sousa_wds.metadata(f"hf://datasets/{REPO}", token=DEFAULT_TOKEN + "\r\n")
    assert len(frame) and all(r.token == DEFAULT_TOKEN for r in hub_env.log if r.server == "hub")
    hub_env.clear_log()
    secret = "hf_SECRET_abcdef"
    for source in (f"hf://datasets/{REPO}", REPO, f"{hub_env.url}/datasets/{REPO}/resolve/main"):
        for token in (f"{secret}\rx", f"{secret}\x00"):
            with pytest.raises(TokenError, match="holds a character") as error:
                sousa_wds.metadata(source, token=token)
            assert "SECRET" not in str(error.value)
    assert hub_env.log == []
