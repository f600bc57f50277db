"""cluster.yaml -> Client: validation, the optional GPU path, and a real scheduler + worker as separate processes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
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
        ({"gpu": {"threads_per_worker": 0}}, "gpu.threads_per_worker"),
        ({"gpu": {"workers_per_gpu": "two"}}, "gpu.workers_per_gpu"),
        ({"gpu": {"CUDA_VISIBLE_DEVICES": {"a": 1}}}, "gpu.CUDA_VISIBLE_DEVICES"),
        ({"gpu": {"CUDA_VISIBLE_DEVICES": [0, True]}}, "gpu.CUDA_VISIBLE_DEVICES"),
    ],
)
def test_invalid_configs_name_the_problem(data, needle):
    with pytest.raises(cluster.ClusterError) as err:
        cluster.parse_cluster_config(data)
    assert needle in str(err.value)


def _no_dask_cuda():
    if importlib.util.find_spec("dask_cuda") is not None:
        pytest.skip("dask-cuda is installed: kind gpu uses LocalCUDACluster")


def test_gpu_kind_without_a_gpu_says_so(monkeypatch):
    _no_dask_cuda()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cluster, "detect_gpus", lambda: [])
    with pytest.raises(cluster.ClusterError, match="kind 'gpu': no GPU found on this machine"):
        cluster.connect({"kind": "gpu"})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(cluster.ClusterError, match="CUDA_VISIBLE_DEVICES='' in the environment names none"):
        cluster.connect({"kind": "gpu"})


def test_dask_cuda_only_settings_are_refused_without_it(monkeypatch):
    _no_dask_cuda()
    with pytest.raises(cluster.ClusterError, match="gpu.rmm_pool_size needs dask-cuda"):
        cluster.connect({"kind": "gpu", "gpu": {"CUDA_VISIBLE_DEVICES": "0", "rmm_pool_size": "1GB"}})


def test_more_workers_than_gpus_is_refused(monkeypatch):
    _no_dask_cuda()
    with pytest.raises(cluster.ClusterError, match="--workers 3: only 2 GPU"):
        cluster.connect({"kind": "gpu", "gpu": {"CUDA_VISIBLE_DEVICES": "0,1"}}, workers=3)


def test_devices_come_from_the_config_then_the_environment_then_the_count(monkeypatch):
    monkeypatch.setattr(cluster, "detect_gpus", lambda: ["0", "1", "2"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert cluster.visible_devices(None)[0] == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-abc")
    assert cluster.visible_devices(None) == (["2", "GPU-abc"], "CUDA_VISIBLE_DEVICES='2,GPU-abc' in the environment")
    assert cluster.visible_devices([1]) == (["1"], "gpu.CUDA_VISIBLE_DEVICES")
    assert cluster.visible_devices("")[0] == []


def test_gpu_worker_spec_pins_one_device_per_worker():
    from distributed import Nanny
    from distributed.system import MEMORY_LIMIT

    spec = cluster.gpu_worker_spec(["0", "MIG-1/2"], threads=3, workers_per_gpu=2)
    assert list(spec) == ["gpu-0-0", "gpu-0-1", "gpu-MIG-1_2-0", "gpu-MIG-1_2-1"]
    opts = [w["options"] for w in spec.values()]
    assert all(w["cls"] is Nanny for w in spec.values())
    assert [o["env"] for o in opts] == [{"CUDA_VISIBLE_DEVICES": d} for d in ("0", "0", "MIG-1/2", "MIG-1/2")]
    assert all(o["nthreads"] == 3 and o["resources"] == {"GPU": 3} for o in opts)
    assert all(o["memory_limit"] == MEMORY_LIMIT // 4 for o in opts)  # "auto": the machine's memory shared out
    one = cluster.gpu_worker_spec(["1"], threads=2, memory_limit="4GiB")
    assert list(one) == ["gpu-1"] and one["gpu-1"]["options"]["memory_limit"] == "4GiB"


def test_threads_per_gpu_worker_default_to_the_cores_shared_out(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cluster._gpu_threads({"threads_per_worker": None}, 1) == 16
    assert cluster._gpu_threads({"threads_per_worker": None}, 4) == 4
    assert cluster._gpu_threads({"threads_per_worker": None}, 16) == 2  # at least 2: decode/encode overlap the device
    assert cluster._gpu_threads({"threads_per_worker": 3}, 1) == 3


def test_nvidia_smi_listing_is_parsed():
    text = (
        "GPU 0: NVIDIA H200 (UUID: GPU-aaaa)\n"
        "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-bbbb)\n"
        "  MIG 3g.20gb     Device  0: (UUID: MIG-cccc)\n"
        "  MIG 3g.20gb     Device  1: (UUID: MIG-dddd)\n"
        "GPU 2: NVIDIA H200 (UUID: GPU-eeee)\n"
    )
    assert cluster.parse_nvidia_smi(text) == ["0", "MIG-cccc", "MIG-dddd", "2"]
    assert cluster.parse_nvidia_smi("No devices were found\n") == []


def _fake_cupy(root, body):
    pkg = root / "cupy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    return root


def test_gpus_are_counted_without_cuda_in_this_process(tmp_path, monkeypatch):
    """nvidia-smi -L first; without it CuPy counts, in a child process: this one never imports it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))  # no nvidia-smi
    assert cluster.detect_gpus() == []  # and no CuPy here
    fake = _fake_cupy(
        tmp_path / "site",
        """
        import os, types
        open(os.environ["FAKE_CUPY_MARKER"], "a").write(str(os.getpid()) + "\\n")
        cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 2))
        """,
    )
    marker = tmp_path / "imported-by"
    monkeypatch.setenv("FAKE_CUPY_MARKER", str(marker))
    monkeypatch.setenv("PYTHONPATH", str(fake))
    monkeypatch.syspath_prepend(str(fake))
    assert cluster.detect_gpus() == ["0", "1"]
    assert "cupy" not in sys.modules and str(os.getpid()) not in marker.read_text().split()
    smi = bindir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-2)'\necho 'GPU 2: NVIDIA H200 (UUID: GPU-3)'\n"
    )
    smi.chmod(0o755)
    assert cluster.detect_gpus() == ["0", "1", "2"]


