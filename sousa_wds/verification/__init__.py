"""`sousa-wds verify`: check a packed folder against its manifest (see `folder.verify`).

- `report`: the report type, the manifest reader and the per-file check upload shares.
- `folder`: the flow: files, metadata rows, each split's data, keys, manifest fields.
- `shards`: tar shards, shard indexes and loose files against the metadata rows.
- `consistency`: the manifest's own fields (counts, options, fingerprint) against the folder.
"""

from .folder import verify
from .report import VerifyReport, load_manifest, local_file_problems

__all__ = ["VerifyReport", "load_manifest", "local_file_problems", "verify"]
