"""The chain on a strict array namespace, the audit of its reads from the device, and the backend's guards.

Kernels are written against the array API (``xp = backend.namespace(x)``, then ``xp.`` calls),
with NumPy and CuPy the namespaces they run on. CI has no GPU, so the chain's real checks run a
second time here on ``array_api_strict``: a namespace that has the standard's functions and
nothing else (no ``einsum``, ``interp``, views by strides or by dtype, fancy assignment,
``x[0]`` on a 2-D array ...) and refuses implicit conversions:

* the :func:`guard` fixture makes ``np.asarray(strict_array)`` (``__array__``) raise, so a
  NumPy or SciPy call that receives a strict array fails the test; the backend's library
  adapters (:func:`acetate.kernels.backend.library_call`) convert explicitly, by DLPack, and
  are counted as library calls, not as transfers;
* it counts every read from the device: ``float()``, ``int()``, ``bool()``, ``operator.index``
  of an array, ``tolist``, a ``__dlpack__`` outside the backend's conversions, and every
  :func:`~acetate.kernels.backend.to_host` (which :func:`~acetate.kernels.backend.to_float`
  and :func:`~acetate.kernels.backend.read_together` go through). :func:`test_read_audit`
  pins the number, per function, for one rendered track: adding a read fails it.

The static checks at the end keep SciPy and CuPy behind the backend's dispatch, and the
``gpu`` extras' CuPy pins at or above every ``cupyx.scipy`` function the kernels call.
"""

from __future__ import annotations

import ast
import collections
import math
import re
import sys
import tomllib
from pathlib import Path

import array_api_strict as xs
import numpy as np
import pytest
from conftest import pink_noise

from acetate.kernels import backend
from acetate.pipeline.catalogue import demo
from acetate.pipeline.chain import analyse, meter, presets, render
from acetate.schemas.features import FEATURE_NAMES, FEATURE_UNITS

ROOT = Path(__file__).resolve().parent.parent
FS = 44100
ARRAY = type(xs.asarray(0.0))
#: Conversions of an array that read its values on the host (implicit syncs on a GPU).
_READS = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "tolist", "__dlpack__")


class Audit:
    """Reads from the (strict) device, by kind and by the kernel function that made them."""

    def __init__(self) -> None:
        self.kinds: collections.Counter[str] = collections.Counter()
        self.sites: collections.Counter[str] = collections.Counter()

    def reset(self) -> None:
        self.kinds.clear()
        self.sites.clear()

    def count(self, kind: str) -> None:
        self.kinds[kind] += 1
        self.sites[_site()] += 1


def _site() -> str:
    """``module.function`` of the first frame outside the strict library, the backend and this file."""
    f = sys._getframe(2)
    skip = ("array_api_strict", "kernels/backend.py", "tests/test_strict.py")
    while f is not None and any(s in f.f_code.co_filename.replace("\\", "/") for s in skip):
        f = f.f_back
    if f is None:
        return "?"
    return f"{Path(f.f_code.co_filename).stem}.{f.f_code.co_name}"


@pytest.fixture(scope="module")
def guard():
    """Strict arrays that refuse ``__array__`` and count every read (see the module docstring)."""
    audit = Audit()

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"implicit conversion of an array_api_strict array to NumPy (np.asarray / __array__) in {_site()}")

    def counting(kind, original):
        def read(self, *args, **kwargs):
            if not backend.converting():  # the backend's own conversions are counted where they are made
                audit.count(kind)
            return original(self, *args, **kwargs)

        return read

    to_host = backend.to_host

    def counted_to_host(x):
        if backend.is_device_array(x):
            audit.count("to_host")
        return to_host(x)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ARRAY, "__array__", refuse, raising=False)
        for name in _READS:
            if hasattr(ARRAY, name):
                mp.setattr(ARRAY, name, counting(name, getattr(ARRAY, name)))
        mp.setattr(backend, "to_host", counted_to_host)
        yield audit


