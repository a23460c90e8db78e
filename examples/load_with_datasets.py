"""Read a packed SOUSA folder (or its Hub repo) with Hugging Face `datasets`.

    python examples/load_with_datasets.py PACKED_FOLDER_OR_REPO

How it works: every config of the dataset card is Parquet, so `load_dataset(source)` gives the
`default` config, the metadata: one row per sample with every label and where its audio is.
The `preview` config holds a few samples with an `Audio` column (decoded by torchcodec: torch +
torchcodec + FFmpeg needed). The audio of every sample is in the WebDataset shards, which
`datasets` streams with its `webdataset` builder, named with `data_files`.
"""

from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path

from datasets import load_dataset


def main() -> None:
    source = sys.argv[1]

    meta = load_dataset(source, split="train")
    print(f"metadata: {meta.num_rows} rows, {len(meta.column_names)} columns; "
          f"tiers: {sorted(set(meta['skill_tier']))}")

    preview = load_dataset(source, "preview", split="train")
    for example in islice(preview, 2):
        audio = example["audio"].get_all_samples()  # torchcodec AudioSamples
        print(f"preview {example['key']} ({example['rudiment_slug']}): "
              f"{tuple(audio.data.shape)} at {audio.sample_rate}")

    root = Path(source).as_posix() if Path(source).is_dir() else f"hf://datasets/{source}"
    shards = load_dataset("webdataset", data_files={"train": f"{root}/data/train-*.tar"},
                          split="train", streaming=True)
    for example in islice(shards, 3):
        waveform = example["flac"].get_all_samples()
        labels = example["json"]
        print(f"{example['__key__']}: {tuple(waveform.data.shape)} @ {waveform.sample_rate} Hz, "
              f"{labels['skill_tier']}, overall {labels['overall_score']:.3f}, "
              f"{len(example['mid'])} bytes of MIDI")


if __name__ == "__main__":
    main()
