"""The manifest's own fields checked against what the folder holds.

A manifest can parse (every field of the right type) and list files that all match, and still
lie about the pack: a changed seed, split byte count or fingerprint would give a false OK if
only the files were checked. Each field is compared with what it describes.

How it works:
- `source_fingerprint` must be a sha256 hex digest (it identifies the source, which is not
  here to recompute it from).
- `layout` must match the files: shards for "shards", loose audio/midi files for "loose".
- Per split, `samples` is the number of metadata rows, `bytes` the sum of the member sizes
  they record, `shards` the number of shard files the manifest lists.
- `options` (seed, order, shard size, samples per shard) must give exactly the sample order
  and shard cuts the folder holds: the shard plan is recomputed from the metadata's keys and
  member sizes with pack's own planner and compared shard by shard.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ..format import MANIFEST, SPLITS, Manifest, SplitCounts, metadata_path
from .report import VerifyReport

_SHA256 = re.compile(r"[0-9a-f]{64}")
_FIX = "the manifest or the metadata was changed after packing: pack again with --overwrite"


def check_manifest_fields(manifest: Manifest, rows_by_split: Mapping[str, list[dict]],
                          report: VerifyReport) -> None:
    """Every manifest field against the folder; `rows_by_split` holds the metadata rows of
    each split that could be read (a split missing there was already reported)."""
    if not _SHA256.fullmatch(manifest.source_fingerprint):
        report.add(f"{MANIFEST}: source_fingerprint {manifest.source_fingerprint[:80]!r} is not "
                   f"a sha256 hex digest; {_FIX}")
    shards = {split: [f for f in manifest.files
                      if f.path.startswith(f"data/{split}-") and f.path.endswith(".tar")]
              for split in SPLITS}
    loose = [f.path for f in manifest.files if f.path.split("/", 1)[0] in ("audio", "midi")]
    if manifest.layout == "shards" and loose:
        report.add(f"{MANIFEST}: layout 'shards' but it lists loose files ({loose[0]}, ...)")
    if manifest.layout == "loose" and any(shards.values()):
        report.add(f"{MANIFEST}: layout 'loose' but it lists tar shards")
    for split in SPLITS:
        counts = manifest.splits.get(split)
        if counts is None:
            report.add(f"{MANIFEST}: no counts for split {split}; {_FIX}")
        elif split in rows_by_split:
            _check_counts(split, counts, rows_by_split[split], len(shards[split]), report)
    if set(rows_by_split) == set(SPLITS):
        check_options(manifest, rows_by_split, report)


def _check_counts(split: str, counts: SplitCounts, rows: list[dict], shard_files: int,
                  report: VerifyReport) -> None:
    if counts.samples != len(rows):
        report.add(f"{metadata_path(split)}: {len(rows)} rows, manifest says {counts.samples}")
    nbytes = sum(r["flac_size"] + r["mid_size"] + (r["json_size"] or 0) for r in rows)
    found = {"bytes": nbytes, "shards": shard_files}
    for name, value in found.items():
        claimed = getattr(counts, name)
        if claimed != value:
            what = {"bytes": "bytes of members in the metadata",
                    "shards": "shard files listed"}[name]
            report.add(f"{MANIFEST}: splits.{split}.{name} is {claimed}, the folder holds "
                       f"{value} {what}; {_FIX}")


def check_options(manifest: Manifest, rows_by_split: Mapping[str, list[dict]],
                  report: VerifyReport) -> None:
    """The recorded options must reproduce the folder's sample order and shard cuts."""
    from ..pack.plan import order_split, plan_shards
    from ..source import SampleTable

    options = manifest.options
    rows = [(split, r) for split, split_rows in rows_by_split.items() for r in split_rows]
    # What pack's planner reads of a sample: its key, split and media sizes.
    samples = SampleTable.from_columns(key=[r["key"] for _, r in rows],
                                       split=[SPLITS.index(split) for split, _ in rows],
                                       audio_bytes=[r["flac_size"] for _, r in rows],
                                       midi_bytes=[r["mid_size"] for _, r in rows])
    if manifest.layout == "shards":
        plan = plan_shards(samples, shard_size=options.shard_size,
                           max_samples_per_shard=options.max_samples_per_shard,
                           seed=options.seed, order=options.order)
        planned = {split: [(s.path, s.samples.keys()) for s in plan.split_shards(split)]
                   for split in SPLITS}
    else:
        planned = {split: [("", order_split(samples, split, options.seed,
                                            options.order).keys())]
                   for split in SPLITS}
    for split in SPLITS:
        held = _held(rows_by_split[split], manifest.layout)
        difference = _first_difference(planned[split], held)
        if difference:
            report.add(f"{MANIFEST}: options {options.to_dict()} do not give the {split} "
                       f"samples this folder holds ({difference}); {_FIX}")


def _held(rows: list[dict], layout: str) -> list[tuple[str, list[str]]]:
    """The folder's (shard, keys in order) per shard; loose: one group in row order."""
    if layout != "shards":
        return [("", [r["key"] for r in rows])]
    by_shard: dict[str, list[dict]] = {}
    for row in rows:
        by_shard.setdefault(row["shard_path"], []).append(row)
    return [(path, [r["key"] for r in sorted(group, key=lambda r: r["index_in_shard"])])
            for path, group in sorted(by_shard.items())]


def _first_difference(planned: Sequence[tuple[str, list[str]]],
                      held: Sequence[tuple[str, list[str]]]) -> str | None:
    if planned == held:
        return None
    if len(planned) != len(held):
        return f"{len(planned)} shards planned, {len(held)} held"
    for (path, keys), (held_path, held_keys) in zip(planned, held, strict=True):
        where = path or "sample order"
        if path != held_path:
            return f"{path} planned, {held_path} held"
        if len(keys) != len(held_keys):
            return f"{where}: {len(keys)} samples planned, {len(held_keys)} held"
        for i, (a, b) in enumerate(zip(keys, held_keys, strict=True)):
            if a != b:
                return f"{where} position {i}: {a} planned, {b} held"
    return "order differs"
