"""``cluster.yaml`` -> a Dask client: where a job runs.

The file names one ``kind`` and may hold a section per kind (only the chosen
one is used; unknown keys are an error naming the key)::

    kind: local                 # local | gpu | address | slurm
    local:                      # distributed.LocalCluster sized to the machine
      n_workers: null           # default: cores // threads_per_worker
      threads_per_worker: 2
      memory_limit: auto        # per worker ("4GiB", "auto", 0 = none)
      processes: true
      dashboard_address: ":8787"
      resources: {}             # e.g. {GPU: 1} if every worker owns a GPU
    gpu:                        # one worker process per GPU (dask-cuda not needed)
      CUDA_VISIBLE_DEVICES: null  # e.g. "0,1" (default: the environment's, else every GPU nvidia-smi lists)
      threads_per_worker: null    # default: CPU cores // worker processes, at least 2
      workers_per_gpu: 1          # > 1: several processes share each GPU (each with its own device lock)
      memory_limit: auto          # per worker ("auto": the machine's memory / worker processes)
      device_memory_limit: null   # dask-cuda only
      rmm_pool_size: null         # dask-cuda only
      dashboard_address: ":8787"
    address:                    # an existing scheduler
      address: tcp://scheduler.example:8786   # or tls://...
      tls: {ca_file: null, cert: null, key: null}
      wait_for_workers: 1       # block until this many workers joined
      timeout_s: 60
    slurm:                      # dask-jobqueue SLURMCluster
      queue: null
      account: null
      cores: 8
      memory: 32GB
      processes: 1
      walltime: "04:00:00"
      jobs: 2
      gpus_per_job: 0           # > 0: adds --gres=gpu:N and worker resource GPU
      job_extra_directives: []
      local_directory: null

GPU workers carry the resource ``GPU`` with one unit per worker thread: each
thread can hold a track, and a per-process lock lets one at a time use the
device while the others decode and encode; a task decides NumPy or CuPy from
its own worker's resources (see :mod:`acetate.pipeline.catalogue.track`).  CUDA is never
touched in the client: workers start as separate (spawned) processes.

Kind ``gpu`` uses ``dask_cuda.LocalCUDACluster`` where dask-cuda is installed (and
``workers_per_gpu`` is 1).  Without it, :func:`gpu_worker_spec` lays the same cluster
out itself: a :class:`distributed.SpecCluster` of one :class:`distributed.Nanny`
per device, each given ``CUDA_VISIBLE_DEVICES=<its device>`` in its ``env`` (set in
the worker process before anything of the job runs, so CuPy there sees exactly
one device, as its device 0).  The devices are ``gpu.CUDA_VISIBLE_DEVICES``, else
the client's ``CUDA_VISIBLE_DEVICES``, else what :func:`detect_gpus` counts
(``nvidia-smi -L``, or CuPy in a child process: the client never imports CuPy).

``connect(..., device="gpu")`` on kind ``local`` (``acetate run --device gpu`` with
the default ``cluster.yaml``) starts that GPU layout instead of a CPU-only
cluster, unless ``local.resources`` already declares ``GPU``; ``device="auto"``
does so where CuPy is installed and a GPU is visible.  No GPU at all: a
:class:`ClusterError` that says so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

__all__ = [
    "ClusterError",
    "KINDS",
    "DEFAULTS",
    "load_cluster_config",
    "parse_cluster_config",
    "ClusterHandle",
    "connect",
    "parse_visible_devices",
    "parse_nvidia_smi",
    "detect_gpus",
    "visible_devices",
    "gpu_worker_spec",
]

KINDS = ("local", "gpu", "address", "slurm")

DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {
        "n_workers": None,
        "threads_per_worker": 2,
        "memory_limit": "auto",
        "processes": True,
        "dashboard_address": ":8787",
        "resources": {},
    },
    "gpu": {
        "CUDA_VISIBLE_DEVICES": None,
        "threads_per_worker": None,
        "workers_per_gpu": 1,
        "memory_limit": "auto",
        "device_memory_limit": None,
        "rmm_pool_size": None,
        "dashboard_address": ":8787",
    },
    "address": {"address": None, "tls": {"ca_file": None, "cert": None, "key": None}, "wait_for_workers": 1, "timeout_s": 60},
    "slurm": {
        "queue": None,
        "account": None,
        "cores": 8,
        "memory": "32GB",
        "processes": 1,
        "walltime": "04:00:00",
        "jobs": 2,
        "gpus_per_job": 0,
        "job_extra_directives": [],
        "local_directory": None,
    },
}


class ClusterError(RuntimeError):
    """A cluster file that cannot be used, or a cluster that cannot be reached (the message says why)."""


def parse_cluster_config(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a cluster config mapping; returns ``{"kind": k, k: section-with-defaults, ...}``."""
    data = dict(data or {})
    unknown = sorted(k for k in data if k != "kind" and k not in KINDS)
    if unknown:
        raise ClusterError(f"unknown key {unknown[0]!r} in cluster config; allowed: kind, {', '.join(KINDS)}")
    kind = data.get("kind", "local")
    if kind not in KINDS:
        raise ClusterError(f"cluster kind must be one of {KINDS}, got {kind!r}")
    out: dict[str, Any] = {"kind": kind}
    for k in KINDS:
        section = data.get(k) or {}
        if not isinstance(section, Mapping):
            raise ClusterError(f"cluster section {k!r} must be a mapping, got {section!r}")
        bad = sorted(s for s in section if s not in DEFAULTS[k])
        if bad:
            raise ClusterError(f"unknown key {bad[0]!r} in cluster section {k!r}; allowed: {sorted(DEFAULTS[k])}")
        merged = {**DEFAULTS[k], **section}
        if k == "address":
            tls = merged.get("tls") or {}
            bad = sorted(s for s in tls if s not in DEFAULTS["address"]["tls"])
            if bad:
                raise ClusterError(f"unknown key {bad[0]!r} in cluster section address.tls; allowed: ca_file, cert, key")
            merged["tls"] = {**DEFAULTS["address"]["tls"], **tls}
        out[k] = merged
    _check_gpu_section(out["gpu"])
    if kind == "address":
        addr = out["address"]["address"]
        if not isinstance(addr, str) or "://" not in addr:
            raise ClusterError(f"address.address must be a scheduler address like tcp://host:8786 or tls://host:8786, got {addr!r}")
        if addr.startswith("tls://"):
            missing = [k for k, v in out["address"]["tls"].items() if not v]
            if missing:
                raise ClusterError(f"a tls:// scheduler needs address.tls.{missing[0]} (CA file, client certificate and key)")
            for k, v in out["address"]["tls"].items():
                if not os.path.exists(v):
                    raise ClusterError(f"address.tls.{k}: no such file {v!r}")
    return out


