"""sousa-wds: publish the SOUSA drum-rudiment dataset as WebDataset shards, and stream it.

Importing the package is cheap: heavy modules (webdataset, which imports torch when it is
installed; huggingface_hub; datasets) load only when a function that needs them is called.
"""

from typing import Any

from .errors import SousaWdsError

__version__ = "0.1.0"

# Loader entry points, imported from sousa_wds.loader on first access (see __getattr__).
_LOADER_EXPORTS = ("stream", "get_sample", "metadata", "SampleMap")

# Pack checking and publishing entry points: name -> module holding it (see __getattr__).
_PUBLISH_EXPORTS = {"verify": ".verification", "upload": ".publish.upload",
                    "verify_remote": ".publish.upload", "push": ".publish.push"}

__all__ = ["SousaWdsError", "__version__", *_LOADER_EXPORTS, *_PUBLISH_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _LOADER_EXPORTS:
        from . import loader

        return getattr(loader, name)
    if name in _PUBLISH_EXPORTS:
        from importlib import import_module

        return getattr(import_module(_PUBLISH_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
