"""The `preview` files: a few samples' FLAC in Parquet, so the Hub viewer plays SOUSA audio.

How it works:
- Runs inside `pack`, after `metadata/{split}.parquet` and the shards (or loose files) are
  written, before the card and the manifest. It reads only what the pack wrote: the metadata
  rows, then each chosen sample's FLAC bytes by `flac_offset`/`flac_size` (one seek) or, in the
  loose layout, from `audio_filename`, checked against `flac_sha256`.
- The choice is pure and deterministic (`choose_preview`): per split, the smallest FLAC of each
  rudiment (ties by key), rudiments in name order, within an equal share of
  `PREVIEW_MAX_BYTES`, so the files stay small and cover as many rudiments as fit.
- `preview/{split}.parquet` holds `audio` in the layout of `datasets`' `Audio` feature (a struct
  of `bytes` and `path`) plus the key and a few labels; the features are also stored in the
  Parquet schema metadata (`huggingface`), the way `datasets` writes them, and pinned in the
  card (`PREVIEW_FEATURES`). Same input, same bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .arrays import column, int_array
from .errors import PackError
from .format import LABEL_COLUMNS, SPLITS, metadata_path, preview_path
from .io import atomic_path

PREVIEW_MAX_BYTES = 50_000_000  # FLAC bytes over all splits: small next to ~100 GB of shards
PREVIEW_ROW_GROUP_ROWS = 16  # the viewer pages through rows; small groups keep pages light
PREVIEW_LABELS: tuple[str, ...] = ("rudiment_slug", "skill_tier", "tempo_bpm", "overall_score")
AUDIO_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PREVIEW_SCHEMA = pa.schema(
    [pa.field("key", pa.string()), pa.field("audio", AUDIO_TYPE)]
    + [pa.field(name, LABEL_COLUMNS[name]) for name in PREVIEW_LABELS]
)
_NEEDED = ("key", "rudiment_slug", "flac_size", "flac_offset", "flac_sha256", "shard_path",
           "audio_filename", *PREVIEW_LABELS)


def _hf_value(typ: pa.DataType) -> dict:
    names = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}
    return {"dtype": names[typ], "_type": "Value"}


# `datasets`' own description of the columns (schema metadata key "huggingface").
PREVIEW_FEATURES: dict[str, dict] = {
    "key": _hf_value(pa.string()),
    "audio": {"_type": "Audio"},
    **{name: _hf_value(LABEL_COLUMNS[name]) for name in PREVIEW_LABELS},
}
_SCHEMA_WITH_FEATURES = PREVIEW_SCHEMA.with_metadata(
    {"huggingface": json.dumps({"info": {"features": PREVIEW_FEATURES}}, sort_keys=True)})


def choose_preview(rows: list[dict], budget: int) -> list[dict]:
    """The smallest sample of each rudiment, rudiments in name order, while within `budget`.

    The first rudiment's sample is always taken, so every split with samples has a preview.
    """
    smallest: dict[str, dict] = {}
    for row in rows:
        best = smallest.get(row["rudiment_slug"])
        if best is None or (row["flac_size"], row["key"]) < (best["flac_size"], best["key"]):
            smallest[row["rudiment_slug"]] = row
    chosen, used = [], 0
    for rudiment in sorted(smallest):
        row = smallest[rudiment]
        if chosen and used + row["flac_size"] > budget:
            continue
        chosen.append(row)
        used += row["flac_size"]
    return chosen


def smallest_per_rudiment(metadata: pa.Table) -> list[dict]:
    """Each rudiment's smallest FLAC (ties by key), with its row number as `_row`.

    These are the only rows `choose_preview` can pick; sorting in Arrow keeps a split of 80k
    samples from becoming 80k Python dicts in the pack parent.
    """
    if not metadata.num_rows:
        return []
    order = pc.sort_indices(metadata, sort_keys=[("rudiment_slug", "ascending"),
                                                  ("flac_size", "ascending"),
                                                  ("key", "ascending")])
    rudiments = metadata.column("rudiment_slug").take(order).combine_chunks()
    ends = pc.run_end_encode(rudiments).run_ends.to_pylist()
    firsts = order.take(int_array([0, *ends[:-1]])).to_pylist()
    return [r | {"_row": i} for r, i in zip(metadata.take(int_array(firsts)).to_pylist(), firsts)]


def _flac_column(out: Path, rows: list[dict]) -> pa.Array:
    """The rows' FLAC bytes read into one buffer (no per-file copies), each checked."""
    sizes = [r["flac_size"] for r in rows]
    data = bytearray(sum(sizes))
    view, at = memoryview(data), 0
    for row, size in zip(rows, sizes):
        if row["shard_path"] is not None:
            path, offset = out / row["shard_path"], row["flac_offset"]
        else:
            path, offset = out / row["audio_filename"], 0
        with open(path, "rb") as fh:
            fh.seek(offset)
            got = fh.readinto(view[at:at + size])
        if got != size or hashlib.sha256(view[at:at + size]).hexdigest() != row["flac_sha256"]:
            raise PackError(f"{path}: the FLAC of {row['key']} does not match its flac_sha256 "
                            f"in the metadata (the file was damaged after it was written); "
                            f"delete {path} and rerun with --resume, or pack again with "
                            "--overwrite")
        at += size
    offsets = int_array(itertools.accumulate(sizes, initial=0), pa.int32())
    return pa.Array.from_buffers(pa.binary(), len(rows),
                                 [None, offsets.buffers()[1], pa.py_buffer(data)])


def preview_table(out: Path, rows: list[dict], metadata: pa.Table) -> pa.Table:
    """The preview rows of one split: key, audio struct, labels.

    `rows` are chosen rows of `metadata`, each with its position `_row`; the columns are taken
    from the Arrow table (`arrays`: no pandas import for a handful of rows).
    """
    chosen = metadata.take(int_array(r["_row"] for r in rows))
    audio = pa.StructArray.from_arrays(
        [_flac_column(out, rows), column([f"{r['key']}.flac" for r in rows], pa.string())],
        fields=list(AUDIO_TYPE))
    columns = {"key": chosen.column("key"), "audio": audio}
    columns |= {name: chosen.column(name) for name in PREVIEW_LABELS}
    return pa.table(columns, schema=_SCHEMA_WITH_FEATURES)


def write_preview(out: Path) -> list[str]:
    """Write `preview/{split}.parquet` for each split with samples; return their paths.

    One row group of FLAC bytes is in memory at a time, not the whole preview.
    """
    out = Path(out)
    candidates = {}
    for split in SPLITS:
        # ParquetFile, not pq.read_table: that one loads pyarrow.dataset, which imports pandas.
        metadata = pq.ParquetFile(out / metadata_path(split)).read(
            columns=list(dict.fromkeys(_NEEDED)))
        if metadata.num_rows:
            candidates[split] = (smallest_per_rudiment(metadata), metadata)
    written = []
    for split, (rows, metadata) in candidates.items():
        chosen = choose_preview(rows, PREVIEW_MAX_BYTES // len(candidates))
        final = out / preview_path(split)
        with atomic_path(final) as temp, pq.ParquetWriter(
                temp, _SCHEMA_WITH_FEATURES, compression="zstd", store_schema=True) as writer:
            for at in range(0, len(chosen), PREVIEW_ROW_GROUP_ROWS):
                group = chosen[at:at + PREVIEW_ROW_GROUP_ROWS]
                writer.write_table(preview_table(out, group, metadata),
                                   row_group_size=PREVIEW_ROW_GROUP_ROWS)
        written.append(preview_path(split))
    return written
