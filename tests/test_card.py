"""The dataset card and the preview files, loaded by the real `datasets` from a Hub-protocol
server (tests/hubserver.py): every config the rendered card lists loads, by name and streaming,
every split with exactly the pinned features; the preview audio decodes like the source FLAC.

`datasets` reads HF_ENDPOINT when huggingface_hub is imported, so it runs in one subprocess per
module (a JSON report + the decoded preview audio), and the assertions run here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from huggingface_hub import DatasetCard

from sousa_wds.card import card_yaml_data
from sousa_wds.errors import PackError
from sousa_wds.example import make_example
from sousa_wds.example.rudiments import RUDIMENTS
from sousa_wds.format import (
    LABEL_TABLE_COLUMNS,
    METADATA_SCHEMA,
    SPLITS,
    Manifest,
    metadata_path,
    preview_path,
)
from sousa_wds.pack import pack
from sousa_wds.preview import (
    PREVIEW_ROW_GROUP_ROWS,
    PREVIEW_SCHEMA,
    choose_preview,
    write_preview,
)

from .hubserver import HubServer

REPO = "testuser/sousa-card"
SHARD_SIZE = 2_000_000

LOAD_ALL = r"""
import json, sys
import numpy as np
from datasets import Features, get_dataset_config_names, load_dataset
from huggingface_hub import DatasetCard

repo, report_path, audio_path = sys.argv[1:4]
card = DatasetCard.load(repo, repo_type="dataset")
pinned = {i["config_name"]: Features._from_yaml_list(i["features"]).to_dict()
          for i in card.data.dataset_info}
report = {"listed": [c["config_name"] for c in card.data.configs], "pinned": pinned,
          "config_names": get_dataset_config_names(repo), "loads": {}}
audio = {}
for name in report["listed"]:
    for streaming in (False, True):
        splits = {}
        for split, ds in load_dataset(repo, name, streaming=streaming).items():
            rows = list(ds)
            splits[split] = {"features": ds.features.to_dict(),
                             "columns": sorted({k for r in rows for k in r}),
                             "first_column": [r[next(iter(ds.features))] for r in rows]}
            if name == "preview" and not streaming:
                for row in rows:
                    samples = row["audio"].get_all_samples()
                    audio[row["key"]] = samples.data.numpy()
                    audio[row["key"] + "@rate"] = np.array(samples.sample_rate)
        report["loads"][f"{name}/{'stream' if streaming else 'table'}"] = splits
nameless = load_dataset(repo)
report["nameless"] = {s: list(nameless[s]["key"]) for s in nameless}
np.savez(audio_path, **audio)
json.dump(report, open(report_path, "w"))
"""


@pytest.fixture(scope="module")
def card_pack(example_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example packed for REPO, so the card's code names the repo it is uploaded to."""
    out = tmp_path_factory.mktemp("card") / "out"
    pack(example_dataset, out, shard_size=SHARD_SIZE, workers=1, repo_id=REPO)
    return out


@pytest.fixture(scope="module")
def hub(card_pack: Path, tmp_path_factory: pytest.TempPathFactory):
    with HubServer(tmp_path_factory.mktemp("hub")) as server:
        server.create_repo(REPO, repo_type="dataset")
        server.put_files(REPO, {p.relative_to(card_pack).as_posix(): p.read_bytes()
                                for p in sorted(card_pack.rglob("*")) if p.is_file()})
        yield server


