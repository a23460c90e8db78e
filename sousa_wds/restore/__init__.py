"""`extract`: restore a SOUSA dataset folder, in the generator's own layout, from a pack.

`sousa_wds.extract` is this package's `extract`; the package has its own name so that importing
it never rebinds `sousa_wds.extract` to a module.

- `plan`: pure: source order, the generator's paths, one MIDI per augmentation group, the
  path-safety rule for keys and slugs.
- `access`: where the pack is read (location, selection, verified copies of label files).
- `labels`: labels/*.parquet, splits.json and index.json.
- `run`: `extract()`: staging, resume, streaming shard by shard, atomic writes, progress.
See docs/extract.md.
"""

from .run import ExtractProgress, ExtractSummary, extract

__all__ = ["ExtractProgress", "ExtractSummary", "extract"]
