"""Array-module lookup, host/device moves, the SciPy-family dispatch and the dtype policy.

Kernels are written once against the array API: ``xp = namespace(x)`` and then
only ``xp.`` calls.  Where a kernel needs SciPy (filters, FFTs, ndimage), it
asks :func:`signal`, :func:`fft` or :func:`ndimage` for the library that matches
``xp``: SciPy for NumPy, ``cupyx.scipy`` for CuPy, and for any other array-API
namespace (``array_api_strict`` in the tests, a future GPU library) an adapter:
the standard's own ``xp.fft`` where the namespace has it, else SciPy run on an
explicit host copy (:func:`library_call`: DLPack out, ``xp.asarray`` back,
counted in :data:`LIBRARY_CALLS`). Each dispatcher answers only for the
functions listed in :data:`CUPYX_FUNCTIONS` (with the first CuPy release that
has each), so the table is the whole of what the kernels ask of ``cupyx``.

What the standard lacks and the kernels need (``cumsum``, ``einsum``,
``quantile``, gathers with multi-dimensional indices, strided frame views) is
provided here too: NumPy's or CuPy's own call for those, a composition of
standard calls (on the device) for any other namespace.

Reads from the device are explicit: :func:`to_host` and :func:`to_float` (and
``float()``/``int()``/``bool()`` of a 0-d array, which the kernels keep to a few
batched reads; ``tests/test_strict.py`` counts them on ``array_api_strict``).

CuPy is imported lazily and only when an input already is a CuPy array, or
when the caller asks for the GPU explicitly (:func:`gpu_available`,
:func:`array_module`), so a CPU-only machine imports every kernel.

Dtype policy: audio travels as float32 (channels first, shape ``(C, N)``);
filter states, energy sums and prefix sums are float64. Dtypes are passed as
the namespace's dtype objects (``xp.float32``); :func:`dtype_of` turns a name into one.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import math
import string
import threading
from types import ModuleType
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
from array_api_compat import array_namespace, is_cupy_array, is_cupy_namespace, is_numpy_array, is_numpy_namespace

AUDIO_DTYPE = "float32"
ACCUM_DTYPE = "float64"

__all__ = [
    "check_fs",
    "namespace",
    "is_gpu",
    "is_numpy",
    "is_native",
    "dtype_of",
    "is_device_array",
    "converting",
    "signal",
    "fft",
    "ndimage",
    "CUPYX_FUNCTIONS",
    "LIBRARY_CALLS",
    "library_call",
    "clip",
    "cumsum",
    "einsum",
    "quantile",
    "take",
    "scatter",
    "frames",
    "read_together",
    "Pending",
    "read_pending",
    "read_only",
    "gpu_available",
    "array_module",
    "to_device",
    "to_host",
    "to_float",
    "AUDIO_DTYPE",
    "ACCUM_DTYPE",
]

#: Every SciPy-family function the kernels call through :func:`signal`, :func:`fft` and
#: :func:`ndimage`, by library, with the first CuPy release whose ``cupyx.scipy.<library>``
#: has it (checked against CuPy's release tags: ``fftconvolve``/``oaconvolve`` came in v9,
#: ``sosfilt`` in v13.0.0a1 and ``resample_poly`` in v13.0.0rc1, with cuSignal's move into
#: CuPy). The dispatchers refuse any other name, and ``tests/test_strict.py`` checks that the
#: ``gpu`` extras' CuPy pins are at or above every entry.
CUPYX_FUNCTIONS: dict[str, dict[str, str]] = {
    "signal": {"fftconvolve": "9.0.0", "oaconvolve": "9.0.0", "sosfilt": "13.0.0", "resample_poly": "13.0.0"},
    "fft": {"rfft": "7.0.0", "irfft": "7.0.0", "fft": "7.0.0", "ifft": "7.0.0"},
    "ndimage": {"minimum_filter1d": "8.0.0"},
}

#: Calls of a SciPy function on a host copy, for a namespace that has no library of its own
#: (:func:`library_call`), by ``"<library>.<function>"``: explicit conversions, not transfers
#: a kernel made by accident.
LIBRARY_CALLS: collections.Counter[str] = collections.Counter()

_STATE = threading.local()


@contextlib.contextmanager
def _converting() -> Iterator[None]:
    """Marks an explicit conversion (:func:`to_host`, :func:`library_call`) in progress."""
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1


def converting() -> bool:
    """True inside one of the backend's explicit conversions (for the tests' audit of implicit ones)."""
    return getattr(_STATE, "depth", 0) > 0


def namespace(*arrays: Any) -> ModuleType:
    """Return the array namespace of ``arrays`` (array-api-compat's NumPy or CuPy, or any other
    array-API namespace, such as ``array_api_strict``).

    A thin wrapper over :func:`array_api_compat.array_namespace`; Python
    scalars and ``None`` are ignored. Arrays of two namespaces raise ``TypeError``.
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