@pytest.fixture(scope="module")
def loaded(hub: HubServer, tmp_path_factory: pytest.TempPathFactory,
           audio_decoding: None) -> tuple[dict, dict]:
    work = tmp_path_factory.mktemp("load")
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_ALL, REPO, str(work / "report.json"), str(work / "audio.npz")],
        env=hub.client_env(work / "hf"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    audio = dict(np.load(work / "audio.npz"))
    return json.loads((work / "report.json").read_text()), audio


def test_card_lists_parquet_configs_only_and_pins_format_schemas(card_pack: Path) -> None:
    card = DatasetCard.load(card_pack / "README.md")
    configs = {c["config_name"]: c for c in card.data.configs}
    assert list(configs) == ["default", "strokes", "measures", "preview"]
    assert all(f["path"].endswith(".parquet") for c in configs.values() for f in c["data_files"])
    assert configs["default"]["data_files"] == [
        {"split": s, "path": metadata_path(s)} for s in SPLITS]
    pinned = {i["config_name"]: [f["name"] for f in i["features"]]
              for i in card.data.dataset_info}
    assert pinned["default"] == METADATA_SCHEMA.names
    assert pinned["strokes"] == list(LABEL_TABLE_COLUMNS["strokes"])
    assert pinned["preview"] == PREVIEW_SCHEMA.names
    for text in ("sousa_wds.stream(", "sousa_wds.load_audio(", "wds.WebDataset(",
                 'load_dataset("webdataset"', "$HF_TOKEN", "data/train-{00000..0000"):
        assert text in card.text, text
    assert "USER/SOUSA" not in card.text


def test_every_listed_config_loads_every_split_with_the_pinned_features(
        loaded: tuple[dict, dict], card_pack: Path) -> None:
    report, _ = loaded
    assert report["listed"] == ["default", "strokes", "measures", "preview"]
    assert sorted(report["config_names"]) == sorted(report["listed"])
    assert len(report["loads"]) == 2 * len(report["listed"])
    for mode, splits in report["loads"].items():
        name = mode.split("/")[0]
        assert list(splits) == list(SPLITS), mode
        for split, got in splits.items():
            assert got["features"] == report["pinned"][name], (mode, split)
            assert got["columns"] == sorted(report["pinned"][name]), (mode, split)
            files = {"default": metadata_path(split), "preview": preview_path(split)}
            local = pq.read_table(card_pack / files.get(name, f"labels/{name}/{split}.parquet"))
            assert got["first_column"] == local.column(0).to_pylist(), (mode, split)


def test_load_dataset_without_a_name_gives_the_metadata_rows(
        loaded: tuple[dict, dict], card_pack: Path) -> None:
    report, _ = loaded
    assert report["nameless"] == {
        s: pq.read_table(card_pack / metadata_path(s)).column("key").to_pylist() for s in SPLITS}


def test_preview_audio_decodes_like_the_source_flac(
        loaded: tuple[dict, dict], example_dataset: Path) -> None:
    _, audio = loaded
    samples = pq.read_table(example_dataset / "labels" / "samples.parquet",
                            columns=["sample_id", "audio_path", "rudiment_slug"]).to_pylist()
    keys = [k for k in audio if not k.endswith("@rate")]
    assert len(keys) >= len(SPLITS)
    for key in keys:
        path = next(s["audio_path"] for s in samples if s["sample_id"] == key)
        expected, rate = sf.read(example_dataset / path, dtype="float32", always_2d=True)
        assert int(audio[key + "@rate"]) == rate
        np.testing.assert_array_equal(audio[key], expected.T)


def test_preview_holds_the_smallest_sample_of_each_rudiment(card_pack: Path) -> None:
    manifest = Manifest.from_json((card_pack / "manifest.json").read_bytes(), "manifest.json")
    listed = {f.path for f in manifest.files}
    for split in SPLITS:
        meta = pq.read_table(card_pack / metadata_path(split)).to_pylist()
        preview = pq.read_table(card_pack / preview_path(split)).to_pylist()
        assert preview_path(split) in listed
        rudiments = sorted({r["rudiment_slug"] for r in meta})
        assert [r["rudiment_slug"] for r in preview] == rudiments
        for row in preview:
            smallest = min((m for m in meta if m["rudiment_slug"] == row["rudiment_slug"]),
                           key=lambda m: (m["flac_size"], m["key"]))
            assert row["key"] == smallest["key"]
            assert len(row["audio"]["bytes"]) == smallest["flac_size"]
            assert row["audio"]["path"] == f"{row['key']}.flac"


def test_preview_budget_is_kept_but_never_empties_a_split() -> None:
    rows = [{"key": f"k{i}", "rudiment_slug": f"r{i % 3}", "flac_size": 100 + i}
            for i in range(9)]
    assert [r["key"] for r in choose_preview(rows, 10_000)] == ["k0", "k1", "k2"]
    assert [r["key"] for r in choose_preview(rows, 201)] == ["k0", "k1"]
    assert [r["key"] for r in choose_preview(rows, 1)] == ["k0"]


def test_preview_of_many_rudiments_is_written_a_row_group_at_a_time(tmp_path: Path) -> None:
    """More rudiments than one row group holds: groups of PREVIEW_ROW_GROUP_ROWS rows, each
    row the split's smallest FLAC of its rudiment, its bytes those of the shard member."""
    make_example(tmp_path / "src", samples=90, seed=3, augmentations=1,
                 rudiments=tuple(RUDIMENTS))
    out = tmp_path / "out"
    pack(tmp_path / "src", out, shard_size=SHARD_SIZE, workers=1)
    meta = pq.read_table(out / metadata_path("train")).to_pylist()
    preview = pq.ParquetFile(out / preview_path("train"))
    rows = preview.read().to_pylist()
    assert len(rows) > PREVIEW_ROW_GROUP_ROWS
    assert preview.num_row_groups == -(-len(rows) // PREVIEW_ROW_GROUP_ROWS)
    assert preview.metadata.row_group(0).num_rows == PREVIEW_ROW_GROUP_ROWS
    by_key = {m["key"]: m for m in meta}
    assert [r["rudiment_slug"] for r in rows] == sorted({m["rudiment_slug"] for m in meta})
    for row in rows:
        m = by_key[row["key"]]
        assert m["flac_size"] == min(x["flac_size"] for x in meta
                                     if x["rudiment_slug"] == row["rudiment_slug"])
        with open(out / m["shard_path"], "rb") as fh:
            fh.seek(m["flac_offset"])
            assert row["audio"]["bytes"] == fh.read(m["flac_size"])


def test_preview_is_deterministic_and_refuses_a_damaged_shard(
        card_pack: Path, tmp_path: Path) -> None:
    copy = tmp_path / "out"
    shutil.copytree(card_pack, copy)
    before = {p: (copy / p).read_bytes() for p in map(preview_path, SPLITS)}
    assert write_preview(copy) == list(before)
    assert {p: (copy / p).read_bytes() for p in before} == before
    row = pq.read_table(copy / preview_path("train")).to_pylist()[0]
    meta = next(r for r in pq.read_table(copy / metadata_path("train")).to_pylist()
                if r["key"] == row["key"])
    shard = copy / meta["shard_path"]
    shard.chmod(0o644)
    with open(shard, "r+b") as fh:
        fh.seek(meta["flac_offset"] + 100)
        fh.write(b"\0" * 8)
    with pytest.raises(PackError, match=f"{row['key']}.*flac_sha256"):
        write_preview(copy)


def test_loose_layout_card_has_the_same_configs(example_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "loose"
    pack(example_dataset, out, no_sharding=True, workers=1, repo_id=REPO)
    card = DatasetCard.load(out / "README.md")
    assert [c["config_name"] for c in card.data.configs] == [
        "default", "strokes", "measures", "preview"]
    preview = pq.read_table(out / preview_path("test")).to_pylist()
    assert preview and all(row["audio"]["bytes"][:4] == b"fLaC" for row in preview)
    empty = {s: {"samples": 0, "shards": 0, "bytes": 0} for s in SPLITS}
    empty["train"] = {"samples": 3, "shards": 1, "bytes": 10}
    data = card_yaml_data(empty, "other")
    assert all([f["split"] for f in c["data_files"]] == ["train"] for c in data["configs"])


def test_the_cards_private_repo_snippet_sends_the_token(
        card_pack: Path, hub: HubServer, tmp_path: Path) -> None:
    from .test_snippets import markdown_blocks

    private = REPO + "-private"
    hub.create_repo(private, private=True)
    hub.put_files(private, {p.relative_to(card_pack).as_posix(): p.read_bytes()
                            for p in sorted(card_pack.rglob("*")) if p.is_file()})
    text = (card_pack / "README.md").read_text()
    block = next(b for b in markdown_blocks(text, "card") if "pipe:curl" in b.code)
    code = block.code.replace(REPO, private).replace("https://huggingface.co", hub.url)
    hub.clear_log()
    run = [sys.executable, "-c", code]
    proc = subprocess.run(run, env=hub.client_env(tmp_path / "hf"), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shard_requests = [r for r in hub.log if r.server == "hub" and "/data/" in r.decoded_path]
    assert len(shard_requests) >= 2 and all(r.had_auth for r in shard_requests)
    anonymous = subprocess.run(run, env=hub.client_env(tmp_path / "hf2", token=None),
                               capture_output=True, text=True, timeout=300)
    assert anonymous.returncode != 0  # the repo really is private
