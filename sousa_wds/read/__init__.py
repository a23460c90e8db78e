"""The consumer side: read what `sousa-wds pack` wrote, from a folder, an HTTP mirror or the Hub.

Flow: `location` (where the bytes are; `http` for range reads with retries) → `dataset` (the
manifest and per-split metadata) → `query` (which rows) → `epoch` (pure plan: which rank and
worker reads which rows, in which order) → `samples` (read byte ranges, check headers and
sha256, decode) → `stream` (the webdataset pipeline for training) or `random_access` (one
sample or member by key or row). Nothing is imported here: `sousa_wds.stream`, `metadata`,
`get_sample`, `SampleMap`, `load_audio` and `load_midi` load their module on first use.
"""
