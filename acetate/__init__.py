"""Acetate: GPU batch mastering for music catalogues.

The import package gathers the project's top-level folders as sub-packages:

- :mod:`acetate.kernels`  -- pure array kernels (NumPy or CuPy, chosen by the input)
- :mod:`acetate.pipeline` -- per-track stages, batch orchestration and the CLI
- :mod:`acetate.schemas`  -- versioned Arrow/Parquet schemas
- :mod:`acetate.jobs`     -- declarative job definitions (YAML)
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("acetate")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
