"""Dry runs and `acetate status`: what a run would do, checked against what a run then does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acetate.pipeline import cli
from acetate.pipeline.catalogue import batch, demo, jobs, plan

GOOD = [f"{s}-01" for s in demo.STYLES]


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    c = Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None)
    yield c
    c.close()


def _job(manifest, out, **presets) -> jobs.Job:
    data = {"name": "plan", "inputs": {"manifest": str(manifest)}, "output": str(out), "options": {"progress": False}}
    if presets:
        data["presets"] = presets
    return jobs.parse_job(data)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def _actions(p: plan.Plan) -> dict[str, str]:
    return {r.track_id: r.action for r in p.rows}


def test_dry_run_says_what_a_run_then_does(client, tmp_path):
    manifest = demo.make_catalogue(tmp_path / "in", seconds=2.0, per_style=1, include_bad=True)
    out = tmp_path / "out"
    job = _job(manifest, out)

    first = plan.plan_job(job)
    assert not out.exists() or not (out / "masters").exists()  # nothing written, no ledger
    acts = _actions(first)
    assert {acts[t] for t in GOOD} == {"new"} and acts["bad-silent"] == "new"  # silence is only found by decoding
    assert acts["bad-corrupt"] == acts["bad-empty"] == "refuse"
    assert "empty file" in next(r.reason for r in first.rows if r.track_id == "bad-empty")
    assert first.work_seconds == pytest.approx(2.0 * (len(GOOD) + 1), abs=0.05) and first.estimated_wall_s is None

    res = batch.run_job(job, client, progress=False)
    assert res.done == len(GOOD) and res.failed == 3

    before = _snapshot(out)
    again = plan.plan_job(job)
    assert _snapshot(out) == before  # a dry run changes nothing, ledger included
    acts = _actions(again)
    assert {acts[t] for t in GOOD} == {"skip"} and acts["bad-silent"] == "retry"
    silent = next(r for r in again.rows if r.track_id == "bad-silent")
    assert "analyse" in silent.reason and "silent" in silent.reason
    assert again.counts == {"new": 0, "redo": 0, "retry": 1, "skip": len(GOOD), "refuse": 2}
    assert again.estimated_wall_s is not None and again.estimated_wall_s > 0
    assert all(os.path.exists(p) for r in again.rows if r.action == "skip" for p in r.outputs)

    # the settings changed: every good track is redone, and the plan names the setting
    louder = plan.plan_job(_job(manifest, out, intensity="high"))
    redo = [r for r in louder.rows if r.track_id in GOOD]
    assert {r.action for r in redo} == {"redo"} and all("intensity" in r.reason for r in redo)

    # one delivered master gone
    skipped = next(r for r in again.rows if r.track_id == "pop-01")
    os.unlink(skipped.outputs[0])
    after = {r.track_id: r for r in plan.plan_job(job).rows}
    assert after["pop-01"].action == "redo" and "missing" in after["pop-01"].reason
    assert after["rock-01"].action == "skip"
    # one input changed: its album follows (the album's loudness is measured again, so is every track's key)
    rock = after["rock-01"].path
    x, fs = sf.read(rock, always_2d=True)
    sf.write(rock, (x * 0.5).astype(np.float32), fs, subtype="PCM_24")
    after = {r.track_id: r for r in plan.plan_job(job).rows}
    assert after["rock-01"].action == "redo" and "input file changed" in after["rock-01"].reason
    assert "album_loudness_lufs" in after["electronic-01"].reason

    res = batch.run_job(job, client, progress=False)
    assert res.done == sum(r.action in ("new", "redo") for r in after.values())
    assert res.skipped == sum(r.action == "skip" for r in after.values())
    assert res.failed == sum(r.action in ("retry", "refuse") for r in after.values())


def test_status_and_the_cli(client, tmp_path, capsys):
    manifest = demo.make_catalogue(tmp_path / "in", seconds=2.0, per_style=1, include_bad=True)
    out = tmp_path / "out"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(f"name: st\ninputs:\n  manifest: {manifest}\noutput: {out}\noptions:\n  progress: false\n")
    job = jobs.load_job(str(job_file))
    batch.run_job(job, client, progress=False)

    st = plan.folder_status(out)
    assert st.ledger == {"done": len(GOOD), "failed": 3}
    assert st.failed_by_stage == {"decode": 2, "analyse": 1}
    assert st.last_run is not None and st.last_run["done"] == len(GOOD) and st.runs == 1
    assert st.plan is not None and st.plan.counts["skip"] == len(GOOD)

    assert cli.main(["status", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ledger"]["done"] == len(GOOD) and doc["rerun"]["counts"]["retry"] == 1
    assert cli.main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{len(GOOD)} done, 3 failed" in text and "a rerun of the same job would do" in text

    assert cli.main(["run", str(job_file), "--dry-run", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["rows"]) == len(GOOD) + 3 and doc["counts"]["skip"] == len(GOOD)
    assert cli.main(["run", str(job_file), "--json"]) == 2
    assert "--json goes with --dry-run" in capsys.readouterr().err
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 2


def test_master_dry_run_lists_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    sf.write(src / "a.wav", demo.render_style("pop", 2.0, 44100, seed=1).T, 44100, subtype="PCM_16")
    (src / "b.wav").write_bytes(b"")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.flac").write_bytes(b"old")
    assert cli.main(["master", str(src), "--out", str(out), "--format", "wav24,flac16", "--dry-run", "--json"]) == 0
    rows = {Path(r["path"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert rows["a.wav"]["action"] == "master" and rows["a.wav"]["duration_s"] == pytest.approx(2.0)
    assert rows["a.wav"]["reason"] == "replaces 1 existing file(s)"
    assert [Path(o).name for o in rows["a.wav"]["outputs"]] == ["a.wav", "a.flac"]
    assert rows["b.wav"]["action"] == "refuse" and "empty file" in rows["b.wav"]["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["a.flac"] and (out / "a.flac").read_bytes() == b"old"