@pytest.fixture(scope="module")
def signals():
    noise = pink_noise(4.0, FS, seed=7, rms_dbfs=-20.0).astype(np.float32)
    noise[1] = (0.7 * noise[0] + 0.7 * noise[1]).astype(np.float32)  # correlated, as a mix is
    return {"noise": noise, "music": demo.render_style("rock", 4.0, FS, seed=2), "pop": demo.render_style("pop", 4.0, FS, seed=2)}


def _strict(x: np.ndarray):
    return xs.asarray(x)


def _feature_close(name: str, a: float, b: float) -> bool:
    """Float tolerances of a feature computed on two namespaces (as tests/test_gpu_parity.py's)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    unit = FEATURE_UNITS[name]
    if name == "spectral_rolloff_hz":  # the first bin reaching 85 %: float32 sums may move it by one
        return abs(a - b) <= FS / 4096 + 1e-6
    if name.startswith("dynamics_"):  # P95 - P10 of frame levels: a near-silent frame's level is FFT rounding
        return abs(a - b) <= 0.05
    if "dB" in unit or unit in ("LUFS", "LU", "dBTP", "dBFS", "dB/octave"):
        return abs(a - b) <= 1e-3
    if unit == "-1..1" or unit.startswith("full scale"):
        return abs(a - b) <= 1e-6
    return abs(a - b) <= 1e-5 * max(abs(a), abs(b)) + 1e-9


# --------------------------------------------------------------------------- the chain, strictly


def test_the_guard_refuses_implicit_conversion_and_counts_reads(guard):
    a = xs.asarray([1.0, 2.0])
    with pytest.raises(AssertionError, match="implicit conversion"):
        np.asarray(a)
    with pytest.raises(AssertionError, match="implicit conversion"):
        np.sum(a)
    guard.reset()
    float(a[0])
    backend.to_float(a[1])
    assert guard.kinds == {"__float__": 1, "to_host": 1}
    guard.reset()


@pytest.mark.parametrize("name", ["noise", "music", "mono"])
def test_fingerprint_matches_numpy(guard, signals, name):
    x = signals["music"][:1] if name == "mono" else signals[name]
    ref = analyse.fingerprint(x, FS)
    got = analyse.fingerprint(_strict(x), FS)
    assert list(got) == list(FEATURE_NAMES)
    bad = {k: (ref[k], got[k]) for k in FEATURE_NAMES if not _feature_close(k, ref[k], got[k])}
    assert not bad, bad


def test_fingerprint_edges_match_numpy(guard, signals):
    """Leading and trailing silence longer than a probe stretch, and clipped runs."""
    x = signals["music"]
    pad = np.zeros((2, int(1.6 * FS)), np.float32)
    quiet = np.concatenate([pad, x, pad[:, : int(1.2 * FS)]], axis=1)
    clipped = np.clip(4 * x, -1, 1).astype(np.float32)
    for y in (quiet, clipped):
        ref, got = analyse.fingerprint(y, FS), analyse.fingerprint(_strict(y), FS)
        for k in ("leading_silence_s", "trailing_silence_s", "clip_run_count", "clip_run_samples", "dc_offset_left"):
            assert got[k] == ref[k], k
    with pytest.raises(ValueError, match="non-finite"):
        bad = x.copy()
        bad[0, 100] = np.nan
        analyse.fingerprint(_strict(bad), FS)


def test_meter_matches_numpy(guard, signals):
    for x in (signals["noise"], signals["music"]):
        ref = meter.loudness_report(x, FS)
        got = meter.loudness_report(_strict(x), FS)
        assert set(got) == set(ref)
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, abs=1e-6), k


@pytest.mark.parametrize(
    "preset, settings",
    [
        ("dense_loud", {}),  # heavy limiting: the limiter's corrective passes, the loudness solve
        ("bright", {"intensity": "high"}),  # widening, a brighter EQ
        ("warm", {"output_rate": 48000, "mono": True}),  # mono in, resampled (SciPy through the adapter)
    ],
)
def test_master_matches_numpy(guard, signals, preset, settings):
    settings = dict(settings)
    x = signals["music"][:1] if settings.pop("mono", False) else signals["music"]
    p = presets.load_bank()[preset]
    s = render.MasterSettings(target_lufs=-12.0, ceiling_dbtp=-1.0, **settings)
    ref = render.master(x, FS, s, preset=p)
    got = render.master(_strict(x), FS, s, preset=p)
    assert isinstance(got.audio, np.ndarray) and got.audio.dtype == np.float32 and got.audio.shape == ref.audio.shape
    assert isinstance(got.device_audio, ARRAY)  # the master stayed in its namespace
    assert got.target_met and got.ceiling_met
    assert abs(got.output_report["integrated_lufs"] - ref.output_report["integrated_lufs"]) <= 0.01
    assert abs(got.output_report["integrated_lufs"] + 12.0) <= render.TARGET_TOLERANCE_LU
    assert got.output_report["true_peak_dbtp_16x"] <= -1.0 + 1e-9
    assert float(np.abs(got.audio - ref.audio).max()) <= 1e-5  # float32 rounding of the FFTs, not a different master
    assert got.params["eq"]["gain_db"] == pytest.approx(ref.params["eq"]["gain_db"], abs=2e-3)  # rounded to 1e-3 dB
    assert got.params.get("width", []) == pytest.approx(ref.params.get("width", []), abs=2e-5)  # rounded to 1e-5
    assert got.notes == ref.notes


def test_master_fingerprints_a_strict_input_itself(guard, signals):
    x = signals["noise"]
    got = render.master(_strict(x), FS, render.MasterSettings(), preset=presets.BALANCED)
    ref = render.master(x, FS, render.MasterSettings(), preset=presets.BALANCED)
    assert abs(got.output_report["integrated_lufs"] - ref.output_report["integrated_lufs"]) <= 0.01
    assert float(np.abs(got.audio - ref.audio).max()) <= 1e-5


# --------------------------------------------------------------------------- the read audit

#: Reads from the device for one rendered track (4 s of the demo's pop mix, the bank's "dense_loud"
#: preset at -9 LUFS / -1 dBTP: three solver iterations, 6 dB of limiting), by the function that
#: makes them. Where each comes from:
#:
#: * analyse.fingerprint (2): the finiteness check of the input (before anything is measured),
#:   then every figure -- the meter's, the peaks, spectra, stereo, DC, the silence probes -- in one read;
#: * compressor.attack_release_db (4): one per band compressor: the gain curve's finiteness and
#:   maximum (the look-ahead's fill value) in one read;
#: * windows._release_linear_db (7): the span of a gain curve, which sets the running minimum's
#:   window (a shape, so a host number): the 4 band compressors and the 3 limiter runs;
#: * loudness._read_stats (4): a measurement's figures and its finiteness in one read: the chain
#:   output measured once, then one remeasurement of the limited stretches per solver iteration;
#: * limiter._tp_limit_core (9): per limiter run (one per solver iteration), the input's finiteness
#:   before the screen, whether any interval is over with the deepest need, and the check of the
#:   limited output with the gain's summary (deepest reduction, changed ranges);
#: * render._verified_peak_db (1): the master's 16x true peak with its 4x and sample peaks (the report's);
#: * render.master (1): the master's host copy.
EXPECTED_READS = {
    "analyse.fingerprint": 2,
    "compressor.attack_release_db": 4,
    "windows._release_linear_db": 7,
    "loudness._read_stats": 4,
    "limiter._tp_limit_core": 9,
    "render._verified_peak_db": 1,
    "render.master": 1,
}


def test_read_audit(guard, signals):
    x = _strict(signals["pop"])
    settings = render.MasterSettings(target_lufs=-9.0, ceiling_dbtp=-1.0)
    preset = presets.load_bank()["dense_loud"]
    calls = collections.Counter(backend.LIBRARY_CALLS)
    guard.reset()
    fp = analyse.fingerprint(x, FS)
    result = render.master(x, FS, settings, preset=preset, fingerprint=fp)
    reads, kinds = dict(guard.sites), dict(guard.kinds)
    guard.reset()
    assert result.target_met and result.ceiling_met
    assert result.params["loudness"]["iterations"] == 3 and result.params["loudness"]["limiter_reduction_db"] > 1.0  # as above
    assert reads == EXPECTED_READS, f"reads from the device changed: {reads}"
    assert kinds == {"to_host": sum(EXPECTED_READS.values())}, f"implicit reads (float/int/bool of an array, DLPack): {kinds}"
    library = collections.Counter(backend.LIBRARY_CALLS)
    library.subtract(calls)
    # SciPy on explicit host copies (strict has no SciPy): the K-filter and the filter designs' convolution.
    assert {k for k, v in library.items() if v} == {"signal.sosfilt", "signal.fftconvolve"}


# --------------------------------------------------------------------------- the backend's adapters


def test_adapters_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 50))
    b = rng.standard_normal((3, 50))
    got = backend.to_host(backend.einsum(xs, "kcn,kn->cn", xs.asarray(a), xs.asarray(b)))
    np.testing.assert_allclose(got, np.einsum("kcn,kn->cn", a, b), rtol=1e-12)
    levels = rng.standard_normal((37, 5))
    for q in (0.1, 0.5, 0.95):
        np.testing.assert_allclose(backend.to_host(backend.quantile(xs, xs.asarray(levels), q)), np.quantile(levels, q, axis=0), rtol=1e-12)
    c = np.cumsum(levels, axis=0)
    np.testing.assert_allclose(backend.to_host(backend.cumsum(xs, xs.asarray(levels), axis=0)), c, rtol=1e-12)
    idx = np.array([[0, 3], [2, 4]])
    np.testing.assert_array_equal(backend.to_host(backend.take(xs, xs.asarray(levels), xs.asarray(idx), axis=1)), levels[:, idx])
    base = np.zeros(10)
    got = backend.scatter(xs, xs.asarray(base), xs.asarray([1, 4, 9]), xs.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(backend.to_host(got), [0, 1, 0, 0, 2, 0, 0, 0, 0, 3])
    x = np.arange(20.0).reshape(2, 10)
    np.testing.assert_array_equal(backend.to_host(backend.frames(xs.asarray(x), 4, 3, 3)), backend.frames(x, 4, 3, 3))
    before = backend.LIBRARY_CALLS["signal.fftconvolve"]
    y = backend.signal(xs).fftconvolve(xs.asarray(x[0]), xs.asarray(x[1]))
    assert isinstance(y, ARRAY) and backend.LIBRARY_CALLS["signal.fftconvolve"] == before + 1


def test_backend_refuses_functions_outside_its_table():
    for xp in (backend.array_module("cpu"), xs):
        with pytest.raises(AttributeError, match="CUPYX_FUNCTIONS"):
            backend.signal(xp).lfilter  # noqa: B018 - the attribute access is the test


# --------------------------------------------------------------------------- static checks

#: Modules of ``kernels/`` that may import SciPy, and where: host-side design, on NumPy arrays
#: the kernel builds itself (constants moved to the device once), never on the caller's arrays.
HOST_DESIGN = {
    ("fir.py", "design_from_gain"): "the window of a frequency-sampling design (scipy.signal.get_window), on the host",
    ("fir.py", "_lowpass_design"): "firwin taps of the high-pass and crossovers, designed on the host and cached",
    ("limiter.py", "_screen_bound"): "a linear programme on the interpolators' taps (host constants of the screen)",
    ("loudness.py", "settle_samples"): "the K-filter's poles (sos2zpk of the host design), for the settling time",
}


def _functions(tree: ast.AST):
    """(function name, node) for every node, the innermost enclosing function's name ('' at module level)."""
    out = []

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            out.append((inner, child))
            visit(child, inner)

    visit(tree, "")
    return out


