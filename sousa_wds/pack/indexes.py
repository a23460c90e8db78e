"""The files that list other files: the wids shard index of each split, and `manifest.json`.

How it works:
- `index/{split}.json` is a wids shard index (`wids.ShardListDataset("OUT/index/train.json")`
  opens it and gives random access to the split's samples by position, in metadata order):
  each shard's url relative to the index file, its sample count, size and sha256.
- `manifest.json` is a `format.Manifest`: the format version, options, per-split counts and
  every file with its size and sha256. Shards' hashes come from the writer, so 100 GB is not
  read twice. It is written last, so a folder with a manifest is a finished one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..format import (
    MANIFEST,
    SPLITS,
    FileEntry,
    Manifest,
    PackOptions,
    SplitCounts,
    index_path,
)
from ..io import file_sha256, write_bytes_atomic, write_json_atomic
from .tar import ShardResult

WIDS_KIND = "wids-shard-index-v1"


def wids_index(split: str, results: Sequence[ShardResult], samples: Mapping[str, int]) -> dict:
    """A wids shard index; `url` is relative to the index file (`../data/...`). `samples`:
    per shard name, its sample count (the results' rows are dropped once turned into
    columns)."""
    return {
        "__kind__": WIDS_KIND,
        "wids_version": 1,
        "name": split,
        "shardlist": [
            {"url": f"../{r.path}", "nsamples": samples[r.name], "filesize": r.bytes,
             "sha256": r.sha256}
            for r in results
        ],
    }


def write_indexes(out: Path, results_by_split: Mapping[str, Sequence[ShardResult]],
                  samples: Mapping[str, int]) -> None:
    for split in SPLITS:
        write_json_atomic(out / index_path(split),
                          wids_index(split, results_by_split[split], samples))


def build_manifest(
    out: Path, paths: Sequence[str], known_sha256: Mapping[str, str], *,
    fingerprint: str, options: PackOptions, splits: Mapping[str, SplitCounts],
) -> Manifest:
    """The manifest of the files at `paths` (relative to `out`); unknown hashes are computed."""
    files = tuple(
        FileEntry(rel, (out / rel).stat().st_size, known_sha256.get(rel) or file_sha256(out / rel))
        for rel in sorted(paths)
    )
    return Manifest(layout=options.layout, source_fingerprint=fingerprint, options=options,
                    splits=dict(splits), files=files)


def write_manifest(out: Path, manifest: Manifest) -> None:
    # Parse what we are about to write: the one parser readers use must accept it.
    raw = manifest.to_json()
    Manifest.from_json(raw, str(out / MANIFEST))
    write_bytes_atomic(out / MANIFEST, raw)
