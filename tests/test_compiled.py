"""The compiled K-filter loop against SciPy's sosfilt, and the meter with and without it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from acetate.kernels import compiled, loudness

numba = pytest.importorskip("numba")  # a project dependency: present wherever the suite is installed


def _music_like(c: int, n: int, fs: int = 48000, seed: int = 0) -> np.ndarray:
    """Noise shaped like a mix (low end heavy), with a loud burst and a silent stretch."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, n))
    x = scipy.signal.sosfilt(scipy.signal.butter(2, 200, fs=fs, output="sos"), x, axis=-1) * 3 + 0.1 * x
    x[:, n // 3 : n // 3 + fs // 10] *= 8.0
    x[:, n // 2 : n // 2 + fs // 5] = 0.0
    return (0.1 * x).astype(np.float32)


def _reference(x: np.ndarray, sos: np.ndarray, g: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sosfilt in float64 from rest, weighted power, reduceat from starts[0]; and the final state."""
    y, zf = scipy.signal.sosfilt(sos, x.astype(np.float64), axis=-1, zi=np.zeros((2, x.shape[0], 2)))
    p = (g[:, None] * y * y).sum(axis=0)
    a = int(starts[0])
    return np.add.reduceat(p[a:], starts - a), zf


@pytest.mark.parametrize("c", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sums_and_state_match_sosfilt(c, dtype):
    fs, n = 44100, 3 * 44100 + 17
    x = _music_like(c, n, fs).astype(dtype)
    sos = loudness.k_weighting_sos(fs)
    g = np.array([1.0, 1.41][:c])
    starts = np.unique(np.concatenate([[700], np.arange(700, n, 4410), [n - 1]]))
    assert compiled.available(c, 2)
    sums, zf = compiled.kweighted_sums(x, sos, g, starts, None)
    ref, ref_zf = _reference(x, sos, g, starts)
    assert sums.shape == ref.shape and sums.dtype == np.float64
    np.testing.assert_allclose(sums, ref, rtol=1e-12, atol=0)
    assert np.array_equal(zf, ref_zf)  # same arithmetic, operation for operation: the state is bit-identical


def test_state_carries_across_chunks():
    fs, n = 48000, 2 * 48000
    x = _music_like(2, n, fs, seed=3)
    sos = loudness.k_weighting_sos(fs)
    g = np.ones(2)
    starts = np.arange(0, n, 4800)
    whole, zf_whole = compiled.kweighted_sums(x, sos, g, starts, None)
    cut = 48000  # a segment edge: the two halves' segments are the whole's
    first, z = compiled.kweighted_sums(x[:, :cut], sos, g, starts[starts < cut], None)
    second, zf = compiled.kweighted_sums(x[:, cut:], sos, g, starts[starts >= cut] - cut, z)
    np.testing.assert_array_equal(np.concatenate([first, second]), whole)
    np.testing.assert_array_equal(zf, zf_whole)


def test_layouts_and_edges():
    sos = loudness.k_weighting_sos(48000)
    x = _music_like(2, 1000)
    assert not compiled.available(6, 2) and not compiled.available(2, 3)
    with pytest.raises(ValueError, match="6 channel"):
        compiled.kweighted_sums(np.zeros((6, 10), np.float32), sos, np.ones(6), np.array([0]), None)
    with pytest.raises(ValueError, match="increase"):
        compiled.kweighted_sums(x, sos, np.ones(2), np.array([0, 500, 400]), None)
    with pytest.raises(ValueError, match="within"):
        compiled.kweighted_sums(x, sos, np.ones(2), np.array([0, 1001]), None)
    with pytest.raises(ValueError, match="normalised"):
        compiled.kweighted_sums(x, sos * 2.0, np.ones(2), np.array([0]), None)
    with pytest.raises(ValueError, match="strictly"):  # a repeated edge (an empty segment)
        compiled.kweighted_sums(x, sos, np.ones(2), np.array([0, 100, 100, 200]), None)
    with pytest.raises(ValueError, match="strictly"):  # a segment starting at the end
        compiled.kweighted_sums(x, sos, np.ones(2), np.array([0, 1000]), None)
    with pytest.raises(ValueError, match="one value per channel"):
        compiled.kweighted_sums(x, sos, np.ones(1), np.array([0]), None)
    with pytest.raises(ValueError, match="real state of shape"):  # the wrong shape would corrupt memory
        compiled.kweighted_sums(x, sos, np.ones(2), np.array([0]), np.zeros((2, 1, 2)))
    with pytest.raises(ValueError, match="real state of shape"):  # SciPy's packed stereo state
        compiled.kweighted_sums(x, sos, np.ones(2), np.array([0]), np.zeros((2, 2, 2), complex))
    with pytest.raises(ValueError, match="two normalised sections"):
        compiled.kweighted_sums(x, sos[:, :5], np.ones(2), np.array([0]), None)
    # no segment: the whole chunk is warm-up, the state still advances
    sums, zf = compiled.kweighted_sums(x, sos, np.ones(2), np.array([], dtype=np.int64), None)
    assert sums.shape == (0,)
    np.testing.assert_array_equal(zf, _reference(x, sos, np.ones(2), np.array([0]))[1])
    # a read-only buffer reads the same as a writable copy
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(
        compiled.kweighted_sums(ro, sos, np.ones(2), np.array([0, 400]), None)[0],
        compiled.kweighted_sums(x.copy(), sos, np.ones(2), np.array([0, 400]), None)[0],
    )
    # a strided view (a channel pair of a wider array) reads the same as its copy
    wide = np.ascontiguousarray(np.stack([x[0], x[1], x[0]]))[:2, 100:900]
    a, _ = compiled.kweighted_sums(wide, sos, np.ones(2), np.array([0, 400]), None)
    b, _ = compiled.kweighted_sums(np.ascontiguousarray(wide), sos, np.ones(2), np.array([0, 400]), None)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("c", [1, 2])
def test_meter_figures_with_and_without_the_loop(monkeypatch, c):
    """measure, measure_profile and remeasure give the same figures on both paths."""
    fs = 48000
    x = _music_like(c, 20 * fs, fs, seed=7)
    monkeypatch.setenv("ACETATE_NO_JIT", "1")
    assert not compiled.available(c, 2)
    ref = loudness.measure(x, fs)
    ref_st, ref_prof = loudness.measure_profile(x, fs)
    z = x * np.float32(1.5)
    z[:, 5 * fs : 5 * fs + 4800] *= np.float32(0.5)
    changed = np.array([[5 * fs, 5 * fs + 4800]])
    ref_re = loudness.remeasure(ref_prof, z, 20 * np.log10(1.5), changed)[0]
    monkeypatch.setenv("ACETATE_NO_JIT", "0")
    assert compiled.available(c, 2)
    got = loudness.measure(x, fs)
    st, prof = loudness.measure_profile(x, fs)
    got_re = loudness.remeasure(prof, z, 20 * np.log10(1.5), changed)[0]
    # every 400 ms block's energy (the quantity inside BS.1770's log) agrees to float64 rounding
    starts = np.arange(0, 20 * fs - 19200 + 1, 4800)
    got_z = loudness.window_energies(x, fs, starts, 19200)
    monkeypatch.setenv("ACETATE_NO_JIT", "1")
    ref_z = loudness.window_energies(x, fs, starts, 19200)
    monkeypatch.setenv("ACETATE_NO_JIT", "0")
    np.testing.assert_allclose(got_z, ref_z, rtol=1e-11, atol=0)
    for a, b in ((got, ref), (st, ref_st), (got_re, ref_re)):
        for name in ("integrated_lufs", "momentary_max_lufs", "short_term_max_lufs", "loudness_range_lu"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), abs=1e-9), name
    # and the remeasured figures are those of a full measurement of z (to the settling
    # tolerance remeasure documents)
    full = loudness.measure(z, fs)
    assert got_re.integrated_lufs == pytest.approx(full.integrated_lufs, abs=1e-6)


def test_falls_back_when_numba_cannot_compile(monkeypatch):
    """No writable cache: compiled in memory; no compilation at all: SciPy, same figures."""
    fs = 48000
    x = _music_like(2, 5 * fs, fs, seed=11)
    ref = loudness.measure(x, fs).integrated_lufs
    calls = []

    def no_cache(numba_mod, sigs, cache):
        calls.append(cache)
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real_define(numba_mod, sigs, cache)

    real_define = compiled._define
    monkeypatch.setattr(compiled, "_define", no_cache)
    monkeypatch.setattr(compiled, "_TRIED", False)
    monkeypatch.setattr(compiled, "_LOOP", None)
    assert compiled.available(2, 2) and calls == [True, False]
    assert loudness.measure(x, fs).integrated_lufs == pytest.approx(ref, abs=1e-9)

    def broken(numba_mod, sigs, cache):
        raise RuntimeError("LLVM is unhappy")

    monkeypatch.setattr(compiled, "_define", broken)
    monkeypatch.setattr(compiled, "_TRIED", False)
    monkeypatch.setattr(compiled, "_LOOP", None)
    assert not compiled.available(2, 2)
    assert loudness.measure(x, fs).integrated_lufs == pytest.approx(ref, abs=1e-9)