def is_numpy(xp_or_array: Any) -> bool:
    """True when ``xp_or_array`` is NumPy (its namespace, array-api-compat's, or a NumPy array)."""
    if isinstance(xp_or_array, ModuleType):
        return bool(is_numpy_namespace(xp_or_array))
    return bool(is_numpy_array(xp_or_array))


def is_native(xp: Any) -> bool:
    """True for the namespaces with a SciPy of their own (NumPy, CuPy): the kernels' tuned paths
    (views, in-place scans, ``out=``) are theirs; any other namespace takes standard calls only."""
    return is_numpy(xp) or bool(is_cupy_namespace(xp) if isinstance(xp, ModuleType) else is_cupy_array(xp))


def dtype_of(xp: Any, name: Any) -> Any:
    """``xp``'s dtype object for ``name`` (``"float32"``), or ``name`` itself when it is one already."""
    return getattr(xp, name) if isinstance(name, str) else name


def _is_foreign_array(a: Any) -> bool:
    """An array of a namespace without a SciPy of its own (neither NumPy nor CuPy)."""
    return hasattr(a, "__array_namespace__") and not is_numpy_array(a) and not is_cupy_array(a)


def _to_numpy(x: Any) -> np.ndarray:
    """A foreign array as NumPy, by DLPack (a view where the producer allows it, else a host copy)."""
    try:
        return np.from_dlpack(x)
    except (BufferError, RuntimeError, TypeError, ValueError):  # not on the host: ask for a host copy
        return np.from_dlpack(x, device="cpu", copy=True)


