"""CuPy vs NumPy parity of the main entry points (run only where a CUDA device is present).

Every ``gpu``-marked test takes the same float32 input on both backends and
compares within float32 tolerance. Known, allowed differences:

* ``spectral_rolloff_hz`` may move by one STFT bin (``fs / frame``): it is the
  first bin whose cumulative power reaches 85 %, and float32 batch sums on the
  two backends can put a borderline bin on either side.

The first test is not GPU-marked: it checks, on the host, the chunked
direct-form-I state carry that ``loudness`` uses with ``cupyx.scipy.signal.sosfilt``
(whose ``zi`` is ``[x[-2], x[-1], y[-2], y[-1]]`` per section, not SciPy's
2-value state) against a host model of that contract.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
from conftest import pink_noise

from acetate.kernels import backend, compressor, fir, limiter, loudness, truepeak
from acetate.pipeline.catalogue import demo
from acetate.pipeline.chain import analyse, render
from acetate.schemas.features import FEATURE_NAMES, FEATURE_UNITS

FS = 44100


class _CupySosfiltModel:
    """Host model of ``cupyx.scipy.signal.sosfilt(sos, x, axis=-1, zi)`` for 2-D ``x``:
    ``zi`` (n_sections, C, 4) = [x[-2], x[-1], y[-2], y[-1]] of each section; the
    returned ``zf`` has CuPy's swapped axes (n_sections, 4, C), so it must not be reused."""

    @staticmethod
    def sosfilt(sos, x, axis=-1, zi=None):
        out = np.array(x, dtype=np.float64, copy=True)
        zf = np.empty_like(zi)
        for s in range(sos.shape[0]):
            b, a = sos[s, :3], sos[s, 3:]
            new = np.empty_like(out)
            for r in range(out.shape[0]):
                z = scipy.signal.lfiltic(b, a, y=zi[s, r, 2:][::-1], x=zi[s, r, :2][::-1])
                new[r], _ = scipy.signal.lfilter(b, a, out[r], zi=z)
            zf[s, :, :2] = out[:, -2:]
            zf[s, :, 2:] = new[:, -2:]
            out = new
        return out, np.moveaxis(zf, -1, 1)


@pytest.mark.parametrize("chunk", [1, 3, 1000, 20000])
def test_direct_form_one_state_carry_matches_whole_signal_sosfilt(chunk):
    xp = backend.array_module("cpu")
    x = np.random.default_rng(0).standard_normal((2, 20000))
    sos = loudness.k_weighting_sos(FS)
    state, ys = None, []
    for a in range(0, x.shape[1], chunk):
        y, state = loudness._sosfilt_df1(_CupySosfiltModel, sos, x[:, a : a + chunk], state, xp)
        ys.append(y)
    assert np.abs(np.concatenate(ys, axis=1) - scipy.signal.sosfilt(sos, x, axis=-1)).max() < 1e-10


# --------------------------------------------------------------------------- GPU parity


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(3)
    noise = pink_noise(6.0, FS, seed=4, rms_dbfs=-18.0).astype(np.float32)
    # a little correlation between channels and a few hot peaks for the limiter
    noise[1] = (0.6 * noise[0] + 0.8 * noise[1]).astype(np.float32)
    hot = noise * np.float32(4.0)
    hot[:, rng.integers(0, hot.shape[1], 20)] = np.float32(1.4)
    return {"noise": noise, "hot": hot, "music": demo.render_style("electronic", 6.0, FS, seed=1)}


def _both(gpu_xp, x):
    return x, backend.to_device(x, gpu_xp)


@pytest.mark.gpu
def test_loudness_measure_parity(gpu_xp, signals):
    for x in (signals["noise"], signals["music"]):
        h, d = _both(gpu_xp, x)
        ref = loudness.measure(h, FS)
        # a small chunk carries the K-filter state across several chunks on the device
        for got in (loudness.measure(d, FS), loudness.measure(d, FS, chunk=50_000)):
            for k in ("integrated_lufs", "momentary_max_lufs", "short_term_max_lufs", "loudness_range_lu"):
                assert abs(getattr(got, k) - getattr(ref, k)) <= 0.01, k
            assert isinstance(got.momentary, np.ndarray) and isinstance(got.short_term, np.ndarray)


