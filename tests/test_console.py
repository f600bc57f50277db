"""`acetate master`'s progress bar, warnings and end summary, on built signals."""

from __future__ import annotations

import io
import json

import soundfile as sf

from acetate.pipeline import cli, console
from acetate.pipeline.catalogue import demo


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _inputs(tmp_path, styles=("pop", "spoken"), seconds=5.0):
    d = tmp_path / "in"
    d.mkdir()
    for i, s in enumerate(styles):
        sf.write(d / f"{s}.wav", demo.render_style(s, seconds, 44100, seed=i).T, 44100, subtype="PCM_16")
    (d / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return d


def test_progress_bar_shows_count_and_eta_on_a_terminal_only():
    tty = _Tty()
    bar = console.progress_bar(4, stream=tty)
    for _ in range(3):
        bar.update(1)
    bar.refresh()
    shown = tty.getvalue()
    bar.close()
    assert "3/4" in shown and "<" in shown  # n/N, then elapsed<ETA
    pipe = io.StringIO()
    bar = console.progress_bar(4, stream=pipe)
    bar.update(4)
    bar.close()
    assert pipe.getvalue() == ""
    quiet = _Tty()
    bar = console.progress_bar(4, stream=quiet, enabled=False)
    bar.update(2)
    bar.close()
    assert quiet.getvalue() == ""


def test_master_ends_with_a_summary_and_writes_its_report(tmp_path, capsys):
    d = _inputs(tmp_path)
    rc = cli.main(["master", str(d), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 1  # one input failed
    out = capsys.readouterr().out.splitlines()
    counts = next(line for line in out if line.startswith("3 tracks"))
    assert counts.startswith("3 tracks: 2 done, 0 skipped, 1 failed; 10 s of audio in ") and counts.endswith("x realtime)")
    assert "targets met: 2/2  ceilings met: 2/2" in out
    checks = [line for line in out if line.startswith("check  ")]
    assert 1 <= len(checks) <= 3 and "broken.wav" in checks[0] and "failed at decode" in checks[0]
    report = tmp_path / "out" / cli.MASTER_REPORT
    assert out[-1] == f"report: {report}"
    rows = json.loads(report.read_text())
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in rows) == ["broken.wav", "pop.wav", "spoken.wav"]
    done = [r for r in rows if "error" not in r]
    assert all(isinstance(r["selection"]["confidence"], float) and r["selection"]["low_confidence"] is False for r in done)


def test_master_json_keeps_stdout_pure_and_the_summary_on_stderr(tmp_path, capsys):
    d = _inputs(tmp_path, styles=("rock",))
    rc = cli.main(["master", str(d / "rock.wav"), "--out", str(tmp_path / "out"), "--json"])
    assert rc == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    assert len(rows) == 1 and rows[0]["target_met"] is True
    assert "1 tracks: 1 done, 0 skipped, 0 failed" in cap.err and "report: " in cap.err


def test_low_confidence_selection_warns_where_it_happens(tmp_path, capsys):
    d = _inputs(tmp_path, styles=("pop",))
    bank = tmp_path / "strict-bank.json"
    assert cli.main(["presets", "--export", str(bank)]) == 0
    doc = json.loads(bank.read_text())
    doc["bank"]["selection"]["min_confidence"] = 0.99  # nothing is that close: every track falls back
    bank.write_text(json.dumps(doc))
    capsys.readouterr()
    rc = cli.main(["master", str(d / "pop.wav"), "--out", str(tmp_path / "out"), "--bank", str(bank), "--json"])
    assert rc == 0
    cap = capsys.readouterr()
    (row,) = json.loads(cap.out)
    assert row["selection"]["low_confidence"] is True and row["selection"]["confidence"] < 0.99
    assert row["preset"] == "gentle_default"
    warn = [line for line in cap.err.splitlines() if line.startswith("warning: ")]
    assert len(warn) == 1 and "pop.wav" in warn[0] and "low selection confidence" in warn[0]
    assert any("selection confidence" in n for n in row["notes"])


def test_master_triage_puts_failures_then_missed_targets_first():
    rows = [
        {"path": "ok.wav", "preset": "balanced", "selection": {"confidence": 0.9}, "target_met": True, "ceiling_met": True},
        {"path": "loud.wav", "preset": "balanced", "selection": {"confidence": 0.95}, "target_met": False, "ceiling_met": True},
        {"path": "bad.wav", "error": "AudioError: not audio", "stage": "decode"},
        {"path": "far.wav", "preset": "balanced", "selection": {"confidence": 0.1, "nearest": "bright"}, "target_met": True},
    ]
    tri = console.master_triage(rows)
    assert [p for p, _ in tri] == ["bad.wav", "loud.wav", "far.wav"]
    assert "missed its target" in tri[1][1] and "confidence: 0.10" in tri[2][1]
