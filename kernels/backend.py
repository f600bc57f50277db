"""Array-module lookup, host/device moves and the dtype policy.

Kernels are written once against the array API: ``xp = namespace(x)`` and then
only ``xp.`` calls.  Where a kernel needs SciPy (filters, windows, ndimage), it
asks :func:`signal` or :func:`ndimage` for the module that matches ``xp``:
``scipy.signal`` for NumPy, ``cupyx.scipy.signal`` for CuPy.

CuPy is imported lazily and only when an input already is a CuPy array, or
when the caller asks for the GPU explicitly (:func:`gpu_available`,
:func:`array_module`), so a CPU-only machine imports every kernel.

Dtype policy: audio travels as float32 (channels first, shape ``(C, N)``);
filter states, energy sums and prefix sums are float64.
"""

from __future__ import annotations

import functools
import math
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import array_namespace, is_cupy_array

AUDIO_DTYPE = "float32"
ACCUM_DTYPE = "float64"

__all__ = [
    "check_fs",
    "namespace",
    "is_gpu",
    "signal",
    "ndimage",
    "clip",
    "read_only",
    "gpu_available",
    "array_module",
    "to_device",
    "to_host",
    "AUDIO_DTYPE",
    "ACCUM_DTYPE",
]


def namespace(*arrays: Any) -> ModuleType:
    """Return the array namespace of ``arrays`` (NumPy- or CuPy-compatible).

    A thin wrapper over :func:`array_api_compat.array_namespace`; Python
    scalars and ``None`` are ignored.
    """
    arrays = tuple(
        np.asarray(a) if isinstance(a, np.generic) else a
        for a in arrays
        if a is not None and (isinstance(a, np.generic) or not isinstance(a, (int, float, complex)))
    )
    return array_namespace(*arrays)


def is_gpu(xp_or_array: Any) -> bool:
    """True when ``xp_or_array`` is CuPy's namespace or a CuPy array."""
    if isinstance(xp_or_array, ModuleType):
        return "cupy" in xp_or_array.__name__
    return bool(is_cupy_array(xp_or_array))


def signal(xp: ModuleType) -> ModuleType:
    """``scipy.signal`` or ``cupyx.scipy.signal`` to match ``xp``."""
    if is_gpu(xp):
        import cupyx.scipy.signal as cusignal

        return cusignal
    import scipy.signal

    return scipy.signal


def fft(xp: ModuleType) -> ModuleType:
    """``scipy.fft`` (float32 transforms stay float32) or ``cupyx.scipy.fft`` to match ``xp``."""
    if is_gpu(xp):
        import cupyx.scipy.fft as cufft

        return cufft
    import scipy.fft

    return scipy.fft


def ndimage(xp: ModuleType) -> ModuleType:
    """``scipy.ndimage`` or ``cupyx.scipy.ndimage`` to match ``xp``."""
    if is_gpu(xp):
        import cupyx.scipy.ndimage as cundimage

        return cundimage
    import scipy.ndimage

    return scipy.ndimage


def clip(x: Any, lo: float | None, hi: float | None, *, out: Any = None) -> Any:
    """``x`` limited to ``[lo, hi]`` by its own library's ``clip`` (NumPy's or CuPy's), into ``out``
    if given; NaN stays NaN, and Python-number bounds keep ``x``'s dtype.

    The array API's ``clip`` (array-api-compat) is written with masks, for any
    library: 3-4x slower on NumPy than ``numpy.clip``, which hot paths (a writer's
    quantizer, the compressors' static curve) call block after block.

    Examples
    --------
    >>> import numpy as np
    >>> clip(np.array([-2.0, 0.5, np.nan], np.float32), -1.0, 1.0).tolist()
    [-1.0, 0.5, nan]
    """
    if is_cupy_array(x):
        import cupy

        return cupy.clip(x, lo, hi, out=out)
    return np.clip(x, lo, hi, out=out)


def read_only(a: np.ndarray) -> np.ndarray:
    """``a`` (a host array) made read-only, and returned: for designs cached and shared by
    every caller (interpolators, filter taps), which none may change in place."""
    a.setflags(write=False)
    return a


@functools.cache
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, missing driver ...
        return False


def array_module(device: str = "auto") -> ModuleType:
    """The array module for ``device``: ``"cpu"``, ``"gpu"`` or ``"auto"``.

    ``"auto"`` picks the GPU when one is available. Asking for ``"gpu"``
    without one raises :class:`RuntimeError` naming the cause.
    """
    if device not in ("cpu", "gpu", "auto"):
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")
    if device == "cpu" or (device == "auto" and not gpu_available()):
        return array_namespace(np.empty(0))
    if not gpu_available():
        raise RuntimeError("device='gpu' asked for, but CuPy is not installed or sees no CUDA device")
    import cupy

    return array_namespace(cupy.empty(0))


def to_device(x: Any, xp: ModuleType, dtype: str | None = None) -> Any:
    """Move (or view) host or device data ``x`` as an array of ``xp``."""
    if is_gpu(xp):
        import cupy

        return cupy.asarray(x, dtype=dtype)
    if is_cupy_array(x):
        x = x.get()
    return np.asarray(x, dtype=dtype)


def to_host(x: Any) -> np.ndarray:
    """Return ``x`` as a NumPy array (copying from the device if needed)."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def to_float(x: Any) -> float:
    """A 0-d array (either backend) or scalar as a Python float."""
    return float(to_host(x))


def check_fs(fs: Any, *, whole: bool = False) -> float:
    """``fs`` as a float after checking it is a positive, finite sample rate in hertz.

    The one check of a sample-rate argument for every kernel; ``whole`` also asks for a
    whole number of hertz (framing by samples needs one). Raises ``ValueError`` naming the value.

    Examples
    --------
    >>> check_fs(44100)
    44100.0
    >>> check_fs(44100.5, whole=True)
    Traceback (most recent call last):
    ...
    ValueError: fs must be a positive whole number of hertz, got 44100.5
    """
    if isinstance(fs, bool) or not isinstance(fs, (int, np.integer, float, np.floating)) or not math.isfinite(fs) or fs <= 0:
        raise ValueError(f"fs must be a positive {'whole number of hertz' if whole else 'finite sample rate in hertz'}, got {fs!r}")
    if whole and int(fs) != fs:
        raise ValueError(f"fs must be a positive whole number of hertz, got {fs!r}")
    return float(fs)
