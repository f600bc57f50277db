"""Shared fixtures: backends (NumPy always, CuPy where a GPU is present) and signal builders."""

from __future__ import annotations

import numpy as np
import pytest

from acetate.kernels import backend


def _gpu_params():
    return pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(not backend.gpu_available(), reason="no CuPy/CUDA device")])


@pytest.fixture(params=["numpy", _gpu_params()])
def xp(request):
    """The array namespace under test: NumPy everywhere, CuPy where a GPU is available."""
    return backend.array_module("cpu" if request.param == "numpy" else "gpu")


@pytest.fixture
def gpu_xp():
    """CuPy's namespace, or skip."""
    if not backend.gpu_available():
        pytest.skip("no CuPy/CUDA device")
    return backend.array_module("gpu")


def sine(freq_hz: float, dbfs: float, seconds: float, fs: int = 48000, channels: int = 2, phase_deg: float = 0.0) -> np.ndarray:
    """A (channels, n) float64 sine with per-channel peak at ``dbfs``."""
    n = int(round(seconds * fs))
    t = np.arange(n) / fs
    y = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq_hz * t + np.deg2rad(phase_deg))
    return np.tile(y, (channels, 1))


def silence(seconds: float, fs: int = 48000, channels: int = 2) -> np.ndarray:
    return np.zeros((channels, int(round(seconds * fs))))


def pink_noise(seconds: float, fs: int = 48000, channels: int = 2, seed: int = 0, rms_dbfs: float = -20.0) -> np.ndarray:
    """Deterministic pink-ish noise (1/f power) built in the frequency domain."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * fs))
    spec = rng.standard_normal((channels, n // 2 + 1)) + 1j * rng.standard_normal((channels, n // 2 + 1))
    f = np.fft.rfftfreq(n, 1 / fs)
    f[0] = f[1]
    spec /= np.sqrt(f)
    y = np.fft.irfft(spec, n=n, axis=-1)
    y /= np.sqrt(np.mean(y**2))
    return y * 10 ** (rms_dbfs / 20)