def library_call(xp: Any, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` (a NumPy/SciPy function) for arrays of ``xp``, a namespace without
    a SciPy of its own: array arguments converted to NumPy explicitly (DLPack), the result(s)
    brought back with ``xp.asarray`` on the first argument array's device. Counted in
    :data:`LIBRARY_CALLS` under ``name``: a sanctioned conversion, not a transfer."""
    LIBRARY_CALLS[name] += 1
    device = next((a.device for a in (*args, *kwargs.values()) if _is_foreign_array(a)), None)

    def host(a: Any) -> Any:
        return _to_numpy(a) if _is_foreign_array(a) else a

    def back(r: Any) -> Any:
        if isinstance(r, tuple):
            return tuple(back(v) for v in r)
        return xp.asarray(r, device=device) if isinstance(r, (np.ndarray, np.generic)) else r

    with _converting():
        out = fn(*(host(a) for a in args), **{k: host(v) for k, v in kwargs.items()})
        return back(out)


class _Library:
    """The functions of one SciPy-family library (``signal``, ``fft``, ``ndimage``) for one namespace,
    restricted to :data:`CUPYX_FUNCTIONS`: SciPy's for NumPy, ``cupyx.scipy``'s for CuPy, for any
    other namespace the standard's ``xp.fft`` where it has one, else SciPy on host copies
    (:func:`library_call`)."""

    def __init__(self, kind: str, xp: Any) -> None:
        self._kind, self._xp = kind, xp

    def __repr__(self) -> str:
        return f"<backend.{self._kind} for {getattr(self._xp, '__name__', self._xp)}>"

    def __getattr__(self, name: str) -> Any:
        return _library_function(self._kind, name, self._xp)


def _check_listed(kind: str, name: str) -> None:
    if name not in CUPYX_FUNCTIONS[kind]:
        raise AttributeError(
            f"backend.{kind}() has no {name!r}: list it in backend.CUPYX_FUNCTIONS[{kind!r}] with the first CuPy release that has it"
        )


@functools.lru_cache(maxsize=256)
def _library_function(kind: str, name: str, xp: Any) -> Any:
    _check_listed(kind, name)
    if is_gpu(xp):
        return getattr(importlib.import_module(f"cupyx.scipy.{kind}"), name)
    if is_numpy(xp):
        return getattr(importlib.import_module(f"scipy.{kind}"), name)
    return _foreign_function(kind, name, xp)


def _foreign_function(kind: str, name: str, xp: Any) -> Callable[..., Any]:
    if kind == "fft" and hasattr(xp, "fft"):  # the standard's FFT extension: on the device, no copies

        def standard(*args: Any, overwrite_x: bool = False, **kwargs: Any) -> Any:  # overwrite_x: SciPy's hint only
            return getattr(xp.fft, name)(*args, **kwargs)

        return standard
    fn = getattr(importlib.import_module(f"scipy.{kind}"), name)

    def adapter(*args: Any, **kwargs: Any) -> Any:
        return library_call(xp, f"{kind}.{name}", fn, *args, **kwargs)

    return adapter


def signal(xp: ModuleType) -> Any:
    """``scipy.signal`` or ``cupyx.scipy.signal`` to match ``xp`` (an adapter for any other namespace)."""
    return _Library("signal", xp)


def fft(xp: ModuleType) -> Any:
    """``scipy.fft`` (float32 transforms stay float32) or ``cupyx.scipy.fft`` to match ``xp``
    (for any other namespace its standard ``xp.fft``)."""
    return _Library("fft", xp)


def ndimage(xp: ModuleType) -> Any:
    """``scipy.ndimage`` or ``cupyx.scipy.ndimage`` to match ``xp`` (an adapter for any other namespace)."""
    return _Library("ndimage", xp)


def clip(x: Any, lo: float | None, hi: float | None, *, out: Any = None) -> Any:
    """``x`` limited to ``[lo, hi]`` by its own library's ``clip`` (NumPy's or CuPy's), into ``out``
    if given; NaN stays NaN, and Python-number bounds keep ``x``'s dtype.

    The array API's ``clip`` (array-api-compat) is written with masks, for any
    library: 3-4x slower on NumPy than ``numpy.clip``, which hot paths (a writer's
    quantizer, the compressors' static curve) call block after block. Any other
    namespace uses its standard ``clip``.

    Examples
    --------
    >>> import numpy as np
    >>> clip(np.array([-2.0, 0.5, np.nan], np.float32), -1.0, 1.0).tolist()
    [-1.0, 0.5, nan]
    """
    if is_cupy_array(x):
        import cupy

        return cupy.clip(x, lo, hi, out=out)
    if _is_foreign_array(x):
        y = namespace(x).clip(x, lo, hi)
        if out is None:
            return y
        out[...] = y
        return out
    return np.clip(x, lo, hi, out=out)


def cumsum(xp: Any, x: Any, axis: int = -1) -> Any:
    """Cumulative sum along ``axis``: NumPy's or CuPy's ``cumsum``, the standard's
    ``cumulative_sum`` elsewhere (the same sums)."""
    if is_native(xp):
        return xp.cumsum(x, axis=axis)
    return xp.cumulative_sum(x, axis=axis)


def einsum(xp: Any, subscripts: str, *operands: Any) -> Any:
    """``einsum`` for explicit subscripts without repeated indices within an operand
    (``"kcn,kn->cn"``): NumPy's or CuPy's own; elsewhere the operands broadcast to the
    union of their indices, multiplied and summed over those not in the output.

    Examples
    --------
    >>> import array_api_strict as xs
    >>> a = xs.reshape(xs.arange(6, dtype=xs.float64), (2, 3))
    >>> to_host(einsum(xs, "cn,cn->n", a, a)).tolist()
    [9.0, 17.0, 29.0]
    """
    if is_native(xp):
        return xp.einsum(subscripts, *operands)
    inputs, output = subscripts.replace(" ", "").split("->")
    terms = inputs.split(",")
    if len(terms) != len(operands) or any(len(t) != len(set(t)) or len(t) != op.ndim for t, op in zip(terms, operands)):
        raise ValueError(f"einsum({subscripts!r}): one distinct index per operand axis is supported, got {[op.shape for op in operands]}")
    letters = "".join(dict.fromkeys(output + "".join(terms)))  # output indices first, then the summed ones
    if not set(letters) <= set(string.ascii_letters):
        raise ValueError(f"einsum({subscripts!r}): indices must be letters")
    prod = None
    for t, op in zip(terms, operands):
        order = sorted(range(len(t)), key=lambda i: letters.index(t[i]))
        v = xp.permute_dims(op, tuple(order)) if order != list(range(len(t))) else op
        present = sorted(t, key=letters.index)
        shape = tuple(v.shape[present.index(c)] if c in present else 1 for c in letters)
        v = xp.reshape(v, shape)
        prod = v if prod is None else prod * v
    assert prod is not None
    summed = tuple(range(len(output), len(letters)))
    return xp.sum(prod, axis=summed) if summed else prod


def quantile(xp: Any, a: Any, q: float, axis: int = 0) -> Any:
    """The ``q`` quantile (0..1, linear interpolation: NumPy's default) along ``axis``: NumPy's or
    CuPy's own; elsewhere from a sort (the same order statistics, interpolated as NumPy does)."""
    if is_native(xp):
        return xp.quantile(a, q, axis=axis)
    s = xp.sort(a, axis=axis)
    n = int(s.shape[axis])
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    t = pos - lo
    vlo = take(xp, s, xp.asarray([lo]), axis=axis)
    vhi = take(xp, s, xp.asarray([hi]), axis=axis)
    d = vhi - vlo
    v = vlo + d * t if t < 0.5 else vhi - d * (1.0 - t)  # NumPy's _lerp, both halves
    return xp.squeeze(v, axis=axis)


def take(xp: Any, a: Any, indices: Any, axis: int = 0) -> Any:
    """``a`` gathered along ``axis`` at integer ``indices`` of any shape (the standard's ``take``
    wants them 1-D): shape ``a.shape[:axis] + indices.shape + a.shape[axis + 1:]``."""
    axis = axis % a.ndim
    if indices.ndim == 1:
        return xp.take(a, indices, axis=axis)
    flat = xp.take(a, xp.reshape(indices, (-1,)), axis=axis)
    return xp.reshape(flat, tuple(a.shape[:axis]) + tuple(indices.shape) + tuple(a.shape[axis + 1 :]))


def scatter(xp: Any, base: Any, indices: Any, values: Any) -> Any:
    """``base`` (1-D) with ``base[indices] = values`` (``indices`` 1-D, sorted, distinct; ``values``
    one per index): in place on NumPy and CuPy (and returned); elsewhere a new array, from a
    search of the sorted indices (the standard has no scatter)."""
    if is_native(xp):
        base[indices] = values
        return base
    k = int(indices.shape[0])
    if k == 0:
        return base
    pos = xp.arange(base.shape[0], dtype=indices.dtype)
    at = xp.clip(xp.searchsorted(indices, pos), 0, k - 1)
    hit = xp.take(indices, at) == pos
    return xp.where(hit, xp.take(xp.astype(values, base.dtype), at), base)


def frames(x: Any, frame: int, hop: int, count: int) -> Any:
    """Frames (C, count, frame) of ``x`` (C, n): row ``k`` is ``x[:, k hop : k hop + frame]``.

    NumPy and CuPy: a read-only strided view of C-contiguous ``x`` (no index array, no copy);
    any other namespace: a gather (the standard has no views by strides).
    """
    if is_numpy_array(x) or is_cupy_array(x):
        if is_cupy_array(x):
            from cupy.lib.stride_tricks import as_strided
        else:
            from numpy.lib.stride_tricks import as_strided
        item = x.strides[1]
        return as_strided(x, shape=(x.shape[0], count, frame), strides=(x.strides[0], hop * item, item))
    xp = namespace(x)
    idx = xp.reshape(xp.arange(count) * hop, (-1, 1)) + xp.reshape(xp.arange(frame), (1, -1))
    return take(xp, x, idx, axis=1)


def read_together(*values: Any) -> list[np.ndarray]:
    """Device arrays (real or boolean, any shapes; Python numbers pass through) read back in one
    transfer: cast to float64 (exact for the kernels' values, and for integers below 2**53),
    concatenated, copied to the host once (:func:`to_host`) and split, each in its own shape.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = read_together(np.float32(0.5), np.arange(3))
    >>> float(a), b.tolist()
    (0.5, [0.0, 1.0, 2.0])
    """

    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, np.generic)

    arrays = [np.asarray(v) if isinstance(v, np.generic) else v for v in values if not is_number(v)]
    if not arrays:
        return [np.asarray(v, dtype=np.float64) for v in values]
    xp = namespace(*arrays)
    flat = [
        xp.asarray([float(v)], dtype=xp.float64) if is_number(v) else xp.reshape(xp.astype(xp.asarray(v), xp.float64), (-1,))
        for v in values
    ]
    host = to_host(flat[0] if len(flat) == 1 else xp.concat(flat))
    out, at = [], 0
    for v, f in zip(values, flat):
        size = int(f.shape[0])
        shape = tuple(v.shape) if hasattr(v, "shape") else ()
        out.append(host[at : at + size].reshape(shape))
        at += size
    return out


class Pending(NamedTuple):
    """A result that waits on device values: ``values`` (device arrays, or Python numbers) and
    ``finish``, which makes the result from their host copies (:func:`read_together`'s, in order).
    Several are read in one transfer by :func:`read_pending`."""

    values: tuple
    finish: Callable[[list[np.ndarray]], Any]


def read_pending(*pending: Pending) -> list[Any]:
    """Every pending result, from one read of all their device values."""
    host = read_together(*(v for p in pending for v in p.values))
    out, at = [], 0
    for p in pending:
        out.append(p.finish(host[at : at + len(p.values)]))
        at += len(p.values)
    return out


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


def is_device_array(x: Any) -> bool:
    """True for an array of any namespace but NumPy (CuPy, ``array_api_strict``, ...): data that stays
    in its own namespace (:func:`acetate.pipeline.chain.render.master`)."""
    return bool(is_cupy_array(x)) or _is_foreign_array(x)


def to_device(x: Any, xp: ModuleType, dtype: Any = None) -> Any:
    """Move (or view) host or device data ``x`` as an array of ``xp`` (``dtype``: a dtype of
    ``xp`` or its name). An upload: nothing is read back from a device."""
    if is_gpu(xp):
        import cupy

        return cupy.asarray(x, dtype=dtype)
    if is_cupy_array(x):
        x = x.get()
    if is_numpy(xp):
        return np.asarray(x, dtype=dtype)
    dt = None if dtype is None else dtype_of(xp, dtype)
    if _is_foreign_array(x) and namespace(x) is xp:
        return x if dt is None or x.dtype == dt else xp.astype(x, dt)
    return xp.asarray(x, dtype=dt)


def to_host(x: Any) -> np.ndarray:
    """Return ``x`` as a NumPy array (copying from the device if needed): an explicit read."""
    if is_cupy_array(x):
        return x.get()
    if _is_foreign_array(x):
        with _converting():
            return _to_numpy(x)
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
