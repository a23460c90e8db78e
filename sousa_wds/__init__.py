"""sousa-wds: publish the SOUSA drum-rudiment dataset as WebDataset shards, and stream it.

Importing the package is cheap: heavy modules (webdataset, which imports torch when it is
installed; huggingface_hub; datasets) load only when a function that needs them is called.
"""

from typing import Any

from .errors import SousaWdsError

__version__ = "0.1.0"

# Loader entry points, imported from sousa_wds.loader on first access (see __getattr__).
_LOADER_EXPORTS = ("stream", "get_sample", "metadata", "SampleMap")
# Restoring a SOUSA folder from a pack: sousa_wds.restore, imported on first access (the
# package is not named `extract`: importing it would rebind sousa_wds.extract to the module).
_EXTRACT_EXPORTS = ("extract",)

__all__ = ["SousaWdsError", "__version__", *_LOADER_EXPORTS, *_EXTRACT_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _LOADER_EXPORTS:
        from . import loader

        return getattr(loader, name)
    if name in _EXTRACT_EXPORTS:
        from . import restore

        return getattr(restore, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
