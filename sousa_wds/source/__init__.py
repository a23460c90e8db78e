"""Read and validate a SOUSA dataset folder: the first stage of every sousa-wds job.

- `read`: `read_dataset` → `SourceDataset` (samples sorted by split and key, one Arrow label
  table, warnings, the source fingerprint); `stream_parquet` opens a label file to stream it.
- `checks`: the rules on labels and splits, one function each (docs/input.md lists them).
- `media`: the rules on media files (paths, links, regular files, FLAC completeness).
- `samples`: `SampleTable`, the samples as Arrow columns; `SourceSample`, one of them.
"""

from .checks import stream_parquet
from .read import SourceDataset, read_dataset
from .samples import SampleTable, SourceSample

__all__ = ["SampleTable", "SourceDataset", "SourceSample", "read_dataset", "stream_parquet"]
