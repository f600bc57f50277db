"""Block processing with overlap: run a local operation on a long signal in bounded memory.

Every stage of the mastering chain before the loudness gain is *local*: an output
sample depends on the input within a bounded distance (FIR supports, envelope and
look-ahead windows, release windows). :func:`apply_blockwise` runs such a stage on
blocks of ``block`` samples, each read with ``halo`` samples of context on both
sides, and keeps the block's centre. When ``halo`` covers the stage's support the
result equals processing the whole signal at once; at the signal's own ends the
block sees the real edge, as a whole-signal run does.

Peak memory is that of the stage on ``block + 2 * halo`` samples, plus the output.

Examples
--------
>>> import numpy as np
>>> x = np.arange(20.0)[None]
>>> smooth = lambda b: np.convolve(b[0], np.ones(3) / 3, mode="same")[None]
>>> bool(np.allclose(apply_blockwise(smooth, x, block=5, halo=2), smooth(x)))
True
"""

from __future__ import annotations

from typing import Any, Callable

from . import backend

__all__ = ["apply_blockwise"]


def apply_blockwise(fn: Callable[[Any], Any], x: Any, block: int, halo: int) -> Any:
    """``fn`` applied to ``x`` (shape (..., n)) block by block with ``halo`` samples of context.

    Parameters
    ----------
    fn : callable
        A local, length-preserving operation on arrays of shape (..., m).
    x : array
        Input, NumPy or CuPy.
    block, halo : int
        Samples kept per block and samples of context read on each side.

    Returns
    -------
    array of the dtype ``fn`` returns, shape of ``x``.
    """
    if block < 1 or halo < 0:
        raise ValueError(f"block must be >= 1 and halo >= 0, got block={block!r}, halo={halo!r}")
    n = x.shape[-1]
    if n <= block + 2 * halo:
        return fn(x)
    xp = backend.namespace(x)
    out = None
    for a in range(0, n, block):  # a loop over blocks (minutes of audio each), not samples
        b = min(n, a + block)
        lo, hi = max(0, a - halo), min(n, b + halo)
        yb = fn(x[..., lo:hi])
        if out is None:
            out = xp.empty(x.shape[:-1] + (n,), dtype=yb.dtype)
        out[..., a:b] = yb[..., a - lo : a - lo + (b - a)]
    return out