def _imported_modules(node) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return [node.module]
    return []


def test_scipy_and_cupy_are_imported_only_by_the_backend():
    """SciPy, CuPy and cupyx on arrays go through backend.signal/fft/ndimage (or its helpers);
    the only other imports are the host-side designs listed in HOST_DESIGN."""
    found = []
    for path in sorted((ROOT / "kernels").glob("*.py")):
        if path.name == "backend.py":
            continue
        for where, node in _functions(ast.parse(path.read_text())):
            for mod in _imported_modules(node):
                top = mod.split(".")[0]
                if top in ("scipy", "cupy", "cupyx"):
                    found.append((path.name, where, mod))
    unexpected = [(f, w, m) for f, w, m in found if top_is_gpu(m) or (f, w) not in HOST_DESIGN]
    assert not unexpected, f"SciPy/CuPy outside the backend's dispatch: {unexpected}"
    assert {(f, w) for f, w, _ in found} == set(HOST_DESIGN), "HOST_DESIGN lists a design that no longer imports SciPy"


def top_is_gpu(mod: str) -> bool:
    return mod.split(".")[0] in ("cupy", "cupyx")


def _dispatch_uses() -> set[tuple[str, str]]:
    """(library, function) for every call through backend.signal/fft/ndimage in kernels/ and
    pipeline/: attributes of ``backend.signal(xp)`` itself and of the names bound to one (and
    the parameters of the same name that such a binding is passed to, in the same module)."""
    uses = set()
    files = list((ROOT / "kernels").glob("*.py")) + list((ROOT / "pipeline").rglob("*.py"))
    for path in files:
        tree = ast.parse(path.read_text())
        names: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                kind = _dispatch_kind(node.value)
                if kind:
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            names[t.id] = kind
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                if isinstance(node.value, ast.Call) and _dispatch_kind(node.value):
                    uses.add((_dispatch_kind(node.value), node.attr))
                elif isinstance(node.value, ast.Name) and node.value.id in names:
                    uses.add((names[node.value.id], node.attr))
    return uses


