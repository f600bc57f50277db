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
    gpu:                        # one worker per GPU via dask_cuda.LocalCUDACluster
      CUDA_VISIBLE_DEVICES: null  # e.g. "0,1" (default: all)
      threads_per_worker: 2
      memory_limit: auto
      device_memory_limit: null
      rmm_pool_size: null
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
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

__all__ = ["ClusterError", "KINDS", "DEFAULTS", "load_cluster_config", "parse_cluster_config", "ClusterHandle", "connect"]

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
        "threads_per_worker": 2,
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


def _gpu(cfg: dict[str, Any], workers: int | None) -> ClusterHandle:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise ClusterError(
            "cluster kind 'gpu' needs dask-cuda (and CuPy): pip install 'acetate[cuda]'; "
            "or use kind 'local' to run the same tasks on the CPU with NumPy"
        ) from None
    from distributed import Client

    devices = cfg["CUDA_VISIBLE_DEVICES"]
    if workers and devices is None:
        devices = ",".join(str(i) for i in range(workers))
    kwargs = {k: cfg[k] for k in ("device_memory_limit", "rmm_pool_size") if cfg.get(k) is not None}
    threads = int(cfg["threads_per_worker"] or 1)
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
    return ClusterHandle(Client(cluster), "gpu", cluster, f"gpu: one worker per GPU ({devices or 'all devices'})")


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


def connect(config: Mapping[str, Any] | str | os.PathLike | None = None, *, workers: int | None = None) -> ClusterHandle:
    """Start or reach the cluster a config describes and return a connected :class:`ClusterHandle`.

    Parameters
    ----------
    config : mapping, path or None
        A parsed config (:func:`parse_cluster_config`), a ``cluster.yaml``
        path, or None for a local cluster with defaults.
    workers : int, optional
        ``--workers``: the number of local workers, of GPUs used (the first
        N), of Slurm jobs, or of workers to wait for on an existing scheduler.
    """
    if config is None or isinstance(config, (str, os.PathLike)):
        config = load_cluster_config(config)
    else:
        config = parse_cluster_config(config)  # idempotent: fills defaults of a partial mapping
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers must be >= 1, got {workers}")
    kind = config["kind"]
    with _worker_environ():
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
