"""The on-disk contract of sousa-wds, defined once and free of side effects.

- `names`: splits, member names and order, every path a pack writes, the key rule, tar headers,
  Hub limits.
- `schema`: canonical column types of labels and metadata, the JSON encoding of {key}.json.
- `manifest`: `Manifest`, the parsed and checked `manifest.json`.

Everything that names a file, a member, a column or a split imports it from here, and
`docs/format.md` describes the same rules for users.
"""

from .manifest import FileEntry, Manifest, PackOptions, SplitCounts, pack_path_problem
from .names import *  # noqa: F403
from .names import __all__ as _names_all
from .schema import *  # noqa: F403
from .schema import __all__ as _schema_all

__all__ = ["FileEntry", "Manifest", "PackOptions", "SplitCounts", "pack_path_problem",
           *_names_all, *_schema_all]
