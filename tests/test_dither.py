"""TPDF dither and quantisation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import pink_noise

from acetate.kernels import backend, dither

LSB16 = 2.0**-15


def test_deterministic_and_seeded(xp):
    x = xp.asarray(pink_noise(0.5, seed=1).astype(np.float32))
    a = backend.to_host(dither.tpdf_dither_quantize(x, 16, seed=123))
    b = backend.to_host(dither.tpdf_dither_quantize(x, 16, seed=123))
    c = backend.to_host(dither.tpdf_dither_quantize(x, 16, seed=124))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.3


def test_on_16_bit_grid_and_clipped(xp):
    x = np.linspace(-1.2, 1.2, 48000)[None].astype(np.float32)
    q = backend.to_host(dither.tpdf_dither_quantize(xp.asarray(x), 16, seed=9))
    assert q.dtype == np.float32
    k = q.astype(np.float64) * 32768
    np.testing.assert_array_equal(k, np.round(k))
    assert k.min() == -32768 and k.max() == 32767


@pytest.mark.parametrize("offset_lsb", [0.0, 0.25, 0.5])
def test_error_rms_is_tpdf_value(xp, offset_lsb):
    # a quiet signal plus a constant offset: TPDF makes the error variance LSB^2/4 whatever the input
    rng = np.random.default_rng(5)
    x = (offset_lsb * LSB16 + 0.01 * rng.standard_normal((2, 100000))).astype(np.float64)
    x = x.astype(np.float32)
    q = backend.to_host(dither.tpdf_dither_quantize(xp.asarray(x), 16, seed=2))
    e = (q.astype(np.float64) - x.astype(np.float64)) / LSB16
    assert abs(e.mean()) < 0.01
    assert np.sqrt(np.mean(e**2)) == pytest.approx(0.5, rel=0.02)
    assert dither.tpdf_error_rms(16) == pytest.approx(0.5 * LSB16)
    assert np.max(np.abs(e)) <= 1.5 + 1e-9  # |d| < 1 LSB, rounding <= 0.5 LSB


def test_dc_input_error_independent_of_signal(xp):
    # undithered rounding of 0.3 LSB would always give 0 (error -0.3 LSB, zero variance)
    x = np.full((1, 200000), 0.3 * LSB16, np.float32)
    q = backend.to_host(dither.tpdf_dither_quantize(xp.asarray(x), 16, seed=0))
    assert abs(q.mean() / LSB16 - 0.3) < 0.01


def test_24_bit(xp):
    x = xp.asarray(pink_noise(0.2, seed=2).astype(np.float32))
    q = backend.to_host(dither.tpdf_dither_quantize(x, 24, seed=1))
    k = q.astype(np.float64) * 2**23
    np.testing.assert_array_equal(k, np.round(k))
    e = q.astype(np.float64) - backend.to_host(x).astype(np.float64)
    assert np.sqrt(np.mean(e**2)) == pytest.approx(0.5 * 2.0**-23, rel=0.05)


def test_content_seed():
    a = np.arange(1000, dtype=np.float32)
    s = dither.content_seed(a, "16bit;preset=warm")
    assert isinstance(s, int) and 0 <= s < 2**64
    assert s == dither.content_seed(a.copy(), "16bit;preset=warm")
    assert s != dither.content_seed(a, "24bit;preset=warm")
    b = a.copy()
    b[500] += 1
    assert s != dither.content_seed(b, "16bit;preset=warm")
    assert dither.content_seed(a.tobytes(), "x") == dither.content_seed(a.tobytes(), "x")


def test_validation():
    x = np.zeros((1, 10), np.float32)
    with pytest.raises(ValueError, match="bits"):
        dither.tpdf_dither_quantize(x, 1)
    with pytest.raises(ValueError, match="seed"):
        dither.tpdf_dither_quantize(x, 16, seed=-1)
    with pytest.raises(ValueError, match="settings"):
        dither.content_seed(b"abc", 16)


def test_quantize_rounds_to_nearest_and_saturates(xp):
    x = xp.asarray(pink_noise(0.2, seed=3).astype(np.float32) * 0.5)
    for bits in (16, 24):
        scale = 2.0 ** (bits - 1)
        q = backend.to_host(dither.quantize(x, bits))
        ref = np.round(backend.to_host(x).astype(np.float64) * scale) / scale
        np.testing.assert_array_equal(q.astype(np.float64), ref)
        assert q.dtype == np.float32
        np.testing.assert_array_equal(backend.to_host(dither.quantize(xp.asarray(q), bits)), q)  # idempotent
    edge = backend.to_host(dither.quantize(xp.asarray(np.array([1.5, 1.0, -1.0, -3.0], np.float32)), 16))
    np.testing.assert_array_equal(edge * 32768, [32767, 32767, -32768, -32768])
    with pytest.raises(ValueError, match="bits"):
        dither.quantize(x, 32)
    # the steps made in a caller's buffer (the read-back check's): the same steps, NaN kept
    edge = xp.asarray(np.array([[0.5 / 2**23, 1.5 / 2**23, -2.5 / 2**23, 1.5], [np.inf, -np.inf, np.nan, -1.0]], np.float32))
    for v in (x, edge):
        for bits in (16, 24):
            out = xp.empty(v.shape, dtype=xp.float32)
            assert dither.quantize_steps(v, bits, out=out) is out
            np.testing.assert_array_equal(backend.to_host(out), backend.to_host(dither.quantize_steps(v, bits)))
    with pytest.raises(ValueError, match="out must be float32"):
        dither.quantize_steps(x, 24, out=xp.empty(x.shape, dtype=xp.float64))
