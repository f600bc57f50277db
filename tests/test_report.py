"""The review report (``acetate report``): triage, incremental rebuild, loudness-matched excerpts, and a real browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acetate.kernels.loudness import integrated_loudness
from acetate.pipeline.io import audio
from acetate.pipeline.report import build_report, load_run, triage
from acetate.pipeline.report.data import TrackRow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """The demo job, run once (8 tracks, 3 bad), its report built by ``acetate run``."""
    out = tmp_path_factory.mktemp("report") / "out"
    r = subprocess.run(
        [sys.executable, "-m", "acetate", "run", "demo", "--out", str(out), "--no-progress", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "report: " in r.stdout and "targets met: 5/5" in r.stdout, r.stdout
    assert (out / "report" / "index.html").is_file()
    return out


def _t(tid: str, **kw) -> TrackRow:
    base = dict(track_id=tid, name=tid, status="done", confidence=0.9, preset="balanced", nearest="balanced")
    base.update(kw)
    return TrackRow(**base)


def test_triage_order_and_reasons():
    tracks = [
        _t("ok"),
        _t("fail", status="failed", failure_stage="decode", failure_message="AudioError: empty"),
        _t("speech", preset="spoken_word", preset_is_speech=True, speech_likeness=0.2),
        _t("unsure", confidence=0.1, nearest="bright", preset="gentle_default"),
        _t("squashed", in_lra=12.0, out_lra=4.0),
        _t("limited", limiter_db=6.0),
        _t("eq", in_ltas=[0.0] * 31, out_ltas=[5.0] * 31),
    ]
    got = triage(tracks, 10)
    kinds = {e.track_id: e.kind for e in got}
    assert [e.track_id for e in got[:2]] == ["fail", "speech"]
    assert kinds == {
        "fail": "failed",
        "speech": "speech-on-music",
        "unsure": "low-confidence",
        "squashed": "lra-reduction",
        "limited": "limiter",
        "eq": "spectral-change",
    }
    assert "ok" not in kinds  # nothing stands out
    assert "8.0 LU" in next(e.reason for e in got if e.track_id == "squashed")
    assert len(triage(tracks, 3)) == 3
    # a speech preset on speech is fine
    assert triage([_t("talk", preset_is_speech=True, speech_likeness=0.9)], 5) == []


def test_triage_round_robin_keeps_every_criterion():
    low = [_t(f"low{i}", confidence=0.05 + i * 0.01) for i in range(10)]
    got = triage(low + [_t("limited", limiter_db=3.0)], 3)
    assert [e.track_id for e in got] == ["low0", "limited", "low1"]


def test_demo_report_contents(demo_run):
    run = load_run(demo_run)
    assert len(run.tracks) == 8
    status = {t.track_id: t.status for t in run.tracks}
    assert sum(s == "failed" for s in status.values()) == 3 and sum(s == "done" for s in status.values()) == 5
    html = (demo_run / "report" / "index.html").read_text()
    assert html.count('<tr data-status="') == 8
    assert "http://" not in html and "https://" not in html  # no CDN, no network
    for k in ("loudness", "lra", "presets", "gain"):
        assert (demo_run / "report" / "assets" / f"{k}.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    for t in run.tracks:
        page = (demo_run / "report" / "tracks" / f"{t.name}.html").read_text()
        assert t.track_id in page
        if t.status == "done":
            assert (demo_run / "report" / "assets" / t.name / "spectrum.svg").is_file()
            assert 'id="audio-a"' in page and 'id="audio-b"' in page


def test_excerpts_are_loudness_matched(demo_run):
    for t in load_run(demo_run).tracks:
        if t.status != "done":
            continue
        d = demo_run / "report" / "assets" / t.name
        la = integrated_loudness(*audio.decode(d / "a.opus"))
        lb = integrated_loudness(*audio.decode(d / "b.opus"))
        assert abs(la - lb) < 0.5, (t.track_id, la, lb)
        assert (d / "a.opus").stat().st_size < 200_000


def test_incremental_rebuild(demo_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(demo_run, out, ignore=shutil.ignore_patterns("lock"))
    first = build_report(out)  # the manifest came along and no row changed: nothing to redo
    assert first.rebuilt == []
    again = build_report(out)
    assert again.rebuilt == []
    man = json.loads((out / "report" / "manifest.json").read_text())
    assert len(man["tracks"]) == 8
    # change one track's rows: drop its presets part; only that track is rebuilt
    part = out / "presets" / "pop-01.parquet"
    os.remove(part)
    third = build_report(out)
    assert third.rebuilt == ["pop-01"]
    # a missing page is rebuilt too
    os.remove(out / "report" / "tracks" / "rock-01.html")
    assert build_report(out).rebuilt == ["rock-01"]


def test_report_cli(demo_run, tmp_path):
    from acetate.pipeline.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["report", str(demo_run), "--top", "2"]) == 0


def _chromium() -> tuple[str, str] | None:
    for b in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(b)
        if exe:
            drv = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
            if os.path.exists(drv):
                return exe, drv
    return None


def test_report_in_headless_chromium(demo_run, tmp_path):
    found = _chromium()
    if found is None:
        pytest.skip("no Chromium and chromedriver found (apt-get install chromium chromium-driver; .ci/run does so)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    exe, drv = found
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=drv), options=opts)
    try:
        driver.set_window_size(1400, 1000)
        driver.get((demo_run / "report" / "index.html").as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")
        assert len(rows) == 8

        def column(i: int) -> list[str]:
            return [r.find_elements(By.TAG_NAME, "td")[i].text for r in driver.find_elements(By.CSS_SELECTOR, "#tracks tbody tr")]

        heads = driver.find_elements(By.CSS_SELECTOR, "#tracks thead th button")
        labels = [h.text for h in heads]
        gi = labels.index("gain (dB)")
        before = column(0)
        heads[gi].click()
        after = column(0)
        assert sorted(after) == sorted(before) and after != before
        assert driver.find_elements(By.CSS_SELECTOR, "#tracks thead th")[gi].get_attribute("aria-sort") == "ascending"
        heads[0].click()
        assert column(0) == sorted(before, key=str.lower)
        driver.save_screenshot(str(tmp_path / "catalogue.png"))

        driver.get((demo_run / "report" / "tracks" / "pop-01.html").as_uri())
        for img in ("spectrum", "short-term"):
            assert driver.execute_script(f"var i=document.getElementById('{img}');return i.complete&&i.naturalWidth>0;")
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script(
                "return ['audio-a','audio-b'].every(function(i){var a=document.getElementById(i);return a.readyState>=1&&a.duration>0;});"
            )
        )
        durs = driver.execute_script("return ['audio-a','audio-b'].map(function(i){return document.getElementById(i).duration;});")
        assert all(d > 1.0 for d in durs)
        driver.save_screenshot(str(tmp_path / "track.png"))
        assert (tmp_path / "track.png").stat().st_size > 0
    finally:
        driver.quit()
