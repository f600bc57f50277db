"""Decibel conversions, one definition each, for Python numbers and arrays of either backend.

Every function here is the exact expression the kernels used to write inline
(the same operations, in the same order, at the input's own dtype), so moving a
call site onto a helper changes no bit of its result:

=====================================  ==================================
:func:`db_to_amplitude`                ``10.0 ** (db / 20.0)``
:func:`db_to_power`                    ``10.0 ** (db / 10.0)``
:func:`amplitude_to_db`                ``20.0 * log10(x)``
:func:`power_to_db`                    ``10.0 * log10(x)``
:func:`db_to_nepers`                   ``db * (ln 10 / 20)`` (natural-log amplitude)
:func:`db_to_amplitude_exp`            ``exp(db * (ln 10 / 20))``
=====================================  ==================================

Which library does the arithmetic follows the input, and only the input:

* a Python ``int`` or ``float`` uses Python's arithmetic and :mod:`math`
  (``math.log10``, ``math.exp``) and returns a Python ``float``;
* anything else -- a NumPy array, a NumPy scalar (``np.float64`` is treated as
  the 0-d array it stands for, as :func:`acetate.kernels.backend.namespace`
  does), a CuPy array -- uses its own array namespace
  (:func:`acetate.kernels.backend.namespace`) and keeps its dtype: float32 in,
  float32 out.

The two are *not* interchangeable bit for bit (libm's ``log10`` and NumPy's
SIMD one differ in the last place for some inputs), which is why a call site
that computed with ``math`` hands the helper a Python float (``float(v)``:
exact) and one that computed with NumPy hands it the array or NumPy scalar.

Zero and negative input to the logarithms: zero gives ``-inf`` (silently, on
every backend: NumPy's divide-by-zero warning is suppressed, and no
``ValueError`` from :mod:`math`), a negative value gives NaN (NumPy warns, as its
``log10`` does; the Python path returns NaN quietly), NaN stays NaN and
``+inf`` stays ``+inf``. ``floor`` raises values below it to it *before* the
logarithm (``max(x, floor)`` for Python numbers, ``xp.maximum(x, floor)`` for
arrays; NaN stays NaN either way).

The loudness of a K-weighted mean square (BS.1770's ``-0.691 + 10 log10(z)``) is
not a generic conversion and lives with the meter:
:func:`acetate.kernels.loudness.loudness_from_power`.

Nothing here imports CuPy: a CuPy array brings its namespace with it.

Examples
--------
>>> db_to_amplitude(-6.0)
0.5011872336272722
>>> amplitude_to_db(0.5)
-6.020599913279624
>>> power_to_db(0.0), amplitude_to_db(1e-20, floor=1e-15)
(-inf, -300.0)
>>> import numpy as np
>>> db_to_power(np.array([-10.0, 0.0, 10.0], dtype=np.float32))
array([ 0.1,  1. , 10. ], dtype=float32)
"""

from __future__ import annotations

import math
from typing import Any, overload

import numpy as np

from . import backend

__all__ = [
    "db_to_amplitude",
    "db_to_power",
    "amplitude_to_db",
    "power_to_db",
    "db_to_nepers",
    "db_to_amplitude_exp",
    "NEPERS_PER_DB",
]

#: ``ln(10) / 20``: natural-log amplitude (nepers) per decibel; ``ln(a) = db * NEPERS_PER_DB``.
NEPERS_PER_DB = math.log(10.0) / 20.0


def _is_python_number(x: Any) -> bool:
    """A Python ``int``/``float`` (not a NumPy scalar, which is a 0-d array here)."""
    return isinstance(x, (int, float)) and not isinstance(x, np.generic)


def _log10(x: Any, floor: float | None) -> Any:
    """``log10(x)`` (after ``floor``) on ``x``'s own library: -inf for 0, NaN below 0."""
    if _is_python_number(x):
        v = x if floor is None else max(x, floor)
        if v > 0.0 or v != v:  # positive, +inf, NaN
            return math.log10(v)
        return -math.inf if v == 0.0 else math.nan
    xp = backend.namespace(x)
    if floor is not None:
        x = xp.maximum(x, floor)
    with np.errstate(divide="ignore"):
        return xp.log10(x)


@overload
def db_to_amplitude(db: float) -> float: ...
@overload
def db_to_amplitude(db: Any) -> Any: ...
def db_to_amplitude(db: Any) -> Any:
    """Amplitude (linear gain) of a level in dB: ``10.0 ** (db / 20.0)``.

    Parameters
    ----------
    db : float or array (NumPy, CuPy)
        Level or gain in dB.

    Returns
    -------
    float or array
        Linear amplitude ratio, in ``db``'s dtype (a Python float for a Python
        number). ``-inf`` gives 0.0, NaN gives NaN. A Python number beyond
        about +6165 dB overflows (``OverflowError``, Python's ``**``); arrays give inf.

    Examples
    --------
    >>> db_to_amplitude(0.0), db_to_amplitude(-20.0)
    (1.0, 0.1)
    >>> import numpy as np
    >>> db_to_amplitude(np.array([-np.inf, 6.0]))
    array([0.        , 1.99526231])
    """
    return 10.0 ** (db / 20.0)


