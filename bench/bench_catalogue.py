"""A catalogue of real music through ``acetate run``, next to the codec floor, same run.

    python bench/bench_catalogue.py [--tracks 50] [--seconds 60] [--workers N]
                                    [--threads-per-worker T] [--mixes 10] [--skip-floor]
                                    [--device cpu|gpu] [--generate] [--floor-processes P]

``--generate`` uses synthetic mixes instead of the corpus (``acetate.pipeline.catalogue.demo``
styles, 48 kHz stereo, FLAC 24, cached in ``.bench-data/catalogue/gen-<N>x<S>s``): for a
machine without the corpus packages (a GPU node). ``--device gpu`` runs the job as
``acetate run --device gpu`` does on the default local cluster: one worker per visible GPU
(``--workers``: how many GPUs), its threads the cores shared out (``--threads-per-worker``);
the workers import CuPy and touch the device once before the timing (``client.run``), and
each says which device it sees.

The catalogue (cached in ``.bench-data/catalogue/seg<S>s``) is cut from the benchmark
corpus (``bench/corpus.py``): the mastered Ogg soundtracks under ``/usr/share`` (>= 500 kB)
and ``--mixes`` fluidsynth-rendered unmastered mixes, each decoded once and cut into
consecutive segments of at most ``--seconds`` seconds (a tail shorter than a third of that
is dropped), written as FLAC 24.  Tracks are taken round-robin: the first segment of every
source, then the second segments, ... so a short catalogue is mostly distinct pieces.

Two measurements on the same files, each using all the cores (the floor one process per core;
``acetate run`` its local cluster as sized by default, cores // threads per worker, unless
``--workers`` says otherwise):

* **acetate** -- the job runs as ``acetate run JOB.yaml --input MANIFEST --out DIR
  --workers N`` runs it (the same calls: ``jobs.apply_overrides``, ``cluster.connect`` with
  a local cluster of N processes x T threads, ``batch.run_job``): mode master, target
  streaming (-14 LUFS, -1 dBTP), FLAC 24 out, preset auto, ``verify: true`` (masters are
  fingerprinted too), device cpu; the output folder is emptied first (the ledger would skip
  tracks).  Time = ``run_job`` wall clock (the cluster's start-up is printed separately).
  Peak RSS per worker: ``client.run(getrusage(RUSAGE_SELF).ru_maxrss)`` after start-up and
  after the run.
* **floor** -- plain decode + encode (``soundfile.read`` -> ``soundfile.write`` FLAC
  PCM_24) of the same files by a ``multiprocessing.Pool(N)`` (pool started before timing).

Before timing all inputs are read once (page cache warm for both).  x-realtime = seconds
of audio / wall seconds; the goal on CPU is acetate / floor >= 0.5.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import provenance  # noqa: E402  (bench/ helpers)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT / ".bench-data"


def build_catalogue(seconds: float, n_mixes: int) -> list[tuple[str, float]]:
    """All segments (path, duration s) in round-robin order; cached."""
    import soundfile as sf

    sys.path.insert(0, str(HERE))
    from corpus import mastered_tracks, unmastered_mixes

    out = DATA / "catalogue" / f"seg{seconds:g}s"
    out.mkdir(parents=True, exist_ok=True)
    sources = mastered_tracks() + unmastered_mixes(DATA / "mixes", n_mixes)
    per_source: list[list[tuple[str, float]]] = []
    for src in sources:
        stem = Path(src).stem
        done = out / f"{stem}.done"
        if not done.exists():
            data, fs = sf.read(src, dtype="float32", always_2d=True)
            seg = int(round(seconds * fs))
            k = 0
            for start in range(0, data.shape[0], seg):
                piece = data[start : start + seg]
                if piece.shape[0] < seg / 3 and k > 0:
                    break
                sf.write(out / f"{stem}-{k:02d}.flac", piece, fs, subtype="PCM_24")
                k += 1
            done.write_text(str(k))
        k = int(done.read_text())
        segs = []
        for i in range(k):
            p = out / f"{stem}-{i:02d}.flac"
            segs.append((str(p), sf.info(str(p)).duration))
        per_source.append(segs)
    order = []
    for i in range(max(len(s) for s in per_source)):
        order += [s[i] for s in per_source if i < len(s)]
    return order


def _generate_one(args: tuple[str, str, float, int, int]) -> float:
    from acetate.pipeline.catalogue import demo
    from acetate.pipeline.io import audio

    path, style, seconds, fs, seed = args
    x = demo.render_style(style, seconds, fs, seed=seed)
    tmp = path + ".part.flac"
    audio.encode(x, fs, tmp, "flac24")
    os.replace(tmp, path)
    return x.shape[1] / fs


def generated_catalogue(n: int, seconds: float, fs: int = 48000, processes: int | None = None) -> list[tuple[str, float]]:
    """``n`` synthetic unmastered mixes of ``seconds`` s (the demo's styles in turn, a seed each), FLAC 24; cached."""
    import multiprocessing as mp

    from acetate.pipeline.catalogue import demo

    out = DATA / "catalogue" / f"gen-{n}x{seconds:g}s-{fs}"
    out.mkdir(parents=True, exist_ok=True)
    todo, cat = [], []
    for i in range(n):
        style = demo.STYLES[i % len(demo.STYLES)]
        path = out / f"{style}-{i:03d}.flac"
        cat.append((str(path), float(round(seconds * fs) / fs)))
        if not path.exists():
            todo.append((str(path), style, seconds, fs, 1000 + i))
    if todo:
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(min(len(todo), processes or os.cpu_count() or 1)) as pool:
            pool.map(_generate_one, todo, chunksize=1)
        print(f"generated {len(todo)} synthetic mixes of {seconds:g} s in {time.perf_counter() - t0:.1f} s ({out})", flush=True)
    return cat


def _floor_one(args: tuple[str, str]) -> tuple[float, float]:
    import soundfile as sf

    c0 = time.process_time()
    src, dst = args
    data, fs = sf.read(src, dtype="float32")
    sf.write(dst, data, fs, subtype="PCM_24", format="FLAC")
    return data.shape[0] / fs, time.process_time() - c0


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _maxrss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _rss_now_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_floor(files: list[str], workers: int, out_dir: Path, repeat: int = 3) -> tuple[float, float, float]:
    """(audio s, wall s, worker CPU s) of the best of ``repeat`` passes (the pass is short: noisy on a shared machine)."""
    import multiprocessing as mp

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    jobs_ = [(f, str(out_dir / (Path(f).stem + ".flac"))) for f in files]
    best = None
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_floor_one, jobs_[:workers], chunksize=1)  # start-up / imports, untimed
        for _ in range(max(1, repeat)):
            t0 = time.perf_counter()
            done = list(pool.imap_unordered(_floor_one, jobs_, chunksize=1))
            wall = time.perf_counter() - t0
            if best is None or wall < best[1]:
                best = (sum(d for d, _ in done), wall, sum(c for _, c in done))
    return best


