"""The dataset card (README.md): YAML configs and pinned features, then a usage guide.

How it works:
- Every config is Parquet, so `datasets` (which picks one builder per repo,
  huggingface/datasets#7101) and the Hub viewer load each of them: `default` = the metadata
  (`load_dataset(repo)` gives one row per sample, a few MB), `strokes` and `measures` = the label
  tables, `preview` = a few samples with playable audio (`preview.py`). The tar shards are not a
  config: the card shows three ways to stream them.
- Each config's `dataset_info.features` is derived from `sousa_wds.format` (and
  `preview.PREVIEW_SCHEMA`), so `datasets` never guesses a type from the first rows and every
  split has one schema.
- The YAML is rendered by huggingface_hub's `DatasetCardData`; the card holds no timestamps, and
  its code blocks are run by tests/test_snippets.py against a test Hub.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from .defaults import DEFAULT_REPO_ID  # re-exported: card.DEFAULT_REPO_ID
from .format import (
    FORMAT_VERSION,
    LABEL_TABLE_COLUMNS,
    METADATA_SCHEMA,
    SPLITS,
    labels_path,
    metadata_path,
    preview_path,
)
from .io import human_bytes
from .preview import AUDIO_TYPE, PREVIEW_SCHEMA

_DTYPES = {
    pa.string(): "string",
    pa.large_string(): "string",
    pa.int64(): "int64",
    pa.float64(): "float64",
    pa.bool_(): "bool",
    pa.binary(): "binary",
}


def _features(columns: Mapping[str, pa.DataType]) -> list[dict]:
    return [{"name": name, "dtype": "audio" if typ == AUDIO_TYPE else _DTYPES[typ]}
            for name, typ in columns.items()]


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def card_yaml_data(splits: Mapping[str, Mapping], license: str) -> dict:
    """Front-matter fields; only splits that have samples get data files (in both layouts)."""
    present = [s for s in SPLITS if splits[s]["samples"] > 0]
    paths = {"default": metadata_path, "preview": preview_path}
    paths |= {table: (lambda s, t=table: labels_path(t, s)) for table in LABEL_TABLE_COLUMNS}
    names = ["default", *LABEL_TABLE_COLUMNS, "preview"]
    configs = [
        {"config_name": name, "data_files": [{"split": s, "path": paths[name](s)} for s in present]}
        | ({"default": True} if name == "default" else {})
        for name in names
    ]
    columns = {"default": {f.name: f.type for f in METADATA_SCHEMA},
               "preview": {f.name: f.type for f in PREVIEW_SCHEMA}, **LABEL_TABLE_COLUMNS}
    dataset_info = [{"config_name": name, "features": _features(columns[name])} for name in names]
    total = sum(splits[s]["samples"] for s in SPLITS)
    return {
        "license": license,
        "pretty_name": "SOUSA drum rudiments",
        "task_categories": ["audio-classification"],
        "tags": ["audio", "music", "drums", "snare", "rudiments", "synthetic", "webdataset"],
        "size_categories": [_size_category(total)],
        "configs": configs,
        "dataset_info": dataset_info,
    }


def render_card(
    splits: Mapping[str, Mapping], *, repo_id: str = DEFAULT_REPO_ID, license: str = "other",
    layout: str = "shards", rudiments: int, profiles: int,
) -> str:
    """The whole README.md: YAML front matter, then what the dataset is and how to use it."""
    from huggingface_hub import DatasetCardData

    yaml = DatasetCardData(**card_yaml_data(splits, license)).to_yaml()
    rows = "\n".join(
        f"| {s} | {splits[s]['samples']:,} | {splits[s]['shards']} "
        f"| {human_bytes(splits[s]['bytes'])} |"
        for s in SPLITS
    )
    example = next((s for s in SPLITS if splits[s]["samples"]), "train")
    storage = "loose FLAC and MIDI files" if layout == "loose" else "WebDataset shards"
    head = f"""---
{yaml}
---

