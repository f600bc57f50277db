"""One file's mastering journey: decode -> analyse -> select -> render -> verify -> write.

:func:`master_file` is what ``acetate master`` runs per input and what a batch
worker runs per track; it returns a small JSON-able row and never raises for a
bad input (the row carries ``error`` and the ``stage`` that failed).
"""
from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from acetate.kernels import backend
from acetate.pipeline import audio, render
from acetate.pipeline.runtime import track_scope
from acetate.pipeline.presets import Preset, load_bank

__all__ = ["analyse_programme", "choose_preset", "master_file", "summary_row"]


def choose_preset(fingerprint: Mapping[str, float], preset: str | None = "auto", bank: Any = None) -> tuple[Preset, dict[str, Any]]:
    """The preset to use and the selection record (``preset, forced, distance, runners_up``).

    ``preset="auto"`` (or None) asks the bank for the nearest style; a name forces
    that preset from the bank. ``bank`` is a loaded :class:`~acetate.pipeline.presets.Bank`,
    a path, or None for the shipped default bank.
    """
    b = load_bank(bank) if bank is None or isinstance(bank, (str, Path)) else bank
    if preset and preset != "auto":
        return b[preset], {"preset": preset, "forced": True, "distance": None, "runners_up": []}
    sel = b.select(fingerprint)
    runners = [(str(n), float(d)) for n, d in sel.runners_up]
    return sel.preset, {"preset": sel.preset.name, "forced": False, "distance": float(sel.distance), "runners_up": runners}


def analyse_programme(x: np.ndarray, fs: int, device: str = "cpu") -> tuple[dict[str, Any], dict[str, float], np.ndarray]:
    """The input's loudness report, fingerprint and BS.1770 gating blocks, in one meter pass.

    ``x`` is the decoded programme as it will be delivered (mono already dual,
    :func:`acetate.pipeline.audio.dual_mono`). The CLI and the batch worker both
    analyse through here, so a track measures the same wherever it is mastered.

    Raises
    ------
    RenderError
        More channels than a master supports, shorter than one 400 ms block, or a
        silent programme (no 400 ms block above the -70 LUFS gate) -- nothing to master.
    """
    from acetate.pipeline import analyse, meter

    if x.shape[0] > 2:
        raise render.RenderError(f"{x.shape[0]}-channel input: only mono and stereo masters are supported yet (no silent downmix)")
    if x.shape[1] < round(0.4 * fs):
        raise render.RenderError(f"{x.shape[1] / fs:.3f} s of audio: shorter than one 400 ms loudness block")
    xp = backend.array_module(device)
    xd = backend.to_device(x, xp)
    report, stats = meter.measure_report(xd, fs)
    if report["integrated_lufs"] is None:
        raise render.SilentProgramme("silent or too quiet: no 400 ms block above the -70 LUFS absolute gate, integrated loudness undefined")
    given = {k: (math.nan if report[k] is None else report[k]) for k in analyse.LOUDNESS_KEYS if k in report}
    fp = analyse.fingerprint(xd, fs, loudness=given)
    return report, fp, meter.gating_blocks(stats)


def _report_subset(r: Mapping[str, Any]) -> dict[str, Any]:
    from acetate.pipeline.meter import LOUDNESS_FIGURES

    return {k: r.get(k) for k in LOUDNESS_FIGURES}


def summary_row(path: str, result: render.MasterResult, outputs: list[dict[str, Any]], selection: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI's per-input object (``acetate master --json``)."""
    out_report = _report_subset(result.output_report)
    out_report["true_peak_dbtp_16x"] = result.output_report.get("true_peak_dbtp_16x")
    return {
        "path": path,
        "outputs": outputs,
        "preset": result.preset,
        "selection": dict(selection),
        "target_lufs": result.target_lufs,
        "ceiling_dbtp": result.ceiling_dbtp,
        "target_met": result.target_met,
        "ceiling_met": result.ceiling_met,
        "input": _report_subset(result.input_report),
        "output": out_report,
        "params": result.params,
        "notes": list(result.notes),
    }


@track_scope()
def master_file(
    path: str,
    out_dir: str | Path,
    settings: render.MasterSettings,
    *,
    formats: Sequence[str] = ("wav24",),
    preset: str = "auto",
    bank: Any = None,
    stem: str | None = None,
) -> dict[str, Any]:
    """Master ``path`` into ``out_dir/<stem>.<ext>`` per format; return the summary row.

    Failures become ``{"path", "error", "stage"}`` rows.
    """
    stage = "decode"
    try:
        x, fs = audio.decode_programme(path)
        x = backend.to_device(x, backend.array_module(settings.device))  # once: analysis and render share it
        stage = "analyse"
        notes = []
        if settings.output_rate and settings.output_rate != fs:  # once, before analysis and render
            notes.append(f"resampled {fs} Hz -> {settings.output_rate} Hz before mastering")
            x, fs = render.resample(x, fs, settings.output_rate), settings.output_rate
        _, fp, _ = analyse_programme(x, fs, settings.device)
        stage = "select"
        chosen, selection = choose_preset(fp, preset, bank)
        stage = "render"
        # Hand the decoded track over (no reference kept in this frame): render.master
        # releases it once its chain has run, so the limiter phase, the memory peak,
        # holds the chain output and the master but not the input too.
        held = [x]
        del x
        result = render.master(held.pop(), fs, settings, preset=chosen, fingerprint=fp)
        result.notes[:0] = notes
        stage = "write"
        outputs = render.write_outputs(result, Path(out_dir) / (stem or Path(path).stem), formats)
        return summary_row(path, result, outputs, selection)
    except (audio.AudioError, render.RenderError, ValueError, KeyError, MemoryError) as exc:
        return {"path": path, "error": f"{type(exc).__name__}: {exc}", "stage": stage}
    except Exception as exc:  # never let one track take a batch down; keep the trace for the log
        return {"path": path, "error": f"{type(exc).__name__}: {exc}", "stage": stage, "trace": traceback.format_exc(limit=5)}