JOB_YAML = """\
# Generated by bench/bench_catalogue.py (overridden by --input/--out).
name: bench-catalogue
description: Benchmark catalogue, FLAC to FLAC 24 for streaming.
mode: master
inputs:
  manifest: manifest.csv
output: out
targets:
  streaming: {{integrated_lufs: -14.0, true_peak_dbtp: -1.0, tolerance_lu: 1.0}}
target: streaming
formats: [flac24]
presets:
  bank: null
  preset: null
  intensity: medium
album_mode: false
options:
  device: {device}
  strict: false
  retries: 2
  progress: {progress}
  verify: true
"""


def _warm_gpu() -> str:
    """In a worker: import CuPy, run one kernel, say which device(s) this process sees."""
    import cupy

    cupy.ones(1 << 20, dtype=cupy.float32).sum().item()
    n = cupy.cuda.runtime.getDeviceCount()
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}: {n} device(s), device 0 {name}"


def run_acetate(
    manifest: Path, out_dir: Path, workers: int | None, threads: int | None, progress: bool, device: str = "cpu", workers_per_gpu: int = 1
) -> dict:
    from acetate.pipeline.catalogue import batch, cluster, jobs

    job_path = manifest.parent / "bench-job.yaml"
    job_path.write_text(JOB_YAML.format(progress="true" if progress else "false", device=device))
    shutil.rmtree(out_dir, ignore_errors=True)
    job = jobs.apply_overrides(jobs.load_job(job_path), input=str(manifest), out=str(out_dir), strict=None)
    # `acetate run` on the default cluster file: kind local; device gpu lays it out one worker per GPU.
    cfg = cluster.parse_cluster_config(
        {
            "kind": "local",
            "local": {"threads_per_worker": threads or 2, "dashboard_address": ":0"},
            "gpu": {"threads_per_worker": threads, "workers_per_gpu": workers_per_gpu, "dashboard_address": ":0"},
        }
    )
    t0 = time.perf_counter()
    handle = cluster.connect(cfg, workers=workers, device=device)
    startup = time.perf_counter() - t0
    with handle:
        print(f"  cluster: {handle.description} (started in {startup:.1f} s)", flush=True)
        info = handle.client.scheduler_info()["workers"]
        n_workers = len(info)
        slots = sum(int(w.get("nthreads", 1)) for w in info.values())
        if device == "gpu":
            t1 = time.perf_counter()
            for addr, line in sorted(handle.client.run(_warm_gpu).items()):
                print(f"  worker {info[addr].get('name', addr)}: {line}", flush=True)
            print(f"  (CuPy imported and the device touched in every worker in {time.perf_counter() - t1:.1f} s, untimed)", flush=True)
        rss0 = handle.client.run(_maxrss_kib)
        cpu0 = handle.client.run(_cpu_s)
        t0 = time.perf_counter()
        res = batch.run_job(
            job,
            handle.client,
            progress=progress,
            cluster_desc=f"{handle.kind} {handle.scheduler_address}",
            log=lambda m: print("  " + m, flush=True),
        )
        wall = time.perf_counter() - t0
        cpu1 = handle.client.run(_cpu_s)
        rss1 = handle.client.run(_maxrss_kib)
        now = handle.client.run(_rss_now_kib)
    cpu = sum(cpu1[w] - cpu0.get(w, 0.0) for w in cpu1)
    return {
        "result": res,
        "wall": wall,
        "cpu": cpu,
        "startup": startup,
        "rss0": rss0,
        "rss1": rss1,
        "rss_now": now,
        "workers": n_workers,
        "slots": slots,
        "description": handle.description,
    }


