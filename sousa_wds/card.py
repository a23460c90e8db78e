"""The dataset card (README.md): YAML configs and pinned features, then a usage guide.

The YAML is what makes `datasets.load_dataset(repo)` and the Hub viewer work: one config per
view of the data (`default` = the tar shards, `metadata`, `strokes`, `measures`) and, for each,
`dataset_info.features` pinned from `sousa_wds.format`, so `datasets` never guesses a type from
the first five examples (it would type an all-null score column as null and fail later).
The YAML is rendered by huggingface_hub's `DatasetCardData`; the card holds no timestamps.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from .format import (
    LABEL_COLUMNS,
    LABEL_TABLE_COLUMNS,
    METADATA_SCHEMA,
    SPLITS,
    labels_path,
    metadata_path,
)
from .io import human_bytes

DEFAULT_REPO_ID = "USER/SOUSA"

_DTYPES = {
    pa.string(): "string",
    pa.large_string(): "string",
    pa.int64(): "int64",
    pa.float64(): "float64",
    pa.bool_(): "bool",
    pa.binary(): "binary",
}


def _features(columns: Mapping[str, pa.DataType]) -> list[dict]:
    return [{"name": name, "dtype": _DTYPES[typ]} for name, typ in columns.items()]


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def card_yaml_data(splits: Mapping[str, Mapping], license: str, layout: str = "shards") -> dict:
    """Front-matter fields; only splits that have samples get data files.

    In the loose layout there are no tars, so the metadata is the default config.
    """
    present = [s for s in SPLITS if splits[s]["samples"] > 0]
    metadata_files = [{"split": s, "path": metadata_path(s)} for s in present]
    if layout == "loose":
        views = [{"config_name": "default", "default": True, "data_files": metadata_files}]
    else:
        views = [
            {
                "config_name": "default",
                "default": True,
                "data_files": [{"split": s, "path": f"data/{s}-*.tar"} for s in present],
            },
            {"config_name": "metadata", "data_files": metadata_files},
        ]
    configs = views + [
        {
            "config_name": table,
            "data_files": [{"split": s, "path": labels_path(table, s)} for s in present],
        }
        for table in LABEL_TABLE_COLUMNS
    ]
    split_info = [
        {"name": s, "num_examples": splits[s]["samples"], "num_bytes": splits[s]["bytes"]}
        for s in present
    ]
    metadata_features = _features({f.name: f.type for f in METADATA_SCHEMA})
    if layout == "loose":
        infos = [{"config_name": "default", "features": metadata_features, "splits": split_info}]
    else:
        infos = [
            {
                "config_name": "default",
                "features": [
                    {"name": "flac", "dtype": "audio"},
                    {"name": "json", "struct": _features(LABEL_COLUMNS)},
                    {"name": "mid", "dtype": "binary"},
                    {"name": "__key__", "dtype": "string"},
                    {"name": "__url__", "dtype": "string"},
                ],
                "splits": split_info,
            },
            {"config_name": "metadata", "features": metadata_features},
        ]
    dataset_info = infos + [
        {"config_name": table, "features": _features(columns)}
        for table, columns in LABEL_TABLE_COLUMNS.items()
    ]
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

    yaml = DatasetCardData(**card_yaml_data(splits, license, layout)).to_yaml()
    rows = "\n".join(
        f"| {s} | {splits[s]['samples']:,} | {splits[s]['shards']} "
        f"| {human_bytes(splits[s]['bytes'])} |"
        for s in SPLITS
    )
    example = next((s for s in SPLITS if splits[s]["samples"]), "train")
    storage = ("loose FLAC and MIDI files" if layout == "loose"
               else "WebDataset shards")
    head = f"""---
{yaml}
---

# SOUSA: synthetic snare-drum rudiment performances

SOUSA holds synthetic snare performances of the 40 PAS drum rudiments, played by simulated
players of four skill tiers. Every sample is a FLAC recording (44.1 kHz, 24-bit, usually
stereo), the MIDI of the performance and hierarchical labels: exercise scores here and in the
`metadata` config, measure- and stroke-level rows in the `measures` and `strokes` configs.

