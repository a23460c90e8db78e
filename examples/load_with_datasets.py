"""Read a packed SOUSA folder (or its Hub repo) with Hugging Face `datasets`.

    python examples/load_with_datasets.py PACKED_FOLDER_OR_REPO

How it works: the dataset card's YAML makes `load_dataset(source)` use the WebDataset shards
(`default` config): each example has `flac` (an audio decoder: torch + torchcodec needed),
`json` (the labels) and `mid` (bytes). `streaming=True` reads shard by shard without a cache.
The labels alone are in the metadata Parquet files. datasets 5.2 picks one builder per folder,
from the default config (webdataset), so the card's `metadata` config cannot be loaded by name;
the Parquet builder is named here with the same files.
"""

from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path

from datasets import load_dataset

from sousa_wds.format import metadata_path


def main() -> None:
    source = sys.argv[1]

    audio = load_dataset(source, split="train", streaming=True)
    for example in islice(audio, 3):
        waveform = example["flac"].get_all_samples()  # torchcodec AudioSamples
        labels = example["json"]
        print(f"{example['__key__']}: {tuple(waveform.data.shape)} @ {waveform.sample_rate} Hz, "
              f"{labels['skill_tier']}, overall {labels['overall_score']:.3f}, "
              f"{len(example['mid'])} bytes of MIDI")

    root = Path(source).as_posix() if Path(source).is_dir() else f"hf://datasets/{source}"
    meta = load_dataset("parquet", data_files={"train": f"{root}/{metadata_path('train')}"},
                        split="train")
    print(f"metadata: {meta.num_rows} rows, {len(meta.column_names)} columns; "
          f"tiers: {sorted(set(meta['skill_tier']))}")


if __name__ == "__main__":
    main()