def landing(out_dir: Path) -> str:
    """Summary of the job's loudness dataset (output rows): Acetate's own report."""
    try:
        import pyarrow.dataset as ds

        t = ds.dataset(str(out_dir / "loudness"), format="parquet").to_table().to_pylist()
    except Exception as exc:  # the dataset layout is the pipeline's business
        return f"(loudness dataset not readable: {exc})"
    rows = [r for r in t if r["stage"] == "output" and r["scope"] == "track"]
    if not rows:
        return "(no output rows in the loudness dataset)"
    d = [abs(r["delta_lu"]) for r in rows if r["delta_lu"] is not None]
    tp = [r["true_peak_dbtp"] for r in rows if r["true_peak_dbtp"] is not None]
    off = [r["track_id"] for r in rows if r["delta_lu"] is not None and abs(r["delta_lu"]) > 0.1]
    over = [r["track_id"] for r in rows if r["true_peak_dbtp"] is not None and r["true_peak_dbtp"] > r["target_true_peak_dbtp"]]
    s = (
        f"{len(rows)} masters: |LUFS - target| mean {sum(d) / len(d):.3f}, max {max(d):.3f} LU; "
        f"within 0.1 LU {len(d) - len(off)}/{len(d)}; max true peak {max(tp):+.2f} dBTP; over the ceiling {len(over)}"
    )
    if off:
        s += f"\n  off target by > 0.1 LU: {', '.join(off[:10])}{' ...' if len(off) > 10 else ''}"
    if over:
        s += f"\n  over the ceiling: {', '.join(over[:10])}"
    return s


