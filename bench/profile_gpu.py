"""Where one track's time goes on the GPU: each stage's wall, host and device time, and its host<->device syncs.

    python bench/profile_gpu.py [--input FILE | --style pop --seconds 300] [--depth 3] [--sites 15] [--nvtx]

One track runs the stages a catalogue worker runs (``pipeline/catalogue/track.py``): decode
-> analyse -> select -> render -> verify -> write (FLAC 24), on ``device="gpu"``, once to warm
up (CuPy compiles or loads each kernel the first time) and once profiled.  Inside the
stages the chain's own functions (meter, fingerprint, FIR design and filtering, the block
chain, compressors, limiter, loudness solve, true peak, host/device moves) are timed too, to
``--depth`` levels of nesting.

Per stage (inclusive of what it calls; ``calls`` times):

* ``wall``: from its call to the end of the device work it queued (the stream is
  synchronised before the stage starts and after it ends, so the work is its own);
* ``host``: from its call until it returned to Python: where ``host`` is close to ``wall``
  the host is the bottleneck (kernel launches, Python, syncs, host work), where it is much
  smaller the device is;
* ``GPU span``: CUDA events recorded on the stream around it (the span of its device work,
  idle gaps included: a profiler such as Nsight Compute, ``ncu``, gives kernel busy time);
* syncs, attributed to the innermost timed stage: ``D2H`` (``ndarray.get``, ``cupy.asnumpy``),
  ``scalar`` (``float()``, ``int()``, ``bool()``, ``.item()``, ``.tolist()`` of a device
  array: each one waits for the stream and copies a few bytes), ``H2D`` (``cupy.asarray`` /
  ``cupy.array`` of host data, ``ndarray.set``), ``sync`` (explicit ``Stream.synchronize`` /
  ``Device.synchronize`` by the code).

Then the call sites with the most syncs (file:line in Acetate), and ``cupyx.profiler.benchmark``
of ``analyse`` and of the render chain on a device-resident input (CPU vs GPU time per call).
The per-stage synchronisation serialises what could overlap: the totals are a little above an
unprofiled run's (``bench/run.py --gpu`` times that).  Without a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (module, function, label) timed inside the stages; missing ones are skipped (the code moves on).
TARGETS = [
    ("acetate.pipeline.io.audio", "decode_programme", "audio.decode_programme"),
    ("acetate.pipeline.io.audio", "encode", "audio.encode"),
    ("acetate.kernels.backend", "to_device", "backend.to_device"),
    ("acetate.kernels.backend", "to_host", "backend.to_host"),
    ("acetate.pipeline.chain.meter", "measure_report", "meter.measure_report"),
    ("acetate.pipeline.chain.analyse", "fingerprint", "analyse.fingerprint"),
    ("acetate.pipeline.chain.analyse", "_loudness_pending", "analyse._loudness_pending"),
    ("acetate.kernels.backend", "read_together", "backend.read_together"),
    ("acetate.pipeline.chain.analyse", "clip_runs", "analyse.clip_runs"),
    ("acetate.pipeline.chain.analyse", "silence_bounds", "analyse.silence_bounds"),
    ("acetate.kernels.loudness", "measure", "loudness.measure"),
    ("acetate.kernels.loudness", "measure_profile", "loudness.measure_profile"),
    ("acetate.kernels.loudness", "remeasure", "loudness.remeasure"),
    ("acetate.kernels.truepeak", "true_peak", "truepeak.true_peak"),
    ("acetate.kernels.truepeak", "true_peak_pair", "truepeak.true_peak_pair"),
    ("acetate.kernels.spectrum", "stft", "spectrum.stft"),
    ("acetate.kernels.spectrum", "stft_power", "spectrum.stft_power"),
    ("acetate.kernels.spectrum", "stereo_power_stats", "spectrum.stereo_power_stats"),
    ("acetate.kernels.spectrum", "band_dynamics", "spectrum.band_dynamics"),
    ("acetate.kernels.spectrum", "ltas", "spectrum.ltas"),
    ("acetate.kernels.stereo", "stereo_stats", "stereo.stereo_stats"),
    ("acetate.kernels.stereo", "stereo_stats_from_stft", "stereo.stereo_stats_from_stft"),
    ("acetate.kernels.fir", "design_from_gain", "fir.design_from_gain"),
    ("acetate.kernels.fir", "highpass_taps", "fir.highpass_taps"),
    ("acetate.kernels.fir", "fft_filter", "fir.fft_filter"),
    ("acetate.kernels.fir", "fft_filter_bank", "fir.fft_filter_bank"),
    ("acetate.kernels.fir", "crossover_filters", "fir.crossover_filters"),
    ("acetate.kernels.blocks", "apply_blockwise", "blocks.apply_blockwise"),
    ("acetate.kernels.compressor", "compress", "compressor.compress"),
    ("acetate.kernels.compressor", "compressor_gain", "compressor.compressor_gain"),
    ("acetate.kernels.limiter", "limiter_gain", "limiter.limiter_gain"),
    ("acetate.kernels.limiter", "true_peak_limit", "limiter.true_peak_limit"),
    ("acetate.pipeline.chain.render", "_prepare", "render._prepare"),
    ("acetate.pipeline.chain.render", "_chain_plan", "render._chain_plan"),
    ("acetate.pipeline.chain.render", "_chain_filters", "render._chain_filters"),
    ("acetate.pipeline.chain.render", "_chain_halo", "render._chain_halo"),
    ("acetate.pipeline.chain.render", "_local_chain", "render._local_chain"),
    ("acetate.pipeline.chain.render", "_solve_loudness", "render._solve_loudness"),
    ("acetate.pipeline.chain.render", "_limit", "render._limit"),
    ("acetate.pipeline.chain.render", "_verified_peak_db", "render._verified_peak_db"),
]

KINDS = ("D2H", "scalar", "H2D", "sync")


@dataclass
class Row:
    calls: int = 0
    wall: float = 0.0
    host: float = 0.0
    gpu: float = 0.0
    syncs: collections.Counter = field(default_factory=collections.Counter)


class Profiler:
    """Stage timers (CUDA events + wall clock) and sync counters, switched on by ``enabled``."""

    def __init__(self, cupy, max_depth: int, nvtx: bool = False) -> None:
        self.cupy = cupy
        self.max_depth = max_depth
        self.nvtx = nvtx
        self.enabled = False
        self.rows: dict[tuple[str, ...], Row] = {}
        self.stack: list[tuple[str, ...]] = []
        self.sites: collections.Counter = collections.Counter()
        self.unpatched: list[str] = []
        self._local = threading.local()

    def _row(self, path: tuple[str, ...]) -> Row:
        if path not in self.rows:
            self.rows[path] = Row()
        return self.rows[path]

    # -- timing ---------------------------------------------------------------------------

    def _quiet(self) -> bool:
        return getattr(self._local, "quiet", 0) > 0

    def _sync_quietly(self) -> None:
        self._local.quiet = getattr(self._local, "quiet", 0) + 1
        try:
            self.cupy.cuda.get_current_stream().synchronize()
        finally:
            self._local.quiet -= 1

    def run(self, label: str, fn, *args, **kwargs):
        """Call ``fn`` as the stage ``label`` (nested under the running stage)."""
        if not self.enabled or len(self.stack) >= self.max_depth or self._quiet():
            return fn(*args, **kwargs)
        cp = self.cupy
        path = (self.stack[-1] if self.stack else ()) + (label,)
        self._sync_quietly()
        stream = cp.cuda.get_current_stream()
        start, end = cp.cuda.Event(), cp.cuda.Event()
        rng = None
        if self.nvtx:
            import cupyx.profiler

            rng = cupyx.profiler.time_range(label)
            rng.__enter__()
        self.stack.append(path)
        t0 = time.perf_counter()
        start.record(stream)
        try:
            return fn(*args, **kwargs)
        finally:
            host = time.perf_counter() - t0
            end.record(stream)
            self._local.quiet = getattr(self._local, "quiet", 0) + 1
            try:
                end.synchronize()
            finally:
                self._local.quiet -= 1
            wall = time.perf_counter() - t0
            self.stack.pop()
            if rng is not None:
                rng.__exit__(None, None, None)
            row = self._row(path)
            row.calls += 1
            row.wall += wall
            row.host += host
            row.gpu += cp.cuda.get_elapsed_time(start, end) / 1e3

    def timed(self, label: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return self.run(label, fn, *args, **kwargs)

        wrapper.__acetate_profiled__ = fn
        return wrapper

    # -- counting ---------------------------------------------------------------------------

    def count(self, kind: str) -> None:
        if not self.enabled or self._quiet():
            return
        path = self.stack[-1] if self.stack else ("(outside the stages)",)
        self._row(path).syncs[kind] += 1
        f = sys._getframe(2)
        while f is not None and _skipped_frame(f.f_code.co_filename):
            f = f.f_back
        site = "?" if f is None else f"{_short(f.f_code.co_filename)}:{f.f_lineno} ({f.f_code.co_name})"
        self.sites[(kind, site)] += 1

    def counting(self, kind: str, fn, *, only_host_input: bool = False):
        prof = self

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if getattr(prof._local, "inside", False):
                return fn(*args, **kwargs)
            if not only_host_input or (args and not isinstance(args[0], prof.cupy.ndarray)):
                prof.count(kind)
            prof._local.inside = True
            try:
                return fn(*args, **kwargs)
            finally:
                prof._local.inside = False

        return wrapper

    def install(self) -> None:
        """Wrap the stage functions (every module global that names them) and CuPy's sync points."""
        cp = self.cupy
        for modname, attr, label in TARGETS:
            try:
                mod = importlib.import_module(modname)
            except ImportError:
                self.unpatched.append(f"{modname} (not importable)")
                continue
            orig = getattr(mod, attr, None)
            if orig is None or not callable(orig):
                self.unpatched.append(f"{modname}.{attr} (not found)")
                continue
            wrapped = self.timed(label, orig)
            for m in list(sys.modules.values()):  # callers that imported the name itself, too
                if getattr(m, "__name__", "").startswith("acetate"):
                    for name, val in list(vars(m).items()):
                        if val is orig:
                            setattr(m, name, wrapped)
        methods = [("get", "D2H"), ("__float__", "scalar"), ("__int__", "scalar"), ("__index__", "scalar")]
        methods += [("__bool__", "scalar"), ("__complex__", "scalar"), ("item", "scalar"), ("tolist", "scalar"), ("set", "H2D")]
        for name, kind in methods:
            orig = getattr(cp.ndarray, name, None)
            if orig is None:
                continue
            try:
                setattr(cp.ndarray, name, self.counting(kind, orig))
            except (TypeError, AttributeError) as exc:
                self.unpatched.append(f"cupy.ndarray.{name} ({type(exc).__name__})")
        cp.asnumpy = self.counting("D2H", cp.asnumpy)
        cp.asarray = self.counting("H2D", cp.asarray, only_host_input=True)
        cp.array = self.counting("H2D", cp.array, only_host_input=True)
        for owner, name in ((cp.cuda.Stream, "synchronize"), (cp.cuda.Device, "synchronize")):
            try:
                setattr(owner, name, self.counting("sync", getattr(owner, name)))
            except (TypeError, AttributeError) as exc:
                self.unpatched.append(f"{owner.__name__}.{name} ({type(exc).__name__})")

    # -- report ----------------------------------------------------------------------------

    def table(self) -> str:
        head = f"{'stage':44s} {'calls':>5s} {'wall ms':>9s} {'host ms':>9s} {'GPU ms':>9s} {'host/wall':>9s}"
        head += "".join(f" {k:>6s}" for k in KINDS)
        lines = [head, "-" * len(head)]
        for path in sorted(self.rows, key=_tree_key(self.rows)):
            r = self.rows[path]
            name = "  " * (len(path) - 1) + path[-1]
            frac = r.host / r.wall if r.wall > 0 else float("nan")
            line = f"{name[:44]:44s} {r.calls:5d} {r.wall * 1e3:9.1f} {r.host * 1e3:9.1f} {r.gpu * 1e3:9.1f} {frac:9.2f}"
            line += "".join(f" {r.syncs.get(k, 0):6d}" for k in KINDS)
            lines.append(line)
        return "\n".join(lines)