@overload
def db_to_power(db: float) -> float: ...
@overload
def db_to_power(db: Any) -> Any: ...
def db_to_power(db: Any) -> Any:
    """Power (energy) ratio of a level in dB: ``10.0 ** (db / 10.0)``.

    Parameters
    ----------
    db : float or array (NumPy, CuPy)
        Level in dB.

    Returns
    -------
    float or array
        Linear power ratio, in ``db``'s dtype; ``-inf`` gives 0.0, NaN gives NaN.

    Examples
    --------
    >>> db_to_power(-30.0), db_to_power(10.0)
    (0.001, 10.0)
    """
    return 10.0 ** (db / 10.0)


@overload
def amplitude_to_db(x: float, floor: float | None = None) -> float: ...
@overload
def amplitude_to_db(x: Any, floor: float | None = None) -> Any: ...
def amplitude_to_db(x: Any, floor: float | None = None) -> Any:
    """Level in dB of a linear amplitude: ``20.0 * log10(x)``.

    Parameters
    ----------
    x : float or array (NumPy, CuPy)
        Linear amplitude (peak, gain).
    floor : float, optional
        Raise ``x`` to at least ``floor`` first (``max(x, floor)`` /
        ``xp.maximum(x, floor)``): ``1e-15`` reads silence as -300 dB.

    Returns
    -------
    float or array
        dB, in ``x``'s dtype. 0 gives ``-inf`` (no warning), a negative value
        NaN, NaN stays NaN.

    Examples
    --------
    >>> amplitude_to_db(10.0), amplitude_to_db(0.0), amplitude_to_db(0.0, floor=1e-12)
    (20.0, -inf, -240.0)
    >>> import numpy as np
    >>> amplitude_to_db(np.array([1.0, 0.1, 0.0], dtype=np.float32))
    array([  0., -20., -inf], dtype=float32)
    """
    return 20.0 * _log10(x, floor)


@overload
def power_to_db(x: float, floor: float | None = None) -> float: ...
@overload
def power_to_db(x: Any, floor: float | None = None) -> Any: ...
def power_to_db(x: Any, floor: float | None = None) -> Any:
    """Level in dB of a power (mean square, energy) ratio: ``10.0 * log10(x)``.

    Parameters
    ----------
    x : float or array (NumPy, CuPy)
        Power ratio.
    floor : float, optional
        Raise ``x`` to at least ``floor`` first: ``1e-30`` reads silence as -300 dB.

    Returns
    -------
    float or array
        dB, in ``x``'s dtype. 0 gives ``-inf`` (no warning), a negative value
        NaN, NaN stays NaN.

    Examples
    --------
    >>> power_to_db(100.0), power_to_db(0.0, floor=1e-30)
    (20.0, -300.0)
    >>> import numpy as np
    >>> power_to_db(np.array([np.nan, 1e-3]))
    array([ nan, -30.])
    """
    return 10.0 * _log10(x, floor)


@overload
def db_to_nepers(db: float) -> float: ...
@overload
def db_to_nepers(db: Any) -> Any: ...
def db_to_nepers(db: Any) -> Any:
    """Natural-log amplitude (nepers) of a level in dB: ``db * (ln 10 / 20)``,
    so that ``exp(db_to_nepers(db))`` is the amplitude (minimum-phase design works on it).

    Examples
    --------
    >>> round(db_to_nepers(20.0), 12) == round(math.log(10.0), 12)
    True
    """
    return db * NEPERS_PER_DB


@overload
def db_to_amplitude_exp(db: float) -> float: ...
@overload
def db_to_amplitude_exp(db: Any) -> Any: ...
def db_to_amplitude_exp(db: Any) -> Any:
    """Amplitude of a level in dB by the exponential: ``exp(db * (ln 10 / 20))``.

    Cheaper than :func:`db_to_amplitude`'s power on arrays, and not the same
    function: the two differ by about an ulp (of float64; results rounded to
    float32 almost always agree). Use it only where that is the intent (the
    compressors' float32 control-rate gains); ``math.exp`` for a Python number.

    Examples
    --------
    >>> abs(db_to_amplitude_exp(-6.0) - db_to_amplitude(-6.0)) < 1e-15
    True
    """
    if _is_python_number(db):
        return math.exp(db * NEPERS_PER_DB)
    return backend.namespace(db).exp(db * NEPERS_PER_DB)