def write_manifest(files: list[str], name: str) -> Path:
    manifest = DATA / "catalogue" / name
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["track_id", "path"])
        for p in files:
            w.writerow([Path(p).stem, p])
    return manifest


def measure(
    files: list[str],
    manifest: Path,
    *,
    device: str = "cpu",
    workers: int | None = None,
    threads: int | None = None,
    floor_processes: int | None = None,
    skip_floor: bool = False,
    progress: bool = False,
    workers_per_gpu: int = 1,
) -> dict:
    """The floor and ``acetate run`` on the same files; prints both and their ratio; returns the figures."""
    for p in files:  # warm the page cache for both measurements
        Path(p).read_bytes()
    audio_total = 0.0
    cores = os.cpu_count() or 1
    # The floor has the machine's cores, one process each: as many as acetate's worker threads where
    # the cluster is sized by default (cores // threads workers on a CPU, one worker of cores // GPUs
    # threads per GPU).
    floor_workers = floor_processes or (workers if workers and device == "cpu" else cores)
    floor = floor_cpu = None
    if not skip_floor:
        print(f"\nfloor: soundfile decode + encode FLAC 24, multiprocessing.Pool({floor_workers}), best of 3 passes", flush=True)
        aud, wall, fcpu = run_floor(files, floor_workers, DATA / "catalogue" / "floor-out")
        floor, floor_cpu = aud / wall, aud / fcpu
        print(
            f"  {aud:.0f} s of audio in {wall:.2f} s: {floor:.1f}x realtime ({fcpu:.1f} CPU-s in the workers: {floor_cpu:.1f}x realtime per core)"
        )

    # The local cluster sized as `acetate run` sizes it (pipeline.cluster), unless --workers: more
    # processes x threads than cores only oversubscribes them (measured: 2 x 2 on 2 cores
    # 127.8x, 1 x 2 140.6x, 2 x 1 143.1x).
    tdesc = f"{threads} thread(s) per worker" if threads else "threads per worker as the cluster sizes them"
    print(f"\nacetate run --device {device}: {tdesc}, manifest {manifest}", flush=True)
    out_dir = DATA / "catalogue" / "acetate-out"
    r = run_acetate(manifest, out_dir, workers, threads, progress, device, workers_per_gpu)
    res = r["result"]
    audio_total = res.audio_seconds
    x_ac = res.audio_seconds / r["wall"] if r["wall"] > 0 else 0.0
    x_ac_cpu = res.audio_seconds / r["cpu"] if r["cpu"] > 0 else 0.0
    print(
        f"  {res.tracks} tracks: {res.done} done, {res.skipped} skipped, {res.failed} failed; {res.audio_seconds:.0f} s of audio in {r['wall']:.1f} s: "
        f"{x_ac:.1f}x realtime ({r['cpu']:.1f} CPU-s in the workers: {x_ac_cpu:.1f}x realtime per core)"
    )
    for f in res.failures[:10]:
        print(f"  FAILED {f.get('track_id')}: [{f.get('stage')}] {f.get('error_type')}: {f.get('message')}")
    print("  landing (job's loudness dataset): " + landing(out_dir))
    for addr in sorted(r["rss1"]):
        print(
            f"  worker {addr}: peak RSS {r['rss1'][addr] / 1024:.0f} MiB (after start-up {r['rss0'].get(addr, 0) / 1024:.0f} MiB, now {r['rss_now'].get(addr, 0) / 1024:.0f} MiB)"
        )
    peak = max(r["rss1"].values()) / 1024 if r["rss1"] else math.nan
    threads_used = r["slots"] // max(1, r["workers"])
    print(
        f"\nsummary ({device}): {len(files)} tracks ({audio_total:.0f} s); floor {floor_workers} processes, "
        f"acetate {r['workers']} worker(s) x {threads_used} threads = {r['slots']} slots ({r['description']})"
    )
    if floor:
        print(f"  floor    {floor:8.1f}x realtime   {floor_cpu:8.1f}x realtime per CPU-second")
    print(f"  acetate  {x_ac:8.1f}x realtime   {x_ac_cpu:8.1f}x realtime per CPU-second   peak RSS per worker <= {peak:.0f} MiB")
    ratio = None
    if floor:
        ratio = x_ac / floor
        goal = "on CPU >= 0.5" if device == "cpu" else "on a GPU: approach 1"
        met = f": {'met' if ratio >= 0.5 else 'NOT met'}" if device == "cpu" else ""
        print(f"  ratio acetate / floor: {ratio:.3f} wall, {x_ac_cpu / floor_cpu:.3f} CPU  (goal {goal}{met})")
    return {
        "tracks": len(files),
        "done": res.done,
        "failed": res.failed,
        "audio_s": audio_total,
        "acetate_x": x_ac,
        "floor_x": floor,
        "ratio": ratio,
        "workers": r["workers"],
        "slots": r["slots"],
        "floor_processes": floor_workers,
        "wall_s": r["wall"],
        "startup_s": r["startup"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=50, metavar="N", help="catalogue size (default 50)")
    ap.add_argument(
        "--seconds", type=float, default=60.0, metavar="S", help="longest track: sources are cut into segments of at most S s (default 60)"
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes, or GPUs with --device gpu (default: the floor one per core; acetate what `acetate run` starts here)",
    )
    ap.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        metavar="T",
        help="Dask threads per worker (default: cluster.yaml's local.threads_per_worker, else 2; with --device gpu: cores // GPUs)",
    )
    ap.add_argument("--mixes", type=int, default=10, metavar="M", help="fluidsynth mixes in the corpus (default 10)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="the job's options.device (default cpu)")
    ap.add_argument("--generate", action="store_true", help="synthetic mixes (--tracks x --seconds, 48 kHz) instead of the corpus")
    ap.add_argument(
        "--floor-processes", type=int, default=None, metavar="P", help="floor processes (default: --workers on CPU, else cores)"
    )
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--progress", action="store_true", help="show the job's progress bar")
    a = ap.parse_args(argv)

    threads = a.threads_per_worker
    if threads is None and a.device == "cpu":
        try:
            from acetate.pipeline.catalogue import cluster

            threads = int(cluster.load_cluster_config(ROOT / "cluster.yaml")["local"]["threads_per_worker"] or 2)
        except Exception:
            threads = 2

    print("bench_catalogue: a catalogue through `acetate run` vs the codec floor (decode + encode FLAC 24)")
    print(provenance())
    if a.generate:
        cat = generated_catalogue(a.tracks, a.seconds)
        desc = f"synthetic mixes (acetate's demo styles), {a.seconds:g} s each, 48 kHz stereo"
    else:
        cat = build_catalogue(a.seconds, a.mixes)
        if len(cat) < a.tracks:
            print(f"note: the corpus gives only {len(cat)} segments of <= {a.seconds:g} s; use --mixes or a shorter --seconds for more")
        cat = cat[: a.tracks]
        n_ogg = sum(1 for p, _ in cat if not Path(p).name.startswith("fluid-song"))
        desc = (
            f"{n_ogg} cut from mastered Ogg soundtracks, {len(cat) - n_ogg} from fluidsynth mixes; "
            f"sources cut into segments of at most {a.seconds:g} s to keep the run short"
        )
    files = [p for p, _ in cat]
    audio_total = sum(d for _, d in cat)
    print(
        f"catalogue: {len(files)} tracks, {audio_total:.0f} s of audio ({audio_total / len(files):.1f} s mean): {desc}; FLAC 24 in and out"
    )
    manifest = write_manifest(files, f"manifest-{'gen-' if a.generate else ''}{len(files)}-{a.seconds:g}s.csv")
    measure(
        files,
        manifest,
        device=a.device,
        workers=a.workers,
        threads=threads,
        floor_processes=a.floor_processes,
        skip_floor=a.skip_floor,
        progress=a.progress,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
