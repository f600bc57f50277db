"""Acetate benchmarks: the meter and the fingerprint on real music, x-realtime, with peers in the same run.

One command (from the repository root)::

    python bench/run.py            # CPU, pinned to one core; peers: libebur128 (pyebur128), pyloudnorm
    python bench/run.py --gpu      # the GPU figures in one run (skipped with a message, exit 0, without a GPU)
    python bench/run.py --quick    # fewer repeats, corpus limited to a few files

``--gpu`` prints, in one run: the fingerprint, the meter and the render chain
x-realtime on a 300 s track already in device memory (CuPy, timed to the stream's
end), with the memory pool's peak per case; then a catalogue through ``acetate run
--device gpu`` (``--tracks`` x ``--seconds`` synthetic 48 kHz mixes, FLAC 24 in and
out, the default local cluster laid out one worker per GPU) next to the codec floor
(soundfile decode + encode of the same files, one process per core), their ratio,
and the device memory peak during the job (NVML, else ``cudaMemGetInfo``, sampled
every 20 ms); ``--json FILE`` writes the figures too.

What is measured (best of ``--repeat`` rounds, each running every contender once, wall clock, one core):

* ``acetate meter``: :func:`acetate.kernels.loudness.measure` (integrated,
  M/S maxima on a 1 ms grid, LRA) + :func:`acetate.kernels.truepeak.true_peak` (4x);
  also each part alone;
* ``acetate fingerprint``: :func:`acetate.pipeline.chain.analyse.fingerprint`
  (which includes the meter);
* ``libebur128``: pyebur128 with MODE_I | MODE_LRA | MODE_TRUE_PEAK on
  interleaved float32 (the same work as the acetate meter, LRA at 1 Hz);
* ``pyloudnorm``: ``Meter(fs).integrated_loudness`` (integrated only: it has
  no true peak, LRA or M/S maxima).

Inputs: a 5-minute stereo 48 kHz track (frozen-bubble's ``frozen-mainzik-1p.ogg``
resampled from 44.1 kHz, the first 300 s) and a corpus of real Ogg music
(hyperrogue, nexuiz, frozen-bubble) at native rates, decoded before timing.
x-realtime = seconds of audio / seconds of compute.  Ratios are against the
peer measured in the same run on the same audio.

The thread pools are limited to one thread before NumPy is imported and the
process is pinned to one CPU (``os.sched_setaffinity``).  OPENBLAS_CORETYPE /
OPENBLAS_L2_SIZE may be set on the machine (older OpenBLAS builds need them);
they are left as found and reported, since tests and CI run with them.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import glob  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402

import numpy as np  # noqa: E402

TRACK_5MIN = "/usr/share/games/frozen-bubble/snd/frozen-mainzik-1p.ogg"
CORPUS_GLOBS = ["/usr/share/hyperrogue/music/*.ogg", "/usr/share/games/frozen-bubble/snd/*.ogg"]
NEXUIZ_PK3 = "/usr/share/games/nexuiz/data/music.pk3"


def _pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError) as e:  # pragma: no cover - non-Linux
        return f"not pinned ({e})"


def _decode(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, fs = sf.read(path, dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(fs)


def five_minute_track() -> tuple[np.ndarray, int, str]:
    """(2, 300 * 48000) float32 at 48 kHz from real music."""
    from scipy.signal import resample_poly

    fs = 48000
    if os.path.exists(TRACK_5MIN):
        x, fs0 = _decode(TRACK_5MIN)
        name = os.path.basename(TRACK_5MIN)
    elif not glob.glob(CORPUS_GLOBS[0]):  # no corpus on this machine (a GPU node): a synthetic mix
        from acetate.pipeline.catalogue import demo

        return demo.render_style("pop", 300.0, fs, seed=7), fs, "synthetic pop mix (no corpus here), 48 kHz, 300 s, stereo"
    else:  # concatenate whatever real music there is
        parts = [_decode(p) for p in sorted(glob.glob(CORPUS_GLOBS[0]))]
        fs0 = parts[0][1]
        x = np.concatenate([p[0] for p in parts if p[1] == fs0], axis=1)
        name = "hyperrogue concatenated"
    if fs0 != fs:
        g = np.gcd(fs, fs0)
        x = resample_poly(x.astype(np.float64), fs // g, fs0 // g, axis=1)
    x = np.ascontiguousarray(x[:2, : 300 * fs], dtype=np.float32)
    if x.shape[1] < 300 * fs:
        x = np.ascontiguousarray(np.tile(x, (1, -(-300 * fs // x.shape[1])))[:, : 300 * fs])
    return x, fs, f"{name} -> 48 kHz, 300 s, stereo"


def corpus(limit: int | None) -> list[tuple[str, np.ndarray, int]]:
    paths = sorted(p for g in CORPUS_GLOBS for p in glob.glob(g) if os.path.getsize(p) > 500_000)
    tmp = None
    if os.path.exists(NEXUIZ_PK3):
        tmp = tempfile.mkdtemp(prefix="acetate-bench-")
        with zipfile.ZipFile(NEXUIZ_PK3) as z:
            names = sorted(n for n in z.namelist() if n.endswith(".ogg") and z.getinfo(n).file_size > 500_000)
            for n in names[:8]:
                z.extract(n, tmp)
                paths.append(os.path.join(tmp, n))
    if limit:
        paths = paths[:limit]
    out = []
    for p in paths:
        x, fs = _decode(p)
        if x.shape[0] == 1:
            x = np.concatenate([x, x])
        out.append((os.path.basename(p), np.ascontiguousarray(x[:2]), fs))
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _rounds(cases, x, fs, repeat: int) -> tuple[dict, dict]:
    """Best time of each case over ``repeat`` rounds; every round runs every case once, in turn,
    so a passing load on a shared machine hits all contenders alike."""
    times = {name: float("inf") for name, _ in cases}
    values = {}
    for _ in range(repeat):
        for name, fn in cases:
            t0 = time.perf_counter()
            values[name] = fn(x, fs)
            times[name] = min(times[name], time.perf_counter() - t0)
    return times, values


# -- the contenders -----------------------------------------------------------------------------


def acetate_meter(x, fs):
    from acetate.kernels import loudness, truepeak

    st = loudness.measure(x, fs)
    tp = truepeak.true_peak(x, fs)
    return st.integrated_lufs, st.loudness_range_lu, float(20 * np.log10(np.max(tp)))


def acetate_loudness(x, fs):
    from acetate.kernels import loudness

    return loudness.measure(x, fs)


def acetate_true_peak(x, fs):
    from acetate.kernels import truepeak

    return truepeak.true_peak(x, fs)


def acetate_fingerprint(x, fs):
    from acetate.pipeline.chain import analyse

    return analyse.fingerprint(x, fs)


def ebur128_meter(x, fs):
    """libebur128 via pyebur128: integrated + LRA + true peak, interleaved float32 (the interleave is timed)."""
    import pyebur128 as e

    mode = e.MeasurementMode.MODE_I | e.MeasurementMode.MODE_LRA | e.MeasurementMode.MODE_TRUE_PEAK
    st = e.R128State(x.shape[0], fs, mode)
    st.add_frames(np.ascontiguousarray(x.T).reshape(-1), x.shape[1])
    tp = max(e.get_true_peak(st, c) for c in range(x.shape[0]))
    return e.get_loudness_global(st), e.get_loudness_range(st), float(20 * np.log10(tp))


def pyloudnorm_integrated(x, fs):
    import pyloudnorm

    return pyloudnorm.Meter(fs).integrated_loudness(x.T)


CPU_CASES = [
    ("acetate meter (I+M/S max+LRA+TP)", acetate_meter),
    ("  acetate loudness.measure", acetate_loudness),
    ("  acetate truepeak.true_peak 4x", acetate_true_peak),
    ("acetate fingerprint (incl. meter)", acetate_fingerprint),
    ("libebur128 (I+LRA+TP)", ebur128_meter),
    ("pyloudnorm (I only)", pyloudnorm_integrated),
]


def machine_info() -> list[str]:
    lines = [f"python {platform.python_version()}, numpy {np.__version__}"]
    try:
        import scipy

        lines[0] += f", scipy {scipy.__version__}"
        import pyebur128

        lines[0] += f", libebur128 {pyebur128.get_libebur128_version()}"
        import pyloudnorm  # noqa: F401

        lines[0] += ", pyloudnorm installed"
    except Exception:  # pragma: no cover
        pass
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines()
        lines += [ln for ln in lscpu if ln.split(":")[0] in ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache")]
    except Exception:  # pragma: no cover
        pass
    lines.append(
        "OPENBLAS_CORETYPE=%s OPENBLAS_L2_SIZE=%s"
        % (os.environ.get("OPENBLAS_CORETYPE", "(unset)"), os.environ.get("OPENBLAS_L2_SIZE", "(unset)"))
    )
    try:
        from threadpoolctl import threadpool_info

        lines += [
            f"BLAS: {d.get('internal_api')} {d.get('version')} {d.get('architecture', '')} threads={d.get('num_threads')}"
            for d in threadpool_info()
        ]
    except Exception:  # pragma: no cover
        pass
    return lines


def run_cpu(args) -> None:
    print("# CPU, one core:", _pin_one_core())
    for ln in machine_info():
        print("#", ln)
    x, fs, desc = five_minute_track()
    dur = x.shape[1] / fs
    print(f"\n## 5-minute track: {desc}  (best of {args.repeat} rounds)")
    for _, fn in CPU_CASES:
        fn(x[:, : fs * 5], fs)  # warm up imports and caches
    times, values = _rounds(CPU_CASES, x, fs, args.repeat)
    _table(times, dur)
    a, e = values[CPU_CASES[0][0]], values["libebur128 (I+LRA+TP)"]
    print(
        f"\nagreement with libebur128: I {a[0] - e[0]:+.4f} LU, LRA {a[1] - e[1]:+.3f} LU (libebur128 takes LRA blocks at 1 Hz), TP {a[2] - e[2]:+.3f} dB"
    )
    print(f"agreement with pyloudnorm (RBJ K-filter approximation): I {a[0] - values['pyloudnorm (I only)']:+.4f} LU")

    files = corpus(args.limit)
    total = sum(xx.shape[1] / ffs for _, xx, ffs in files)
    print(
        f"\n## corpus: {len(files)} real Ogg tracks, {total / 60:.1f} min, native rates {sorted({f for _, _, f in files})} Hz (best of {args.repeat} rounds per file)"
    )
    ctimes = {name: 0.0 for name, _ in CPU_CASES}
    for _, xx, ffs in files:
        for name, t in _rounds(CPU_CASES, xx, ffs, args.repeat)[0].items():
            ctimes[name] += t
    _table(ctimes, total)


def _table(times: dict, dur: float) -> None:
    ebu = times["libebur128 (I+LRA+TP)"]
    pyl = times["pyloudnorm (I only)"]
    print(f"{'':36s} {'seconds':>9s} {'x-realtime':>11s} {'vs libebur128':>14s} {'vs pyloudnorm':>14s}")
    for name, t in times.items():
        print(f"{name:36s} {t:9.3f} {dur / t:11.0f} {ebu / t:13.2f}x {pyl / t:13.2f}x")


class DeviceMemorySampler:
    """Peak memory in use on the GPUs while the ``with`` block runs (all processes), sampled in a thread:
    NVML (nvidia-ml-py) where it loads, which needs no CUDA context; else ``cudaMemGetInfo`` of device 0."""

    def __init__(self, period_s: float = 0.02) -> None:
        import threading

        self.period_s = period_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.source = "cudaMemGetInfo (device 0)"
        self._handles: list = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
            self.source = f"NVML, {len(self._handles)} GPU(s)"
        except Exception:
            self._handles = []
        self.base = self.used()
        self.peak = self.base

    def used(self) -> int:
        if self._handles:
            return sum(int(self._nvml.nvmlDeviceGetMemoryInfo(h).used) for h in self._handles)
        import cupy

        free, total = cupy.cuda.runtime.memGetInfo()
        return int(total - free)

    def _run(self) -> None:
        while not self.stop.wait(self.period_s):
            try:
                self.peak = max(self.peak, self.used())
            except Exception:
                return

    def __enter__(self) -> "DeviceMemorySampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.used())


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def run_gpu(args) -> int:
    from acetate.kernels import backend

    if not backend.gpu_available():
        print("--gpu: skipped: no CuPy / CUDA device on this machine (CPU figures: run without --gpu)")
        return 0
    import json

    import cupy

    from acetate.kernels import loudness, truepeak
    from acetate.pipeline.chain import analyse, render

    figures: dict = {"device": {}, "kernels": {}, "catalogue": None}
    x_host, fs, desc = five_minute_track()
    dur = x_host.shape[1] / fs
    x = cupy.asarray(x_host)  # already in device memory before timing
    stream = cupy.cuda.get_current_stream()
    pool = cupy.get_default_memory_pool()
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    dev = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = cupy.cuda.runtime.memGetInfo()
    figures["device"] = {"name": dev, "memory_total": int(total), "cupy": cupy.__version__, "count": cupy.cuda.runtime.getDeviceCount()}
    print(f"# GPU: {dev} ({_gib(total)}, {figures['device']['count']} visible), CuPy {cupy.__version__}, numpy {np.__version__}")
    print(f"# host: {os.cpu_count()} logical CPU(s)")
    print(f"\n## 5-minute track on the device: {desc} (best of {args.repeat}, synchronised on the stream)")

    def timed(fn):
        fn()  # warm-up: CuPy compiles (or loads from its cache) each kernel the first time
        stream.synchronize()
        pool.free_all_blocks()
        base = pool.total_bytes()  # the input track (and anything else held)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            stream.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best, pool.total_bytes() - base  # the pool keeps freed blocks: its growth is the case's peak

    fp = analyse.fingerprint(x, fs)
    settings = render.MasterSettings(device="gpu", target_lufs=-14.0, ceiling_dbtp=-1.0)
    cases = [
        ("meter (measure + true_peak)", lambda: (loudness.measure(x, fs), truepeak.true_peak(x, fs))),
        ("  loudness.measure", lambda: loudness.measure(x, fs)),
        ("  truepeak.true_peak 4x", lambda: truepeak.true_peak(x, fs)),
        ("fingerprint (incl. meter)", lambda: analyse.fingerprint(x, fs)),
        ("render chain (master, input on device)", lambda: render.master(x, fs, settings, fingerprint=fp)),
    ]

    def save() -> None:  # after each part: a session cut short keeps what was measured
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(figures, fh, indent=2, default=float)

    print(f"{'':40s} {'seconds':>9s} {'x-realtime':>11s} {'pool peak':>11s}")
    for name, fn in cases:
        try:
            t, mem = timed(fn)
        except Exception as exc:  # one broken case does not cost the others
            figures["kernels"][name.strip()] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name:40s} FAILED {type(exc).__name__}: {exc}")
            continue
        figures["kernels"][name.strip()] = {"seconds": t, "x_realtime": dur / t, "pool_peak_bytes": int(mem)}
        print(f"{name:40s} {t:9.4f} {dur / t:11.0f} {_gib(mem):>11s}")
    save()
    print(f"input track on the device: {_gib(x.nbytes)}; pool peak = growth of CuPy's memory pool during the timed calls")
    print("goals: meter + fingerprint >= 20,000x realtime (issue 2); render chain >= 10,000x (issue 3;")
    print("       the master includes its output report, 16x verification and the copy back to the host)")
    x = fp = cases = None  # the track and the cases' results leave the device before the catalogue
    pool.free_all_blocks()
    cupy.get_default_pinned_memory_pool().free_all_blocks()

    if args.tracks:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_catalogue as bc

        print(f"\n## catalogue through `acetate run --device gpu`: {args.tracks} x {args.seconds:g} s synthetic mixes, FLAC 24 -> FLAC 24")
        cat = bc.generated_catalogue(args.tracks, args.seconds)
        files = [p for p, _ in cat]
        manifest = bc.write_manifest(files, f"manifest-gen-{len(files)}-{args.seconds:g}s.csv")
        try:
            with DeviceMemorySampler() as mem:
                summary = bc.measure(files, manifest, device="gpu", threads=args.gpu_threads, workers_per_gpu=args.workers_per_gpu)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            figures["catalogue"] = {"error": f"{type(exc).__name__}: {exc}"}
            save()
            return 1
        summary["gpu_memory_peak_bytes"] = mem.peak
        summary["gpu_memory_base_bytes"] = mem.base
        figures["catalogue"] = summary
        print(
            f"  GPU memory in use during the job ({mem.source}): peak {_gib(mem.peak)}, "
            f"{_gib(mem.peak - mem.base)} above the {_gib(mem.base)} in use before it (this process's context and pool)"
        )
        ratio = summary["ratio"]
        k = figures["kernels"]
        print(
            f"\nRESULT gpu catalogue: acetate {summary['acetate_x']:.1f}x realtime, floor {summary['floor_x'] or 0:.1f}x "
            f"({summary['floor_processes']} processes), ratio {ratio if ratio is None else round(ratio, 3)}; "
            f"render chain {k.get('render chain (master, input on device)', {}).get('x_realtime', float('nan')):.0f}x, "
            f"fingerprint {k.get('fingerprint (incl. meter)', {}).get('x_realtime', float('nan')):.0f}x; GPU memory peak {_gib(mem.peak)}"
        )
    save()
    if args.json:
        print(f"figures written to {args.json}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gpu", action="store_true", help="benchmark on the GPU (CuPy, data on the device)")
    p.add_argument("--repeat", type=int, default=5, help="rounds per measurement; the best is kept (default 5)")
    p.add_argument("--limit", type=int, default=None, help="use at most this many corpus files")
    p.add_argument("--quick", action="store_true", help="--repeat 1 --limit 4")
    g = p.add_argument_group("--gpu catalogue")
    g.add_argument("--tracks", type=int, default=48, metavar="N", help="tracks of the catalogue (default 48; 0: no catalogue)")
    g.add_argument("--seconds", type=float, default=60.0, metavar="S", help="seconds per track (default 60)")
    g.add_argument("--gpu-threads", type=int, default=None, metavar="T", help="threads per GPU worker (default: cores // GPUs)")
    g.add_argument("--workers-per-gpu", type=int, default=1, metavar="W", help="GPU worker processes per GPU (default 1)")
    g.add_argument("--json", metavar="FILE", default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.limit = 1, 4
    if args.gpu:
        return run_gpu(args)
    run_cpu(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
