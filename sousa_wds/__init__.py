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
# Restoring a SOUSA folder from a pack: sousa_wds.restore, imported on first access (the
# package is not named `extract`: importing it would rebind sousa_wds.extract to the module).
_EXTRACT_EXPORTS = ("extract",)

# Pack checking and publishing entry points: name -> module holding it (see __getattr__; the
# check package is `verification`, so importing it never rebinds sousa_wds.verify).
_PUBLISH_EXPORTS = {"verify": ".verification", "upload": ".publish.upload",
                    "verify_remote": ".publish.upload", "push": ".publish.push"}

# Ray Data (the `ray` extra): sousa_wds.ray_data, imported on first access; it imports Ray
# only when called.
_RAY_EXPORTS = ("ray_dataset",)

__all__ = ["SousaWdsError", "__version__", *_READ_EXPORTS, *_EXTRACT_EXPORTS, *_PUBLISH_EXPORTS,
           *_RAY_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _READ_EXPORTS:
        from importlib import import_module

        return getattr(import_module(f".read.{_READ_EXPORTS[name]}", __name__), name)
    if name in _EXTRACT_EXPORTS:
        from . import restore

        return getattr(restore, name)
    if name in _PUBLISH_EXPORTS:
        from importlib import import_module

        return getattr(import_module(_PUBLISH_EXPORTS[name], __name__), name)
    if name in _RAY_EXPORTS:
        from . import ray_data

        return getattr(ray_data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