# SOUSA: synthetic snare-drum rudiment performances

SOUSA holds synthetic snare performances of the 40 PAS drum rudiments, played by simulated
players of four skill tiers. Every sample is a FLAC recording (44.1 kHz, 24-bit, usually
stereo), the MIDI of the performance and hierarchical labels: exercise scores in the `default`
config (one row per sample), measure- and stroke-level rows in the `measures` and `strokes`
configs, and a few samples with playable audio in the `preview` config.

This copy holds {sum(splits[s]['samples'] for s in SPLITS):,} samples from {profiles} player
profiles and {rudiments} rudiments, stored as {storage} (sousa-wds format v{FORMAT_VERSION}).
Splits are by player: no profile appears in two splits.

| split | samples | shards | bytes |
|---|---:|---:|---:|
{rows}

"""
    datasets_use = _datasets_body(repo_id, example)
    if layout == "loose":
        return head + _loose_body(repo_id, example, datasets_use)
    return head + _shards_body(repo_id, example, splits[example]["shards"], datasets_use)


def _datasets_body(repo_id: str, example: str) -> str:
    return f"""## Use

With `datasets` (every config is Parquet; the Hub viewer shows the same tables):

```python
from datasets import load_dataset

meta = load_dataset("{repo_id}", split="{example}")   # one row per sample: labels + location
strokes = load_dataset("{repo_id}", "strokes", split="{example}")   # keyed by sample_id
preview = load_dataset("{repo_id}", "preview", split="{example}")   # a few samples with audio
audio = preview[0]["audio"].get_all_samples()   # torchcodec: .data (channels, frames), .sample_rate
print(meta[0]["skill_tier"], strokes.num_rows, audio.sample_rate)
```

Query the labels with pandas or duckdb, without touching any audio:

```python
import pandas as pd

meta = pd.read_parquet("hf://datasets/{repo_id}/metadata/{example}.parquet")
print(meta.groupby("skill_tier").overall_score.mean())
```

```python
import duckdb
from huggingface_hub import HfFileSystem

# hf:// through huggingface_hub (your login, no httpfs extension download)
duckdb.register_filesystem(HfFileSystem())
duckdb.sql(\"\"\"SELECT rudiment_slug, avg(overall_score) AS score
              FROM 'hf://datasets/{repo_id}/metadata/*.parquet'
              GROUP BY 1 ORDER BY 2 DESC\"\"\").show()
```
"""


def _shard_urls(prefix: str, example: str, shards: int) -> str:
    numbers = f"{{00000..{shards - 1:05d}}}" if shards > 1 else "00000"
    return f"{prefix}/data/{example}-{numbers}.tar"


def _shards_body(repo_id: str, example: str, shards: int, datasets_use: str) -> str:
    resolve = _shard_urls(f"https://huggingface.co/datasets/{repo_id}/resolve/main", example,
                          shards)
    hf_urls = _shard_urls(f"hf://datasets/{repo_id}", example, shards)
    return f"""## Files

- `data/{{split}}-NNNNN.tar`: WebDataset shards; each sample is `{{key}}.flac` (the original
  FLAC bytes), `{{key}}.json` (its labels) and `{{key}}.mid` (the MIDI of its group).
- `metadata/{{split}}.parquet`: one row per sample with every label, the shard holding it and
  the byte offset and size of each member, so one sample can be read with one range request.
- `labels/strokes/{{split}}.parquet`, `labels/measures/{{split}}.parquet`: stroke- and
  measure-level labels, keyed by `sample_id` (= the WebDataset key).
- `preview/{{split}}.parquet`: a few samples (the shortest of each rudiment) with their FLAC in
  an `audio` column, for the Hub viewer.
- `index/{{split}}.json`: shard lists (wids format) with sizes and sha256;
  `manifest.json`: every file with its size and sha256.

