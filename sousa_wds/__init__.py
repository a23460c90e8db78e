"""sousa-wds: publish the SOUSA drum-rudiment dataset as WebDataset shards, and stream it.

Importing the package is cheap: heavy modules (webdataset, which imports torch when it is
installed; huggingface_hub; datasets) load only when a function that needs them is called.
"""

from .errors import SousaWdsError

__version__ = "0.1.0"

__all__ = ["SousaWdsError", "__version__"]
