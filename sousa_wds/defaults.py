"""Default values shown by `sousa-wds --help`, in a module that imports nothing.

How it works:
- The CLI builds its parser from these constants; the modules that use them (`card`,
  `pack.plan`) import them from here. Keeping them apart from pyarrow-importing modules lets
  `sousa-wds --help` and argument errors answer before pyarrow (~0.4 s) is loaded.
"""

DEFAULT_REPO_ID = "USER/SOUSA"
DEFAULT_SEED = 1234
