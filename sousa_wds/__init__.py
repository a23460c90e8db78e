"""sousa-wds: publish the SOUSA drum-rudiment dataset as WebDataset shards, and stream it.

Importing the package is cheap: heavy modules (webdataset, which imports torch when it is
installed; huggingface_hub; datasets) load only when a function that needs them is called.
"""

from typing import Any

from .errors import SousaWdsError

__version__ = "0.1.0"

# Reader entry points, imported from sousa_wds.read on first access (see __getattr__): only
# `stream` imports webdataset (and so torch).
_READ_EXPORTS = {
    "stream": "stream",
    "metadata": "dataset",
    "get_sample": "random_access",
    "SampleMap": "random_access",
    "load_audio": "random_access",
    "load_midi": "random_access",
}

__all__ = ["SousaWdsError", "__version__", *_READ_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _READ_EXPORTS:
        from importlib import import_module

        return getattr(import_module(f".read.{_READ_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