def _check_gpu_section(g: dict[str, Any]) -> None:
    for key in ("threads_per_worker", "workers_per_gpu"):
        v = g[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ClusterError(f"gpu.{key} must be a whole number >= 1{' or null' if key == 'threads_per_worker' else ''}, got {v!r}")
    if g["workers_per_gpu"] is None:
        g["workers_per_gpu"] = 1
    parse_visible_devices(g["CUDA_VISIBLE_DEVICES"], what="gpu.CUDA_VISIBLE_DEVICES")


# --- GPUs: which devices, counted without CUDA in this process ------------------------------


def parse_visible_devices(value: Any, *, what: str = "CUDA_VISIBLE_DEVICES") -> list[str] | None:
    """A ``CUDA_VISIBLE_DEVICES`` value as a list of device ids (indices or ``GPU-``/``MIG-`` UUIDs);
    None when unset.

    Takes the text form (``"0,1"``) and what YAML makes of it (``0``, ``[0, 1]``). As CUDA
    reads it, an empty value means no device and an entry ``-1`` hides itself and
    every later one.

    Examples
    --------
    >>> parse_visible_devices("0, 2,")
    ['0', '2']
    >>> parse_visible_devices([1, 3]), parse_visible_devices(0), parse_visible_devices("")
    (['1', '3'], ['0'], [])
    >>> parse_visible_devices("1,-1,2")
    ['1']
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, list, tuple)):
        raise ClusterError(f'{what} must be a list of GPU indices or UUIDs like "0,1", got {value!r}')
    if isinstance(value, int):
        items = [str(value)]
    elif isinstance(value, str):
        items = value.split(",")
    else:
        if any(isinstance(v, bool) or not isinstance(v, (str, int)) for v in value):
            raise ClusterError(f'{what} must be a list of GPU indices or UUIDs like "0,1", got {value!r}')
        items = [str(v) for v in value]
    out: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item.startswith("-"):
            break
        if item not in out:
            out.append(item)
    return out


_SMI_GPU = re.compile(r"^GPU\s+(\d+):")
_SMI_MIG = re.compile(r"^\s+MIG\b.*\(UUID:\s*(MIG-[^)\s]+)\)")


def parse_nvidia_smi(text: str) -> list[str]:
    """Device ids from ``nvidia-smi -L``: a GPU's index, or the UUIDs of its MIG instances
    where it is partitioned (CUDA then addresses those, not the GPU).

    Examples
    --------
    >>> parse_nvidia_smi("GPU 0: NVIDIA H200 (UUID: GPU-1a)\\nGPU 1: NVIDIA H200 (UUID: GPU-2b)\\n")
    ['0', '1']
    >>> parse_nvidia_smi("GPU 0: NVIDIA A100 (UUID: GPU-1a)\\n  MIG 3g.20gb Device 0: (UUID: MIG-7c)\\n")
    ['MIG-7c']
    """
    gpus: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = _SMI_GPU.match(line)
        if m:
            gpus.append((m.group(1), []))
            continue
        m = _SMI_MIG.match(line)
        if m and gpus:
            gpus[-1][1].append(m.group(1))
    return [d for index, migs in gpus for d in (migs or [index])]


def detect_gpus(timeout_s: float = 30.0) -> list[str]:
    """This machine's GPUs as device ids: ``nvidia-smi -L``, else CuPy's device count taken in
    a child process (this process never imports CuPy or touches CUDA); ``[]`` when neither
    finds one. ``CUDA_VISIBLE_DEVICES`` is not read here (:func:`visible_devices` does)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=timeout_s)
            ids = parse_nvidia_smi(r.stdout) if r.returncode == 0 else []
        except (OSError, subprocess.SubprocessError):
            ids = []
        if ids:
            return ids
    if importlib.util.find_spec("cupy") is None:  # looks for the package; imports nothing
        return []
    try:
        r = subprocess.run(
            [sys.executable, "-c", "import cupy; print(cupy.cuda.runtime.getDeviceCount())"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        n = int(r.stdout.split()[-1]) if r.returncode == 0 and r.stdout.split() else 0
    except (OSError, subprocess.SubprocessError, ValueError):
        n = 0
    return [str(i) for i in range(n)]


def visible_devices(setting: Any = None) -> tuple[list[str], str]:
    """(device ids, where they came from): ``setting`` (``gpu.CUDA_VISIBLE_DEVICES``), else the
    environment's ``CUDA_VISIBLE_DEVICES``, else :func:`detect_gpus`."""
    ids = parse_visible_devices(setting, what="gpu.CUDA_VISIBLE_DEVICES")
    if ids is not None:
        return ids, "gpu.CUDA_VISIBLE_DEVICES"
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return parse_visible_devices(env) or [], f"CUDA_VISIBLE_DEVICES={env!r} in the environment"
    return detect_gpus(), "nvidia-smi -L" if shutil.which("nvidia-smi") else "CuPy's device count"


def _no_gpu_message(source: str) -> str:
    seen = []
    if source.startswith(("gpu.", "CUDA_VISIBLE_DEVICES")):
        seen.append(f"{source} names none")
    else:
        seen.append("nvidia-smi lists none" if shutil.which("nvidia-smi") else "nvidia-smi is not installed")
        seen.append("CuPy sees none" if importlib.util.find_spec("cupy") is not None else "CuPy is not installed")
    return f"no GPU found on this machine ({', '.join(seen)})"


def gpu_worker_spec(
    devices: list[str],
    *,
    threads: int,
    workers_per_gpu: int = 1,
    memory_limit: Any = "auto",
    cores: int | None = None,
) -> dict[str, dict[str, Any]]:
    """The :class:`distributed.SpecCluster` worker spec of the GPU layout: per device
    ``workers_per_gpu`` nanny processes of ``threads`` threads, each with the resource
    ``GPU = threads`` and ``CUDA_VISIBLE_DEVICES=<device>`` in its environment.

    ``memory_limit`` ``"auto"`` shares the machine's memory between the processes (as a
    ``LocalCluster`` does); other values are per worker, as Dask reads them.
    """
    from distributed import Nanny
    from distributed.system import MEMORY_LIMIT

    if not devices:
        raise ClusterError("no GPU to lay workers out on")
    n_procs = len(devices) * int(workers_per_gpu)
    limit = int(MEMORY_LIMIT // n_procs) if memory_limit == "auto" else memory_limit
    spec: dict[str, dict[str, Any]] = {}
    for dev in devices:
        for k in range(int(workers_per_gpu)):
            name = f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', dev)}" + (f"-{k}" if workers_per_gpu > 1 else "")
            spec[name] = {
                "cls": Nanny,
                "options": {
                    "nthreads": int(threads),
                    # One unit of GPU per thread: every thread may hold a track (decode, encode) while
                    # the worker's lock lets one of them at a time use the device (pipeline/catalogue/track.py).
                    "resources": {"GPU": int(threads)},
                    # Set in the worker process before it runs anything of ours: CuPy there sees this
                    # device alone, as device 0.
                    "env": {"CUDA_VISIBLE_DEVICES": dev},
                    "memory_limit": limit,
                    "host": "127.0.0.1",
                    "dashboard": False,
                    "silence_logs": logging.WARN,
                },
            }
    return spec


def _gpu_threads(cfg: Mapping[str, Any], n_procs: int) -> int:
    """``threads_per_worker``, or by default the CPU cores shared out between the GPU workers (>= 2)."""
    if cfg.get("threads_per_worker"):
        return int(cfg["threads_per_worker"])
    return max(2, (os.cpu_count() or 1) // max(1, n_procs))


def load_cluster_config(path: str | os.PathLike | None) -> dict[str, Any]:
    """Read a ``cluster.yaml``; ``None`` (or a missing default file) means a local cluster with defaults."""
    if path is None:
        return parse_cluster_config({})
    p = os.fspath(path)
    try:
        with open(p, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ClusterError(f"no such cluster file: {p}") from None
    except yaml.YAMLError as exc:
        raise ClusterError(f"{p}: not valid YAML: {exc}") from None
    return parse_cluster_config(data)


@dataclass
class ClusterHandle:
    """A connected client and what owns it; ``close()`` (or ``with``) shuts down what was started here."""

    client: Any
    kind: str
    cluster: Any = None
    description: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def dashboard_link(self) -> str | None:
        try:
            return self.client.dashboard_link
        except Exception:
            return None

    @property
    def scheduler_address(self) -> str:
        return str(self.client.scheduler.address)

    def workers(self) -> dict[str, dict[str, Any]]:
        return dict(self.client.scheduler_info().get("workers", {}))

    def has_gpu_workers(self) -> bool:
        return any((w.get("resources") or {}).get("GPU", 0) > 0 for w in self.workers().values())

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def __enter__(self) -> "ClusterHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _local(cfg: dict[str, Any], workers: int | None) -> ClusterHandle:
    from distributed import Client, LocalCluster

    threads = int(cfg["threads_per_worker"] or 1)
    n = workers or cfg["n_workers"] or max(1, (os.cpu_count() or 1) // threads)
    kwargs: dict[str, Any] = {}
    if cfg.get("resources"):
        kwargs["resources"] = dict(cfg["resources"])
    cluster = LocalCluster(
        n_workers=int(n),
        threads_per_worker=threads,
        processes=bool(cfg["processes"]),
        memory_limit=cfg["memory_limit"],
        dashboard_address=cfg["dashboard_address"],
        **kwargs,
    )
    return ClusterHandle(Client(cluster), "local", cluster, f"local: {n} worker(s) x {threads} thread(s)")


def _gpu(cfg: dict[str, Any], workers: int | None, *, devices: list[str] | None = None, source: str = "") -> ClusterHandle:
    """Kind ``gpu``: ``LocalCUDACluster`` where dask-cuda is installed, else :func:`gpu_worker_spec`'s layout."""
    wpg = int(cfg.get("workers_per_gpu") or 1)
    try:
        if wpg > 1:
            raise ImportError  # dask-cuda starts one worker per GPU: the built-in layout shares them
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None
    if LocalCUDACluster is not None:
        if devices is not None:
            cfg = {**cfg, "CUDA_VISIBLE_DEVICES": ",".join(devices)}
        return _dask_cuda(LocalCUDACluster, cfg, workers)
    for key in ("device_memory_limit", "rmm_pool_size"):
        if cfg.get(key) is not None:
            raise ClusterError(
                f"gpu.{key} needs dask-cuda (pip install 'acetate[cuda]'){' and workers_per_gpu: 1' if wpg > 1 else ''}; "
                "without it, remove the setting"
            )
    if devices is None:
        devices, source = visible_devices(cfg["CUDA_VISIBLE_DEVICES"])
    if not devices:
        raise ClusterError(f"cluster kind 'gpu': {_no_gpu_message(source)}; use kind 'local' to run on the CPU")
    if workers:
        if workers > len(devices):
            raise ClusterError(f"--workers {workers}: only {len(devices)} GPU(s) visible ({', '.join(devices)}; from {source})")
        devices = devices[:workers]
    threads = _gpu_threads(cfg, len(devices) * wpg)
    spec = gpu_worker_spec(devices, threads=threads, workers_per_gpu=wpg, memory_limit=cfg["memory_limit"])
    from distributed import Client, Scheduler, SpecCluster

    dash = cfg["dashboard_address"]
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "port": 0, "dashboard": dash is not None, "dashboard_address": dash},
    }
    cluster = SpecCluster(workers=spec, scheduler=scheduler, silence_logs=logging.WARN, name="acetate-gpu")
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    per = f"{wpg} worker(s) per GPU" if wpg > 1 else "one worker per GPU"
    desc = f"gpu: {len(devices)} GPU(s) [{', '.join(devices)}], {per} x {threads} thread(s), each pinned by CUDA_VISIBLE_DEVICES"
    return ClusterHandle(client, "gpu", cluster, desc, [f"devices from {source}"])


def _dask_cuda(LocalCUDACluster: Any, cfg: dict[str, Any], workers: int | None) -> ClusterHandle:
    from distributed import Client

    devices = cfg["CUDA_VISIBLE_DEVICES"]
    if isinstance(devices, (list, tuple, int)):
        devices = ",".join(parse_visible_devices(devices) or [])
    if workers and devices is None:
        devices = ",".join(str(i) for i in range(workers))
    kwargs = {k: cfg[k] for k in ("device_memory_limit", "rmm_pool_size") if cfg.get(k) is not None}
    n = len(parse_visible_devices(devices) or []) if devices is not None else len(visible_devices(None)[0])
    threads = _gpu_threads(cfg, n)
    cluster = LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=devices,
        threads_per_worker=threads,
        memory_limit=cfg["memory_limit"],
        dashboard_address=cfg["dashboard_address"],
        # One unit of GPU per thread: every thread may hold a track (decode, encode) while
        # the worker's lock lets one of them at a time use the device (pipeline/catalogue/track.py).
        resources={"GPU": threads},
        **kwargs,
    )
    return ClusterHandle(
        Client(cluster), "gpu", cluster, f"gpu (dask-cuda): one worker per GPU ({devices or 'all devices'}) x {threads} thread(s)"
    )


def _local_gpu_layout(config: dict[str, Any], device: str | None, workers: int | None) -> ClusterHandle | None:
    """``device`` gpu (or auto, with CuPy installed) on kind ``local`` whose workers declare no GPU:
    the GPU layout of :func:`_gpu` where a GPU is visible; None: the plain local cluster."""
    if device not in ("gpu", "auto") or (config["local"].get("resources") or {}).get("GPU"):
        return None
    if device == "auto" and importlib.util.find_spec("cupy") is None:
        return None
    devices, source = visible_devices(config["gpu"]["CUDA_VISIBLE_DEVICES"])
    if not devices:
        if device == "auto":
            return None
        raise ClusterError(
            f"device 'gpu' was asked for, but {_no_gpu_message(source)}: use --device cpu (or auto), "
            "or --cluster with GPU workers (kind 'gpu', or a scheduler whose workers declare --resources GPU=N)"
        )
    handle = _gpu(config["gpu"], workers, devices=devices, source=source)
    handle.description = f"local, laid out for device {device} -- {handle.description}"
    return handle


def _address(cfg: dict[str, Any], workers: int | None) -> ClusterHandle:
    from distributed import Client

    addr = cfg["address"]
    security = None
    if addr.startswith("tls://"):
        from distributed.security import Security

        t = cfg["tls"]
        security = Security(tls_ca_file=t["ca_file"], tls_client_cert=t["cert"], tls_client_key=t["key"], require_encryption=True)
    try:
        client = Client(addr, security=security, timeout=cfg["timeout_s"])
    except OSError as exc:
        raise ClusterError(f"cannot reach the scheduler at {addr}: {exc}") from None
    n = workers or cfg["wait_for_workers"] or 0
    notes = []
    if n:
        try:
            client.wait_for_workers(int(n), timeout=cfg["timeout_s"])
        except Exception:
            client.close()
            raise ClusterError(f"the scheduler at {addr} has fewer than {n} worker(s) after {cfg['timeout_s']} s") from None
    return ClusterHandle(client, "address", None, f"scheduler {addr}", notes)


def _slurm(cfg: dict[str, Any], workers: int | None) -> ClusterHandle:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ClusterError("cluster kind 'slurm' needs dask-jobqueue: pip install dask-jobqueue") from None
    from distributed import Client

    extra = list(cfg["job_extra_directives"] or [])
    worker_args: list[str] = []
    if cfg["gpus_per_job"]:
        extra.append(f"--gres=gpu:{int(cfg['gpus_per_job'])}")
        worker_args = ["--resources", f"GPU={int(cfg['gpus_per_job'])}"]
    kwargs = {k: cfg[k] for k in ("queue", "account", "local_directory") if cfg.get(k)}
    cluster = SLURMCluster(
        cores=int(cfg["cores"]),
        memory=str(cfg["memory"]),
        processes=int(cfg["processes"]),
        walltime=str(cfg["walltime"]),
        job_extra_directives=extra,
        worker_extra_args=worker_args,
        **kwargs,
    )
    jobs = int(workers or cfg["jobs"])
    cluster.scale(jobs=jobs)
    return ClusterHandle(Client(cluster), "slurm", cluster, f"slurm: {jobs} job(s) x {cfg['processes']} worker(s)")


def connect(
    config: Mapping[str, Any] | str | os.PathLike | None = None, *, workers: int | None = None, device: str | None = None
) -> ClusterHandle:
    """Start or reach the cluster a config describes and return a connected :class:`ClusterHandle`.

    Parameters
    ----------
    config : mapping, path or None
        A parsed config (:func:`parse_cluster_config`), a ``cluster.yaml``
        path, or None for a local cluster with defaults.
    workers : int, optional
        ``--workers``: the number of local workers, of GPUs used (the first
        N), of Slurm jobs, or of workers to wait for on an existing scheduler.
    device : {"cpu", "gpu", "auto"}, optional
        The job's ``options.device``. On kind ``local`` whose workers declare no
        resource ``GPU``, ``"gpu"`` starts the GPU layout (one worker per visible
        GPU, as kind ``gpu``) or raises :class:`ClusterError` where no GPU exists;
        ``"auto"`` starts it where CuPy is installed and a GPU is visible.
    """
    if config is None or isinstance(config, (str, os.PathLike)):
        config = load_cluster_config(config)
    else:
        config = parse_cluster_config(config)  # idempotent: fills defaults of a partial mapping
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers must be >= 1, got {workers}")
    kind = config["kind"]
    with _worker_environ():
        if kind == "local":
            handle = _local_gpu_layout(config, device, workers)
            if handle is not None:
                return handle
        return {"local": _local, "gpu": _gpu, "address": _address, "slurm": _slurm}[kind](config[kind], workers)


#: Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in every worker it spawns, which fixes
#: glibc's mmap threshold at 128 KiB and returns freed heap at once: every large array then
#: comes from fresh, zero-filled pages. Mastering allocates tens of MB a stage, and a worker
#: ran 2.4x slower than the same code in a plain process (23.6x vs 55.7x realtime per core,
#: measured here). Workers that Acetate starts keep glibc's adaptive defaults; the one-thread
#: BLAS/OpenMP settings stay.
_DROP_FROM_WORKER_ENV = ("MALLOC_TRIM_THRESHOLD_",)


@contextlib.contextmanager
def _worker_environ():
    import dask
    import distributed  # noqa: F401  (loads its config defaults before we override one of them)

    env = {k: v for k, v in (dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}).items() if k not in _DROP_FROM_WORKER_ENV}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
        yield