def test_gpu_layout_without_dask_cuda_pins_each_worker(tmp_path, monkeypatch):
    """Real worker processes, each with its own CUDA_VISIBLE_DEVICES and the resource GPU; no CUDA in the client.

    ``device="auto"`` on kind local picks the layout where CuPy is installed (a stand-in
    here, which fails if anything imports it) and a GPU is visible (the count faked)."""
    _no_dask_cuda()
    fake = _fake_cupy(tmp_path / "site", 'raise ImportError("the client imported cupy")\n')
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cluster, "detect_gpus", lambda: ["0", "1"])
    cfg = {"kind": "local", "gpu": {"threads_per_worker": 1, "dashboard_address": ":0"}}
    with cluster.connect(cfg, device="auto") as h:
        assert h.kind == "gpu" and h.description.startswith("local, laid out for device auto -- gpu: 2 GPU(s) [0, 1]")
        seen = h.client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert {h.workers()[addr]["name"]: dev for addr, dev in seen.items()} == {"gpu-0": "0", "gpu-1": "1"}
        info = h.workers().values()
        assert sorted(w["name"] for w in info) == ["gpu-0", "gpu-1"]
        assert all(w["resources"] == {"GPU": 1} and w["nthreads"] == 1 for w in info)
        assert h.has_gpu_workers()
    assert "cupy" not in sys.modules
    monkeypatch.setattr(cluster, "detect_gpus", lambda: [])
    with cluster.connect(
        {"kind": "local", "local": {"n_workers": 1, "threads_per_worker": 1, "dashboard_address": ":0"}}, device="auto"
    ) as h:
        assert h.kind == "local" and not h.has_gpu_workers()  # auto without a GPU: the CPU cluster


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


def _demo_job(tmp_path, n_styles=1, seconds=2.0):
    manifest = demo.make_catalogue(tmp_path / "cat", seconds=seconds, per_style=1, include_bad=False)
    if n_styles < len(demo.STYLES):
        lines = manifest.read_text().splitlines()
        manifest.write_text("\n".join(lines[: 1 + n_styles]) + "\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "gpu-local",
                "mode": "master",
                "inputs": {"manifest": str(manifest)},
                "output": str(tmp_path / "out"),
                "formats": ["flac24"],
                "options": {"progress": False, "retries": 0},
            }
        )
    )
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(
        yaml.safe_dump({"kind": "local", "local": {"dashboard_address": ":0"}, "gpu": {"threads_per_worker": 2, "dashboard_address": ":0"}})
    )
    return job, cfg


def test_run_device_gpu_without_a_gpu_is_refused_clearly(tmp_path, monkeypatch, capsys):
    from acetate.pipeline import cli

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cluster, "detect_gpus", lambda: [])
    job, cfg = _demo_job(tmp_path)
    assert cli.main(["run", str(job), "--cluster", str(cfg), "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert "device 'gpu' was asked for, but no GPU found on this machine" in err and "--device cpu" in err
    assert not (tmp_path / "out" / "masters").exists()


def test_run_device_gpu_on_the_local_cluster_gets_gpu_workers(tmp_path, monkeypatch, capsys):
    """With a GPU visible (faked here) `acetate run --device gpu` on kind local is not refused for want of
    the resource GPU: it starts GPU workers. Without CuPy their tracks then fail at the first device stage."""
    _no_dask_cuda()
    from acetate.pipeline import cli

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed: the real GPU test covers this")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cluster, "detect_gpus", lambda: ["0"])
    job, cfg = _demo_job(tmp_path)
    assert cli.main(["run", str(job), "--cluster", str(cfg), "--device", "GPU"]) == 0
    out = capsys.readouterr().out
    assert "on local, laid out for device gpu -- gpu: 1 GPU(s) [0], one worker per GPU x 2 thread(s)" in out
    runs = store.read_dataset(tmp_path / "out", "runs").to_pylist()
    assert runs[0]["cluster"].startswith("gpu tcp://") and runs[0]["failed"] == 1
    failures = store.read_dataset(tmp_path / "out", "failures").to_pylist()
    assert failures[0]["stage"] == "analyse" and "CuPy" in failures[0]["message"]


@pytest.mark.gpu
def test_run_device_gpu_on_a_gpu_machine(tmp_path, monkeypatch, capsys):
    """On a real GPU: `acetate run --device gpu` with kind local masters on GPU workers, each seeing one device."""
    if importlib.util.find_spec("cupy") is None or not cluster.detect_gpus():
        pytest.skip("needs CuPy and a GPU")
    from acetate.pipeline import cli

    job, cfg = _demo_job(tmp_path, n_styles=3, seconds=4.0)
    assert cli.main(["run", str(job), "--cluster", str(cfg), "--device", "gpu", "--strict"]) == 0
    assert "laid out for device gpu" in capsys.readouterr().out
    runs = store.read_dataset(tmp_path / "out", "runs").to_pylist()
    assert runs[0]["done"] == 3 and runs[0]["cluster"].startswith("gpu ")
    with cluster.connect(cluster.load_cluster_config(cfg), device="gpu") as h:
        counts = h.client.run(lambda: __import__("cupy").cuda.runtime.getDeviceCount())
        assert set(counts.values()) == {1}, counts  # each worker pinned to its own device
