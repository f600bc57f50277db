"""cluster.yaml -> Client: validation, the optional GPU path, and a real scheduler + worker as separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from acetate.pipeline.catalogue import cluster, demo, jobs
from acetate.pipeline.io import store


def test_default_is_local():
    cfg = cluster.load_cluster_config(None)
    assert cfg["kind"] == "local" and cfg["local"]["processes"] is True


def test_repo_cluster_yaml_is_valid():
    path = os.path.join(os.path.dirname(__file__), "..", "cluster.yaml")
    cfg = cluster.load_cluster_config(path)
    assert cfg["kind"] == "local"
    assert set(cfg) == {"kind", *cluster.KINDS}


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"kind": "cloud"}, "'cloud'"),
        ({"kubernetes": {}}, "'kubernetes'"),
        ({"local": {"workers": 2}}, "'workers'"),
        ({"kind": "address"}, "scheduler address"),
        ({"kind": "address", "address": {"address": "tls://h:8786"}}, "address.tls.ca_file"),
        (
            {"kind": "address", "address": {"address": "tls://h:8786", "tls": {"ca_file": "/no/ca.pem", "cert": "/no/c", "key": "/no/k"}}},
            "no such file",
        ),
        ({"kind": "address", "address": {"address": "tcp://h:1", "tls": {"ca": "x"}}}, "'ca'"),
        ({"slurm": {"gpus": 1}}, "'gpus'"),
    ],
)
def test_invalid_configs_name_the_problem(data, needle):
    with pytest.raises(cluster.ClusterError) as err:
        cluster.parse_cluster_config(data)
    assert needle in str(err.value)


def test_gpu_without_dask_cuda_says_so():
    try:
        import dask_cuda  # noqa: F401

        pytest.skip("dask-cuda is installed")
    except ImportError:
        pass
    with pytest.raises(cluster.ClusterError, match="dask-cuda"):
        cluster.connect({"kind": "gpu"})


def test_slurm_without_jobqueue_says_so():
    try:
        import dask_jobqueue  # noqa: F401

        pytest.skip("dask-jobqueue is installed")
    except ImportError:
        pass
    with pytest.raises(cluster.ClusterError, match="dask-jobqueue"):
        cluster.connect({"kind": "slurm"})


def test_unreachable_scheduler():
    with pytest.raises(cluster.ClusterError, match="cannot reach"):
        cluster.connect({"kind": "address", "address": {"address": "tcp://127.0.0.1:9", "timeout_s": 2}})


def test_local_cluster_sized_by_workers_flag():
    cfg = {"kind": "local", "local": {"threads_per_worker": 1, "dashboard_address": ":0", "resources": {"GPU": 1}}}
    with cluster.connect(cfg, workers=1) as h:
        assert len(h.workers()) == 1 and h.kind == "local"
        assert h.has_gpu_workers()  # declared resources reach the workers
        assert h.scheduler_address.startswith("tcp://")


def _wait_for(path, timeout=30.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return
        time.sleep(0.1)
    raise TimeoutError(path)


def test_job_through_a_separate_scheduler_and_worker(tmp_path):
    """`dask scheduler` and `dask worker` as their own processes; cluster.yaml points at the scheduler."""
    from acetate.pipeline import cli

    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(sched_file),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait_for(sched_file)
        address = json.loads(sched_file.read_text())["address"]
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_worker",
                    address,
                    "--nworkers",
                    "1",
                    "--nthreads",
                    "2",
                    "--no-dashboard",
                    "--memory-limit",
                    "2GiB",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=tmp_path,
            )
        )
        cfg = tmp_path / "cluster.yaml"
        cfg.write_text(yaml.safe_dump({"kind": "address", "address": {"address": address, "wait_for_workers": 1, "timeout_s": 60}}))
        manifest = demo.make_catalogue(tmp_path / "cat", seconds=2.0, per_style=1, include_bad=False)
        job = tmp_path / "job.yaml"
        job.write_text(
            yaml.safe_dump(
                {
                    "name": "remote",
                    "mode": "master",
                    "inputs": {"manifest": str(manifest)},
                    "output": str(tmp_path / "out"),
                    "formats": ["flac24"],
                    "options": {"progress": False},
                }
            )
        )
        assert cli.main(["run", str(job), "--cluster", str(cfg), "--strict"]) == 0
        out = tmp_path / "out"
        assert sorted(p.name for p in (out / "masters").iterdir()) == sorted(f"{s}-01.flac" for s in demo.STYLES)
        runs = store.read_dataset(out, "runs").to_pylist()
        assert runs[0]["cluster"].startswith("address tcp://127.0.0.1") and runs[0]["workers"] == 1 and runs[0]["done"] == 5
        # device: gpu on a cluster without GPU workers is refused with a clear message
        gpu_job = jobs.parse_job({"inputs": {"manifest": str(manifest)}, "output": str(tmp_path / "o2"), "options": {"device": "gpu"}})
        from acetate.pipeline.catalogue import batch

        with cluster.connect(cluster.load_cluster_config(cfg)) as h:
            with pytest.raises(jobs.JobError, match="resource GPU"):
                batch.run_job(gpu_job, h.client, progress=False)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