@pytest.mark.gpu
@pytest.mark.parametrize("oversample", [4, 16])
def test_true_peak_parity(gpu_xp, signals, oversample):
    h, d = _both(gpu_xp, signals["hot"])
    ref = truepeak.true_peak(h, FS, oversample=oversample)
    got = backend.to_host(truepeak.true_peak(d, FS, oversample=oversample))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def _feature_close(name: str, a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    unit = FEATURE_UNITS[name]
    if name == "spectral_rolloff_hz":  # may move by one STFT bin (see the module docstring)
        return abs(a - b) <= FS / 4096 + 1e-6
    if "dB" in unit or unit in ("LUFS", "LU", "dBTP", "dBFS", "dB/octave"):
        return abs(a - b) <= 0.05
    if unit == "-1..1" or unit.startswith("full scale"):
        return abs(a - b) <= 1e-3
    return abs(a - b) <= 1e-3 * max(abs(a), abs(b)) + 1e-9


@pytest.mark.gpu
def test_fingerprint_parity(gpu_xp, signals):
    for x in (signals["noise"], signals["music"], signals["music"][:1]):
        h, d = _both(gpu_xp, x)
        ref = analyse.fingerprint(h, FS)
        got = analyse.fingerprint(d, FS)
        assert list(got) == list(FEATURE_NAMES)
        bad = {k: (ref[k], got[k]) for k in FEATURE_NAMES if not _feature_close(k, ref[k], got[k])}
        assert not bad, bad


@pytest.mark.gpu
def test_crossover_bands_parity(gpu_xp, signals):
    h, d = _both(gpu_xp, signals["music"])
    ref = fir.crossover_bands(h, FS)
    got = backend.to_host(fir.crossover_bands(d, FS))
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert np.abs(got.sum(axis=0) - h).max() < 1e-5


@pytest.mark.gpu
def test_compress_parity(gpu_xp, signals):
    h, d = _both(gpu_xp, signals["noise"])
    y_ref, g_ref = compressor.compress(h, FS, -30.0, 4.0, attack_s=0.005, release_s=0.1)
    y, g = compressor.compress(d, FS, -30.0, 4.0, attack_s=0.005, release_s=0.1)
    assert y.dtype == y_ref.dtype
    assert np.abs(backend.to_host(y) - y_ref).max() <= 1e-4
    assert np.abs(backend.to_host(g) - g_ref).max() <= 1e-3  # dB


@pytest.mark.gpu
def test_true_peak_limit_parity(gpu_xp, signals):
    h, d = _both(gpu_xp, signals["hot"])
    ceiling_db = -1.0
    y_ref, g_ref = limiter.true_peak_limit(h, FS, ceiling_db)
    y, g = limiter.true_peak_limit(d, FS, ceiling_db)
    y_host = backend.to_host(y)
    assert y_host.dtype == y_ref.dtype and g.shape == g_ref.shape
    assert np.abs(y_host - y_ref).max() <= 1e-4
    assert np.abs(backend.to_host(g) - g_ref).max() <= 1e-4
    assert float(backend.to_host(truepeak.true_peak(y, FS, oversample=16)).max()) <= 10 ** (ceiling_db / 20)
    assert float(truepeak.true_peak(y_host, FS, oversample=16).max()) <= 10 ** (ceiling_db / 20)


@pytest.mark.gpu
def test_master_gpu_matches_cpu(gpu_xp, signals):
    x = signals["music"]
    settings = {"target_lufs": -14.0, "ceiling_dbtp": -1.0}
    cpu = render.master(x, FS, render.MasterSettings(device="cpu", **settings))
    gpu = render.master(x, FS, render.MasterSettings(device="gpu", **settings))
    assert isinstance(gpu.audio, np.ndarray) and gpu.audio.dtype == np.float32 and gpu.audio.shape == cpu.audio.shape
    assert abs(gpu.output_report["integrated_lufs"] - cpu.output_report["integrated_lufs"]) <= 0.02
    diff = np.sqrt(np.mean((gpu.audio.astype(np.float64) - cpu.audio) ** 2))
    level = np.sqrt(np.mean(cpu.audio.astype(np.float64) ** 2))
    assert 20 * np.log10(max(diff, 1e-30) / level) <= -60.0
    assert gpu.ceiling_met and gpu.output_report["true_peak_dbtp_16x"] <= -1.0 + 1e-9


@pytest.mark.gpu
def test_master_keeps_a_device_input_on_the_device(gpu_xp, signals):
    """A CuPy programme stays in CuPy whatever ``settings.device`` says (that places host input),
    and masters as the host one does."""
    x = signals["music"]
    settings = {"target_lufs": -14.0, "ceiling_dbtp": -1.0}
    cpu = render.master(x, FS, render.MasterSettings(device="cpu", **settings))
    gpu = render.master(backend.to_device(x, gpu_xp), FS, render.MasterSettings(device="cpu", **settings))
    assert backend.is_gpu(gpu.device_audio) and isinstance(gpu.audio, np.ndarray)
    assert abs(gpu.output_report["integrated_lufs"] - cpu.output_report["integrated_lufs"]) <= 0.02
    assert gpu.ceiling_met and gpu.output_report["true_peak_dbtp_16x"] <= -1.0 + 1e-9
