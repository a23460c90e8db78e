"""Query SOUSA's labels without touching any audio: pandas, duckdb, then a `where=` stream.

    python examples/query_metadata.py PACKED_FOLDER_OR_REPO

How it works: `sousa_wds.metadata(source, split)` reads one Parquet file per split (local, HTTP
or Hub) with every label and where each sample sits in the shards. duckdb queries the same
DataFrame with SQL (or, for a local folder, the Parquet files directly). A pandas query string
that selects rows here is also what `sousa_wds.stream(source, where=...)` accepts: only the
shards holding matches are read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pandas as pd

import sousa_wds
from sousa_wds.format import SPLITS, metadata_path


def main() -> None:
    source = sys.argv[1]
    meta = pd.concat([sousa_wds.metadata(source, split) for split in SPLITS], ignore_index=True)
    print(f"{len(meta)} samples, {meta.shard_path.nunique()} shards, "
          f"{meta.num_frames.sum() / meta.sample_rate.iloc[0] / 3600:.2f} hours of audio")

    print("\npandas: samples and mean overall score per split and skill tier")
    print(meta.groupby(["split", "skill_tier"]).overall_score.agg(["count", "mean"]).round(3))

    print("\nduckdb: rudiments by mean timing accuracy (SQL over the DataFrame)")
    print(duckdb.sql("""
        SELECT rudiment_slug, count(*) AS samples, round(avg(timing_accuracy), 3) AS timing
        FROM meta GROUP BY rudiment_slug ORDER BY timing DESC
    """).df().to_string(index=False))

    if Path(source).is_dir():
        files = (Path(source) / metadata_path("*")).as_posix()
        print("\nduckdb: straight from the Parquet files")
        print(duckdb.sql(f"SELECT split, count(*) AS samples, sum(flac_size) AS flac_bytes "
                         f"FROM read_parquet('{files}') GROUP BY split ORDER BY split").df()
              .to_string(index=False))

    query = "skill_tier in ['advanced', 'professional'] and tempo_bpm >= 120"
    train = meta[meta.split == "train"]
    chosen = train.query(query)
    print(f"\nwhere={query!r}: {len(chosen)} of {len(train)} train samples, in "
          f"{chosen.shard.nunique()} of {train.shard.nunique()} shards")
    for sample in sousa_wds.stream(source, "train", where=query, shuffle=False):
        labels = sample["labels"]
        print(f"  first match: {sample['key']} ({labels['skill_tier']}, {labels['tempo_bpm']} "
              f"bpm), audio {tuple(sample['audio'].shape)}")
        break


if __name__ == "__main__":
    main()
