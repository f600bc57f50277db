"""Array kernels: pure functions of arrays that run on NumPy or CuPy.

Every kernel takes arrays of the caller's module and returns arrays of the same
module; the module is found from the inputs (:func:`acetate.kernels.backend.namespace`).
Nothing here imports CuPy at import time, and nothing here knows about files,
presets, Dask or Parquet.
"""
