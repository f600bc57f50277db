"""Time the true-peak limiter on a 5-minute stereo 48 kHz track (one core by default).

    python bench/bench_limiter.py [--seconds 300] [--repeat 3] [--threads 1] [--gpu]

Cases: pink noise 6 dB over a -1 dBTP ceiling (heavy limiting), the same
+2 dB over (light), and 0.5 dB under (no limiting: must cost about one true-peak
measurement, timed alongside). Prints seconds, x realtime, the output's true
peak on ``truepeak.true_peak(..., oversample=16)`` and the loudness given up
(integrated loudness of the output vs a static gain to the same ceiling).
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--fs", type=int, default=48000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (the target is one core)")
    ap.add_argument("--gpu", action="store_true", help="run on CuPy")
    args = ap.parse_args()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import time

    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from conftest import pink_noise

    from acetate.kernels import backend, limiter, loudness, truepeak

    xp = backend.array_module("gpu" if args.gpu else "cpu")
    fs, ceil_db = args.fs, -1.0
    base = pink_noise(args.seconds, fs=fs, seed=3).astype(np.float32)
    tp0 = float(truepeak.true_peak(base, fs, oversample=16).max())

    def sync():
        if backend.is_gpu(xp):
            import cupy

            cupy.cuda.Device().synchronize()

    def timed(fn):
        """Best wall time and best CPU time over ``--repeat`` runs (CPU time: less
        sensitive to other processes on a shared machine)."""
        best, best_cpu = float("inf"), float("inf")
        out = None
        for _ in range(args.repeat):
            sync()
            t, c = time.perf_counter(), time.process_time()
            out = fn()
            sync()
            best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
        return (best, best_cpu), out

    limiter.true_peak_limit(xp.asarray(base[:, :fs]), fs, ceil_db)  # warm-up (filter design, caches)
    print(f"{args.seconds:.0f} s stereo at {fs} Hz, ceiling {ceil_db} dBTP, {'GPU' if args.gpu else f'CPU, {args.threads} BLAS thread(s)'}")
    for over_db in (6.0, 2.0, -0.5):
        x = xp.asarray((base * (10 ** ((ceil_db + over_db) / 20) / tp0)).astype(np.float32))
        (t_lim, c_lim), (y, g) = timed(lambda: limiter.true_peak_limit(x, fs, ceil_db))
        (t_tp, c_tp), peak = timed(lambda: truepeak.true_peak(y, fs, oversample=16))
        tp_db = 20 * np.log10(float(backend.to_host(peak).max()))
        yh, xh = backend.to_host(y), backend.to_host(x)
        static = xh * 10 ** ((ceil_db - (ceil_db + over_db)) / 20)
        loss = loudness.integrated_loudness(static, fs) - loudness.integrated_loudness(yh, fs)
        gain_db = 20 * np.log10(float(backend.to_host(g).min()))
        print(
            f"  {over_db:+.1f} dB over: limiter {t_lim:.3f} s wall, {c_lim:.3f} s CPU ({args.seconds / t_lim:,.0f}x realtime);"
            f" output 16x TP {tp_db:+.4f} dBTP (meter {t_tp:.3f} s wall, {c_tp:.3f} s CPU); deepest gain {gain_db:.2f} dB;"
            f" loudness vs static gain {-loss:+.2f} LU"
        )


if __name__ == "__main__":
    main()