This copy holds {sum(splits[s]['samples'] for s in SPLITS):,} samples from {profiles} player
profiles and {rudiments} rudiments, stored as {storage} (sousa-wds format v1). Splits
are by player: no profile appears in two splits.

| split | samples | shards | bytes |
|---|---:|---:|---:|
{rows}

"""
    body = _loose_body(repo_id, example) if layout == "loose" else _shards_body(repo_id, example)
    return head + body


def _shards_body(repo_id: str, example: str) -> str:
    return f"""## Files

- `data/{{split}}-NNNNN.tar`: WebDataset shards; each sample is `{{key}}.flac` (the original
  FLAC bytes), `{{key}}.json` (its labels) and `{{key}}.mid` (the MIDI of its group).
- `metadata/{{split}}.parquet`: one row per sample with every label, the shard holding it and
  the byte offset and size of each member, so one sample can be read with one range request.
- `labels/strokes/{{split}}.parquet`, `labels/measures/{{split}}.parquet`: stroke- and
  measure-level labels, keyed by `sample_id` (= the WebDataset key).
- `index/{{split}}.json`: shard lists (wids format) with sizes and sha256;
  `manifest.json`: every file with its size and sha256.

## Use

Stream with webdataset (a public repo; for a private one, use sousa-wds below):

```python
import io, json, soundfile as sf, webdataset as wds
from huggingface_hub import HfFileSystem

fs = HfFileSystem()
urls = [fs.url(p) for p in fs.glob("datasets/{repo_id}/data/{example}-*.tar")]
for sample in wds.WebDataset(urls, shardshuffle=False):
    audio, sr = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
    labels = json.loads(sample["json"])
    break
```

Or with sousa-wds (shuffling, DDP, filters, random access):

```python
import sousa_wds
ds = sousa_wds.stream("{repo_id}", split="{example}", where="skill_tier == 'advanced'")
```

With `datasets`:

```python
from datasets import load_dataset
ds = load_dataset("{repo_id}", split="{example}", streaming=True)        # audio + labels
# datasets picks one builder per repo from the first config (huggingface/datasets#7101),
# so name the Parquet files when loading the Parquet configs:
meta = load_dataset("{repo_id}", "metadata", split="{example}",
                    data_files={{"{example}": "metadata/{example}.parquet"}})
```

Query the metadata without touching audio:

```python
import pandas as pd
meta = pd.read_parquet("hf://datasets/{repo_id}/metadata/{example}.parquet")
meta.groupby("skill_tier").overall_score.mean()
```

```sql
-- duckdb
SELECT rudiment_slug, avg(overall_score) FROM 'hf://datasets/{repo_id}/metadata/*.parquet'
GROUP BY 1 ORDER BY 2 DESC;
```

Fetch one sample by byte range, without downloading its shard:

```python
import io, pandas as pd, soundfile as sf
from huggingface_hub import HfFileSystem
row = pd.read_parquet("hf://datasets/{repo_id}/metadata/{example}.parquet").iloc[0]
with HfFileSystem().open(f"datasets/{repo_id}/{{row.shard_path}}", block_size=0) as f:
    f.seek(row.flac_offset)
    audio, sr = sf.read(io.BytesIO(f.read(row.flac_size)))
```

Audio arrays from `soundfile` are
(frames, channels); sousa-wds's loader documents its own layout.
"""


def _loose_body(repo_id: str, example: str) -> str:
    return f"""## Files

- `audio/{{split}}/{{key}}.flac`, `midi/{{split}}/{{key}}.mid`: one FLAC and one MIDI per sample.
- `metadata/{{split}}.parquet`: one row per sample with every label and its file names.
- `labels/strokes/{{split}}.parquet`, `labels/measures/{{split}}.parquet`: stroke- and
  measure-level labels, keyed by `sample_id`.
- `manifest.json`: every file with its size and sha256.

## Use

```python
import pandas as pd, soundfile as sf
from huggingface_hub import hf_hub_download

meta = pd.read_parquet("hf://datasets/{repo_id}/metadata/{example}.parquet")
row = meta.iloc[0]
path = hf_hub_download("{repo_id}", row.audio_filename, repo_type="dataset")
audio, sr = sf.read(path)
```
"""
