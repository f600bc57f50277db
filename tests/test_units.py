"""The dB helpers (acetate.kernels.units): the same bits as the inline expressions they replaced,
on Python numbers (math), NumPy and CuPy (their own namespace), and their edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from acetate.kernels import backend, loudness, truepeak, units


def _bits(a) -> bytes:
    a = backend.to_host(a)
    return a.dtype.str.encode() + a.tobytes()


@pytest.fixture(scope="module")
def levels() -> np.ndarray:
    """dB values over the range the kernels see (where libm and NumPy's SIMD pow/log10 differ in places)."""
    return np.random.default_rng(7).uniform(-150.0, 30.0, 4000)


@pytest.fixture(scope="module")
def linear() -> np.ndarray:
    return np.random.default_rng(8).uniform(1e-9, 4.0, 4000)


# --- Python numbers: Python's ** and math, Python floats out ------------------------------------


def test_python_numbers_match_the_inline_math(levels, linear):
    for g in levels.tolist()[:500]:
        assert units.db_to_amplitude(g).hex() == (10.0 ** (g / 20.0)).hex()
        assert units.db_to_power(g).hex() == (10.0 ** (g / 10.0)).hex()
        assert units.db_to_nepers(g).hex() == (g * (math.log(10.0) / 20.0)).hex()
        assert units.db_to_amplitude_exp(g).hex() == math.exp(g * (math.log(10.0) / 20.0)).hex()
    for v in linear.tolist()[:500]:
        assert units.amplitude_to_db(v).hex() == (20.0 * math.log10(v)).hex()
        assert units.power_to_db(v).hex() == (10.0 * math.log10(v)).hex()
        assert units.amplitude_to_db(v, floor=1e-15).hex() == (20.0 * math.log10(max(v, 1e-15))).hex()
        assert (-units.amplitude_to_db(v)).hex() == (-20.0 * math.log10(v)).hex()  # the limiter's and render's form


def test_python_numbers_give_python_floats():
    for f in (
        units.db_to_amplitude,
        units.db_to_power,
        units.amplitude_to_db,
        units.power_to_db,
        units.db_to_nepers,
        units.db_to_amplitude_exp,
    ):
        assert type(f(2.0)) is float
        assert type(f(2)) is float


def test_python_zero_negative_nan_inf():
    assert units.amplitude_to_db(0.0) == -math.inf
    assert units.amplitude_to_db(-0.0) == -math.inf
    assert units.power_to_db(0) == -math.inf
    assert math.isnan(units.amplitude_to_db(-1.0))
    assert math.isnan(units.power_to_db(math.nan))
    assert units.power_to_db(math.inf) == math.inf
    assert units.amplitude_to_db(0.0, floor=1e-15) == 20.0 * math.log10(1e-15)
    assert units.amplitude_to_db(-3.0, floor=1e-12) == 20.0 * math.log10(1e-12)
    assert math.isnan(units.amplitude_to_db(math.nan, floor=1e-12))  # max(nan, floor) is nan
    assert units.db_to_amplitude(-math.inf) == 0.0 and units.db_to_power(-math.inf) == 0.0
    assert math.isnan(units.db_to_amplitude(math.nan))
    with pytest.raises(OverflowError):  # Python's **, as the inline form
        units.db_to_amplitude(1e6)


# --- NumPy: the array's namespace, dtype kept ----------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_arrays_match_the_inline_numpy(levels, linear, dtype):
    g = levels.astype(dtype)
    v = linear.astype(dtype)
    assert _bits(units.db_to_amplitude(g)) == _bits(10.0 ** (g / 20.0))
    assert _bits(units.db_to_power(g)) == _bits(10.0 ** (g / 10.0))
    assert _bits(units.amplitude_to_db(v)) == _bits(20.0 * np.log10(v))
    assert _bits(units.power_to_db(v)) == _bits(10.0 * np.log10(v))
    assert _bits(units.power_to_db(v * v, floor=1e-30)) == _bits(10.0 * np.log10(np.maximum(v * v, 1e-30)))
    assert _bits(units.db_to_nepers(g)) == _bits(g * (math.log(10.0) / 20.0))
    assert _bits(units.db_to_amplitude_exp(g)) == _bits(np.exp(g * (math.log(10.0) / 20.0)))
    assert units.amplitude_to_db(v).dtype == dtype


def test_numpy_scalars_are_arrays_not_python_numbers(linear):
    """np.float64 (a float subclass) takes NumPy's log10, as ``xp.log10(np.max(a))`` did; a
    caller that used math.log10 on one passes float(v) (exact)."""
    for v in linear[:500]:
        r = units.amplitude_to_db(v)
        assert type(r) is np.float64
        assert r.hex() == (20.0 * np.log10(v)).hex()
        assert units.power_to_db(float(v)).hex() == (10.0 * math.log10(v)).hex()
    assert units.amplitude_to_db(np.float32(0.5)).dtype == np.float32


def test_numpy_zero_is_silent_minus_inf_and_nan_stays():
    a = np.array([0.0, 1.0, np.nan, np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        db = units.amplitude_to_db(a)
    assert db[0] == -np.inf and db[1] == 0.0 and np.isnan(db[2]) and db[3] == np.inf
    assert units.power_to_db(np.zeros(3), floor=1e-30).tolist() == [-300.0] * 3
    assert np.isnan(units.power_to_db(np.array([np.nan]), floor=1e-30)[0])  # maximum keeps NaN
    with np.errstate(invalid="ignore"):
        assert np.isnan(units.amplitude_to_db(np.array([-1.0]))[0])


def test_negative_arrays_warn_as_numpy_does():
    with np.errstate(invalid="warn"), pytest.warns(RuntimeWarning):
        units.power_to_db(np.array([-1.0]))


def test_round_trips():
    g = np.linspace(-120.0, 20.0, 141)
    np.testing.assert_allclose(units.amplitude_to_db(units.db_to_amplitude(g)), g, rtol=0, atol=1e-12)
    np.testing.assert_allclose(units.power_to_db(units.db_to_power(g)), g, rtol=0, atol=1e-12)
    np.testing.assert_allclose(units.db_to_amplitude_exp(g), units.db_to_amplitude(g), rtol=1e-14)


# --- the callers' own names ------------------------------------------------------------------------


def test_truepeak_to_db_is_amplitude_to_db(linear):
    peaks = np.concatenate([[0.0], linear[:100]])
    assert _bits(truepeak.to_db(peaks)) == _bits(units.amplitude_to_db(peaks))
    assert truepeak.to_db(np.max(peaks)).hex() == (20.0 * np.log10(np.max(peaks))).hex()


def test_loudness_from_power_is_bs1770(linear):
    z = linear[:200]
    assert _bits(loudness.loudness_from_power(z)) == _bits(-0.691 + 10.0 * np.log10(z))
    assert loudness.loudness_from_power(np.float64(0.0)) == -np.inf
    assert loudness.loudness_from_power(1.0) == -0.691
    np.testing.assert_allclose(loudness.power_from_loudness(loudness.loudness_from_power(z)), z, rtol=1e-13)
    assert loudness.power_from_loudness(-math.inf) == 0.0


# --- either backend (CuPy where a GPU is present) -------------------------------------------------


def test_backend_arrays_match_the_inline_expressions(xp, levels, linear):
    g = xp.asarray(levels)
    v = xp.asarray(np.concatenate([[0.0], linear]))
    for got, want in [
        (units.db_to_amplitude(g), 10.0 ** (g / 20.0)),
        (units.db_to_power(g), 10.0 ** (g / 10.0)),
        (units.power_to_db(v[1:]), 10.0 * xp.log10(v[1:])),
        (units.amplitude_to_db(v[1:]), 20.0 * xp.log10(v[1:])),
        (units.power_to_db(v, floor=1e-30), 10.0 * xp.log10(xp.maximum(v, 1e-30))),
        (units.db_to_amplitude_exp(g), xp.exp(g * (math.log(10.0) / 20.0))),
    ]:
        assert backend.namespace(got) is backend.namespace(want)
        assert _bits(got) == _bits(want)
    assert float(backend.to_host(units.amplitude_to_db(v))[0]) == -math.inf
    g32 = xp.asarray(levels, dtype=xp.float32)
    assert units.db_to_amplitude(g32).dtype == xp.float32
    assert _bits(units.db_to_amplitude(g32)) == _bits(10.0 ** (g32 / 20.0))