def _tree_key(rows):
    """Rows in call order, children under their parent: by the first index of each path prefix."""
    first = {p: i for i, p in enumerate(rows)}

    def key(path):
        return tuple(first.get(path[: k + 1], 1 << 30) for k in range(len(path)))

    return key


def _skipped_frame(filename: str) -> bool:
    """Frames a sync site is not reported in: this file, CuPy, array-api-compat, the backend's move helpers."""
    return (
        filename == __file__
        or f"{os.sep}cupy" in filename
        or f"{os.sep}array_api_compat{os.sep}" in filename
        or filename.endswith(os.path.join("kernels", "backend.py"))
    )


def _short(path: str) -> str:
    parts = Path(path).parts
    for anchor in ("kernels", "pipeline", "schemas", "acetate"):
        if anchor in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(anchor) :])
    return Path(path).name


def _track(args, tmp: Path) -> str:
    if args.input:
        return args.input
    from acetate.pipeline.catalogue import demo
    from acetate.pipeline.io import audio

    path = tmp / f"{args.style}-{args.seconds:g}s.flac"
    audio.encode(demo.render_style(args.style, args.seconds, 48000, seed=7), 48000, path, "flac24")
    return str(path)


def one_track(path: str, out_stem: str, bank, run, device: str = "gpu"):
    """The stages of a catalogue worker's track (track.run_track's master mode, one target), each through ``run``."""
    from acetate.pipeline import stages
    from acetate.pipeline.chain import render

    prog = run("decode", stages.decode, path)  # to the host: the worker moves it inside its device section
    found = run("analyse", stages.analyse, prog.audio, prog.fs, device)
    choice = run("select", stages.select, found.fingerprint, "auto", bank)
    ms = render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0, intensity="medium", device=device)
    result = run("render", stages.render, prog, found, choice, ms, hand_over=True)
    run("verify", stages.verify, result, device)
    run("write", stages.write, result, out_stem, ["flac24"])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", metavar="FILE", default=None, help="the track (default: a synthetic mix, --style, --seconds)")
    ap.add_argument("--style", default="pop", help="synthetic mix style (acetate.pipeline.catalogue.demo.STYLES; default pop)")
    ap.add_argument("--seconds", type=float, default=300.0, help="synthetic mix length (default 300)")
    ap.add_argument("--depth", type=int, default=3, help="levels of nested stages to time (default 3; deeper calls count into theirs)")
    ap.add_argument("--sites", type=int, default=15, help="call sites with the most syncs to list (default 15)")
    ap.add_argument("--repeat", type=int, default=3, help="cupyx.profiler.benchmark repeats (default 3; 0: skip it)")
    ap.add_argument("--nvtx", action="store_true", help="also mark each stage as an NVTX range (for nsys / ncu)")
    args = ap.parse_args(argv)

    from acetate.kernels import backend

    if not backend.gpu_available():
        print("profile_gpu: skipped: no CuPy / CUDA device on this machine")
        return 0
    import cupy

    from acetate.pipeline.chain import presets

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    print(f"# GPU: {name}, CuPy {cupy.__version__}; host {os.cpu_count()} CPU(s)")
    prof = Profiler(cupy, args.depth, nvtx=args.nvtx)
    prof.install()
    if prof.unpatched:
        print("# not wrapped: " + ", ".join(prof.unpatched))
    bank = presets.load_bank(None)
    pool = cupy.get_default_memory_pool()
    with tempfile.TemporaryDirectory(prefix="acetate-profile-") as tmp:
        path = _track(args, Path(tmp))
        t0 = time.perf_counter()
        one_track(path, str(Path(tmp) / "warm"), bank, lambda _label, fn, *a, **k: fn(*a, **k))
        warm = time.perf_counter() - t0
        cupy.get_default_memory_pool().free_all_blocks()
        prof.enabled = True
        t0 = time.perf_counter()
        result = one_track(path, str(Path(tmp) / "master"), bank, prof.run)
        total = time.perf_counter() - t0
        prof.enabled = False
        dur = result.audio.shape[-1] / result.fs
        print(
            f"# track: {path if args.input else f'synthetic {args.style}'}, {dur:.1f} s at {result.fs} Hz, {result.audio.shape[0]} channel(s)"
        )
        print(f"# first run (CuPy compiles or loads its kernels): {warm:.2f} s; profiled run {total:.2f} s = {dur / total:.0f}x realtime")
        print(f"# CuPy memory pool after the profiled run: {pool.total_bytes() / 2**20:.0f} MiB held\n")
        print(prof.table())
        syncs = collections.Counter()
        for r in prof.rows.values():
            syncs.update(r.syncs)
        print(f"\nsyncs in the profiled run: {', '.join(f'{k} {syncs.get(k, 0)}' for k in KINDS)}")
        if args.sites and prof.sites:
            print(f"\ncall sites with the most syncs (top {args.sites}):")
            for (kind, site), n in prof.sites.most_common(args.sites):
                print(f"  {n:5d}  {kind:6s} {site}")
        if args.repeat:
            import cupyx.profiler

            from acetate.pipeline import stages
            from acetate.pipeline.chain import render

            prog = stages.decode(path, device="gpu")
            found = stages.analyse(prog.audio, prog.fs, "gpu")
            ms = render.MasterSettings(target_lufs=-14.0, ceiling_dbtp=-1.0, device="gpu")
            choice = stages.select(found.fingerprint, "auto", bank)
            print(f"\ncupyx.profiler.benchmark, input on the device ({args.repeat} repeats after a warm-up; CPU = host time per call):")
            for label, fn in (
                ("analyse", lambda: stages.analyse(prog.audio, prog.fs, "gpu")),
                ("render.master", lambda: render.master(prog.audio, prog.fs, ms, preset=choice.preset, fingerprint=found.fingerprint)),
            ):
                b = cupyx.profiler.benchmark(fn, (), n_repeat=args.repeat, n_warmup=1, name=label)
                cpu, gpu = float(b.cpu_times.mean()), float(b.gpu_times.mean())
                print(f"  {label:14s} CPU {cpu * 1e3:9.1f} ms   GPU {gpu * 1e3:9.1f} ms   {dur / max(cpu, gpu):8.0f}x realtime")
    return 0


if __name__ == "__main__":
    sys.exit(main())