{datasets_use}
Fetch any sample's audio from its row with sousa-wds (`pip install sousa-wds`): one range
request for its FLAC, checked against `flac_sha256`, returned as `soundfile.read` returns it:

```python
import sousa_wds
from datasets import load_dataset

meta = load_dataset("{repo_id}", split="{example}")
audio, sample_rate = sousa_wds.load_audio(meta[0], "{repo_id}")   # (frames, channels)
```

## Stream the audio

The shards are not a `datasets` config (`load_dataset("{repo_id}")` reads the labels only).
Stream them in one of three ways. With sousa-wds (`pip install sousa-wds`: shuffling, DataLoader
workers, DDP, label filters, random access; uses your Hub login):

```python
import sousa_wds

ds = sousa_wds.stream("{repo_id}", split="{example}", where="skill_tier == 'advanced'")
for sample in ds:
    audio, sr, labels = sample["audio"], sample["sample_rate"], sample["labels"]
    break
```

With webdataset, one URL per shard (brace-expanded), from a public repo:

```python
import io, json, soundfile as sf, webdataset as wds

url = "{resolve}"
for sample in wds.WebDataset(url, shardshuffle=False):
    audio, sr = sf.read(io.BytesIO(sample["flac"]), dtype="float32")   # (frames, channels)
    labels = json.loads(sample["json"])
    break
```

From a private repo, send your token: webdataset's `hf://` opener takes it from `HF_TOKEN` or
`hf auth login`; with plain URLs, let curl read it from the environment (never write it in
code):

```python
import webdataset as wds

ds = wds.WebDataset("{hf_urls}", shardshuffle=False)
print(next(iter(ds))["__key__"])
url = "{resolve}"
ds = wds.WebDataset(f"pipe:curl -sfL -H \\"Authorization: Bearer $HF_TOKEN\\" {{url}}",
                    shardshuffle=False)
print(next(iter(ds))["__key__"])
```

With `datasets`' WebDataset builder (`flac` is decoded by torchcodec; `json` is typed from the
first few samples, so a score that is null there is typed null: the `default` config has the
same labels with pinned types):

```python
from datasets import load_dataset

ds = load_dataset("webdataset", split="{example}", streaming=True,
                  data_files={{"{example}": "hf://datasets/{repo_id}/data/{example}-*.tar"}})
sample = next(iter(ds))   # flac (audio), json (labels), mid (bytes), __key__
```

Fetch one sample by byte range, without downloading its shard:

```python
import io, pandas as pd, soundfile as sf
from huggingface_hub import HfFileSystem

row = pd.read_parquet("hf://datasets/{repo_id}/metadata/{example}.parquet").iloc[0]
start = int(row.flac_offset)
flac = HfFileSystem().cat_file(f"datasets/{repo_id}/{{row.shard_path}}",
                               start=start, end=start + int(row.flac_size))   # one range request
audio, sr = sf.read(io.BytesIO(flac))   # (frames, channels)
```
"""


def _loose_body(repo_id: str, example: str, datasets_use: str) -> str:
    return f"""## Files

- `audio/{{split}}/{{key}}.flac`, `midi/{{split}}/{{key}}.mid`: one FLAC and one MIDI per sample.
- `metadata/{{split}}.parquet`: one row per sample with every label and its file names.
- `labels/strokes/{{split}}.parquet`, `labels/measures/{{split}}.parquet`: stroke- and
  measure-level labels, keyed by `sample_id`.
- `preview/{{split}}.parquet`: a few samples with their FLAC in an `audio` column.
- `manifest.json`: every file with its size and sha256.

{datasets_use}
Fetch one sample's files:

```python
import pandas as pd, soundfile as sf
from huggingface_hub import hf_hub_download

meta = pd.read_parquet("hf://datasets/{repo_id}/metadata/{example}.parquet")
row = meta.iloc[0]
path = hf_hub_download("{repo_id}", row.audio_filename, repo_type="dataset")
audio, sr = sf.read(path)   # (frames, channels)
```
"""
