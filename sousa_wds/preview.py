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
import json
from pathlib import Path

import pyarrow as pa
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


def _flac_bytes(out: Path, row: dict) -> bytes:
    if row["shard_path"] is not None:
        path = out / row["shard_path"]
        with open(path, "rb") as fh:
            fh.seek(row["flac_offset"])
            data = fh.read(row["flac_size"])
    else:
        path = out / row["audio_filename"]
        data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != row["flac_sha256"]:
        raise PackError(f"{path}: the FLAC of {row['key']} does not match its flac_sha256 in "
                        f"the metadata; pack again with --overwrite")
    return data


def preview_table(out: Path, rows: list[dict], metadata: pa.Table) -> pa.Table:
    """The preview rows of one split: key, audio struct, labels.

    `rows` are chosen rows of `metadata`, each with its position `_row`; the columns are taken
    from the Arrow table (`arrays`: no pandas import for a handful of rows).
    """
    chosen = metadata.take(int_array(r["_row"] for r in rows))
    audio = pa.StructArray.from_arrays(
        [column([_flac_bytes(out, r) for r in rows], pa.binary()),
         column([f"{r['key']}.flac" for r in rows], pa.string())], fields=list(AUDIO_TYPE))
    columns = {"key": chosen.column("key"), "audio": audio}
    columns |= {name: chosen.column(name) for name in PREVIEW_LABELS}
    schema = PREVIEW_SCHEMA.with_metadata(
        {"huggingface": json.dumps({"info": {"features": PREVIEW_FEATURES}}, sort_keys=True)}
    )
    return pa.table(columns, schema=schema)


def write_preview(out: Path) -> list[str]:
    """Write `preview/{split}.parquet` for each split with samples; return their paths."""
    out = Path(out)
    present = {}
    for split in SPLITS:
        # ParquetFile, not pq.read_table: that one loads pyarrow.dataset, which imports pandas.
        metadata = pq.ParquetFile(out / metadata_path(split)).read(
            columns=list(dict.fromkeys(_NEEDED)))
        if metadata.num_rows:
            rows = [r | {"_row": i} for i, r in enumerate(metadata.to_pylist())]
            present[split] = (rows, metadata)
    written = []
    for split, (rows, metadata) in present.items():
        table = preview_table(out, choose_preview(rows, PREVIEW_MAX_BYTES // len(present)),
                              metadata)
        final = out / preview_path(split)
        with atomic_path(final) as temp:
            pq.write_table(table, temp, row_group_size=PREVIEW_ROW_GROUP_ROWS,
                           compression="zstd", store_schema=True)
        written.append(preview_path(split))
    return written