def _dispatch_kind(call: ast.Call) -> str | None:
    f = call.func
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "backend" and f.attr in backend.CUPYX_FUNCTIONS:
        return f.attr
    return None


def test_the_cupyx_table_covers_every_function_the_kernels_call():
    uses = _dispatch_uses()
    assert ("signal", "sosfilt") in uses and ("fft", "rfft") in uses  # the scan sees the calls it must
    missing = {(k, f) for k, f in uses if f not in backend.CUPYX_FUNCTIONS[k]}
    assert not missing, f"called through the backend but not in backend.CUPYX_FUNCTIONS: {missing}"
    unused = {(k, f) for k, fs in backend.CUPYX_FUNCTIONS.items() for f in fs} - uses
    assert not unused, f"backend.CUPYX_FUNCTIONS lists functions nothing calls: {unused}"


def test_the_cupyx_table_names_scipy_functions():
    import importlib

    for kind, functions in backend.CUPYX_FUNCTIONS.items():
        lib = importlib.import_module(f"scipy.{kind}")
        for name, version in functions.items():
            assert callable(getattr(lib, name, None)), f"scipy.{kind}.{name}"
            assert re.fullmatch(r"\d+\.\d+\.\d+", version), version


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def test_gpu_extras_pin_a_cupy_with_every_function():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    needed = max(_version(v) for fs in backend.CUPYX_FUNCTIONS.values() for v in fs.values())
    pins = {}
    for extra, reqs in extras.items():
        for req in reqs:
            m = re.fullmatch(r"(cupy-cuda\d+x)\s*>=\s*([\d.]+)", req)
            if req.startswith("cupy"):
                assert m, f"{extra}: {req!r} is not a 'cupy-cudaNNx>=X.Y' pin"
                pins[extra] = m.group(1)
                pinned = _version(m.group(2))
                assert pinned + (0,) * (3 - len(pinned)) >= needed, f"{extra}: {req} is older than CuPy {needed}"
    assert pins.get("gpu") == "cupy-cuda12x" and pins.get("gpu13") == "cupy-cuda13x", pins  # CUDA 12 and 13 builds
