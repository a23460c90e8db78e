"""Read and validate a SOUSA dataset folder: the first stage of every sousa-wds job.

- `read`: `read_dataset` → `SourceDataset` (samples sorted by split and key, one Arrow label
  table, warnings, the source fingerprint); `stream_parquet` opens a label file to stream it.
- `checks`: the rules on labels and splits, one function each (docs/input.md lists them).
- `media`: the rules on media files (paths, links, regular files, FLAC completeness).
"""

from .checks import stream_parquet
from .read import SourceDataset, SourceSample, read_dataset

__all__ = ["SourceDataset", "SourceSample", "read_dataset", "stream_parquet"]
