"""TPDF dither and quantisation to a fixed-point grid, seeded deterministically.

The dither noise is drawn on the host with NumPy's ``Generator(PCG64(seed))``
and moved to the array's device, so the same ``(x, bits, seed)`` gives the
same output on NumPy and on CuPy (bit-identical dither; the quantised values
agree wherever ``x * 2**(bits-1) + d`` does not round differently, which
float64 arithmetic makes practically always). The price is host RNG time
(about 10 ns a sample) and one host-to-device copy of float32 noise; a caller
that prefers device-side RNG may generate its own noise, since no caller
should rely on NumPy and CuPy dither being identical.

:func:`content_seed` derives the seed from the audio and the render settings,
so re-rendering the same track with the same settings is reproducible.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import numpy as np

from . import backend

__all__ = ["tpdf_dither_quantize", "quantize", "quantize_steps", "content_seed", "tpdf_error_rms"]


def tpdf_error_rms(bits: int) -> float:
    """Expected RMS of the total error ``q - x`` with TPDF dither, full scale 1.

    The dither (sum of two independent uniforms of +-0.5 LSB) has variance
    ``LSB**2 / 6``; rounding adds an independent ``LSB**2 / 12``: total
    ``LSB**2 / 4``, RMS ``LSB / 2`` with ``LSB = 2**-(bits-1)``.

    Examples
    --------
    >>> tpdf_error_rms(16) == 2.0 ** -16
    True
    """
    return 0.5 * 2.0 ** -(bits - 1)


def tpdf_dither_quantize(x: Any, bits: int = 16, seed: int = 0) -> Any:
    """Quantise to ``bits`` with TPDF dither: values ``k / 2**(bits-1)``.

    ``q = clip(round(x * 2**(bits-1) + u1 - u2), -2**(bits-1), 2**(bits-1) - 1)
    / 2**(bits-1)`` with ``u1, u2`` independent uniform on [0, 1) LSB (their
    difference is triangular on (-1, 1) LSB: the sum of two uniform +-0.5 LSB).
    The error is then signal-independent in mean and variance, RMS LSB/2.

    Parameters
    ----------
    x : array, shape (C, n) (any shape works)
        Audio, float, nominally within [-1, 1).
    bits : int
        Target word length, 2 .. 32 (16 for CD, 24 for hi-res).
    seed : int
        Non-negative seed (e.g. from :func:`content_seed`); the same seed
        gives the same dither.

    Returns
    -------
    q : array, shape of ``x``; float32 for ``bits <= 24`` (every grid value
        is exact in float32), float64 above.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(-0.5, 0.5, 1000, dtype=np.float32)[None]
    >>> q = tpdf_dither_quantize(x, 16, seed=1)
    >>> bool(np.all(q * 32768 == np.round(q * 32768)))
    True
    """
    xp = backend.namespace(x)
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 32:
        raise ValueError(f"bits must be an integer in [2, 32], got {bits!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    scale = float(2 ** (int(bits) - 1))
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    shape = tuple(x.shape)
    noise = rng.random(shape, dtype=np.float32)
    noise -= rng.random(shape, dtype=np.float32)
    d = backend.to_device(noise, xp)
    k = xp.round(x.astype(xp.float64) * scale + d.astype(xp.float64))
    k = backend.clip(k, -scale, scale - 1.0, out=k)
    out_dtype = xp.float32 if bits <= 24 else xp.float64
    return (k / scale).astype(out_dtype)


def quantize(x: Any, bits: int = 24) -> Any:
    """Round to the ``bits`` integer grid, saturating: values ``k / 2**(bits-1)``, no dither.

    For word lengths whose rounding error sits far below the noise of any
    recording (24 bit: -144 dBFS): the file writer then stores exactly these
    values (libsndfile's own float conversion truncates for WAV, rounds for
    FLAC), so a decoded file can be compared with them bit for bit.

    Parameters
    ----------
    x : array
        Audio, float, nominally within [-1, 1).
    bits : int
        Word length, 2 .. 24.

    Returns
    -------
    q : array, float32, shape of ``x``; ``|q - x| <= 2**-bits`` inside the range.

    Examples
    --------
    >>> import numpy as np
    >>> q = quantize(np.array([0.1, -1.0, 1.0], np.float32), 24)
    >>> (q * 2**23).astype(int).tolist()  # nearest step; +1.0 saturates one step below
    [838861, -8388608, 8388607]
    """
    # k / scale is exact in float32 (|k| <= 2**23, scale a power of two).
    return quantize_steps(x, bits) / float(2 ** (int(bits) - 1))


def quantize_steps(x: Any, bits: int = 24, *, out: Any = None) -> Any:
    """The grid steps :func:`quantize` rounds to: ``k = quantize(x, bits) * 2**(bits-1)``,
    whole numbers in float32 (exact), for a writer that hands integers to the codec.

    ``out``: a float32 array of ``x``'s shape to make the steps in (a reused buffer: no
    temporaries), returned.

    Examples
    --------
    >>> import numpy as np
    >>> quantize_steps(np.array([0.1, -1.0, 1.0], np.float32), 24).tolist()
    [838861.0, -8388608.0, 8388607.0]
    """
    xp = backend.namespace(x)
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 24:
        raise ValueError(f"bits must be an integer in [2, 24], got {bits!r}")
    scale = float(2 ** (int(bits) - 1))
    # x * 2**(bits-1) is exact in float32 (a power of two): rounding and the
    # clip happen on exact values.
    if out is None:
        k = xp.round(xp.astype(x, xp.float32, copy=False) * scale)
        return backend.clip(k, -scale, scale - 1.0, out=k)
    if out.dtype != xp.float32 or tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"out must be float32 of shape {tuple(x.shape)}, got {out.dtype} {tuple(out.shape)}")
    xp.multiply(x, xp.float32(scale), out=out)
    xp.rint(out, out=out)  # ties to even, as round
    return backend.clip(out, -scale, scale - 1.0, out=out)


def content_seed(x_host_bytes: bytes | bytearray | memoryview | np.ndarray, settings: str) -> int:
    """A 64-bit seed from a BLAKE2b hash of the audio bytes and a settings string.

    Parameters
    ----------
    x_host_bytes : bytes-like or numpy.ndarray
        The track's samples as host bytes (an array is hashed as its
        C-contiguous bytes, with its dtype and shape).
    settings : str
        Anything that should change the dither when it changes (preset name,
        bit depth, chain version).

    Returns
    -------
    int in [0, 2**64).

    Examples
    --------
    >>> content_seed(b"abc", "16bit") == content_seed(b"abc", "16bit")
    True
    >>> content_seed(b"abc", "16bit") != content_seed(b"abc", "24bit")
    True
    """
    if not isinstance(settings, str):
        raise ValueError(f"settings must be a str, got {type(settings).__name__}")
    h = hashlib.blake2b(digest_size=8, person=b"acetate-dither")
    if isinstance(x_host_bytes, np.ndarray):
        arr = np.ascontiguousarray(x_host_bytes)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(memoryview(cast(Any, arr)).cast("B"))  # cast: NumPy's stubs do not declare ndarray a Buffer
    elif isinstance(x_host_bytes, (bytes, bytearray, memoryview)):
        h.update(memoryview(x_host_bytes).cast("B"))
    else:
        raise ValueError(f"x_host_bytes must be bytes-like or a numpy array on the host, got {type(x_host_bytes).__name__}")
    h.update(b"\x00")
    h.update(settings.encode("utf-8"))
    return int.from_bytes(h.digest(), "little")
