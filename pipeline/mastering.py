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

__all__ = ["analyse_programme", "choose_preset", "resolve_preset", "output_stems", "delivered_met", "master_file", "summary_row"]


def choose_preset(fingerprint: Mapping[str, float], preset: str | None = "auto", bank: Any = None) -> tuple[Preset, dict[str, Any]]:
    """The preset to use and the selection record (``preset, forced, distance, runners_up``).

    ``preset="auto"`` (or None) asks the bank for the nearest style; a name forces
    that preset from the bank. ``bank`` is a loaded :class:`~acetate.pipeline.presets.Bank`,
    a path, or None for the shipped default bank.
    """
    b = load_bank(bank) if bank is None or isinstance(bank, (str, Path)) else bank
    if preset and preset.lower() != "auto":
        name = resolve_preset(b, preset)
        return b[name], {"preset": name, "forced": True, "distance": None, "runners_up": []}
    sel = b.select(fingerprint)
    runners = [(str(n), float(d)) for n, d in sel.runners_up]
    return sel.preset, {"preset": sel.preset.name, "forced": False, "distance": float(sel.distance), "runners_up": runners}


def resolve_preset(bank: Any, name: str) -> str:
    """The bank's own spelling of preset ``name`` (matched without regard to case), or ``auto``.

    Raises
    ------
    ValueError
        No such preset: the message lists the bank's names.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"preset must be a name or 'auto', got {name!r}")
    name = name.strip()
    if name.lower() == "auto":
        return "auto"
    if name in bank.names:
        return name
    folded = [n for n in bank.names if n.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    raise ValueError(f"no preset {name!r} in bank {bank.name!r}; choose auto or one of: {', '.join(bank.names)}")


def output_stems(paths: Sequence[str]) -> dict[str, str]:
    """Input path -> the file name (no extension) of its master, one per input.

    An input's stem, as it is. Where stems of several inputs would meet -- compared as
    a case-folding, Unicode-normalising file system would (``d1/song.wav`` and
    ``d2/Song.flac``, ``lossy.mp3`` and ``lossy.ogg``) -- each of them gets its source
    extension (``lossy-mp3``, ``lossy-ogg``) and, if that is still not enough, 8 hex digits
    of the hash of its absolute path: deterministic, and no master overwrites another.

    Examples
    --------
    >>> output_stems(["a/song.wav", "b/song.flac", "c/other.wav"])
    {'a/song.wav': 'song-wav', 'b/song.flac': 'song-flac', 'c/other.wav': 'other'}
    """
    import hashlib
    import os

    from acetate.pipeline.store import name_key

    def groups(names: dict[str, str]) -> dict[str, list[str]]:
        g: dict[str, list[str]] = {}
        for p, n in names.items():
            g.setdefault(name_key(n), []).append(p)
        return g

    stems = {p: Path(p).stem or Path(p).name for p in dict.fromkeys(paths)}
    for members in groups(stems).values():
        if len(members) > 1:
            for p in members:
                stems[p] = f"{stems[p]}-{Path(p).suffix.lstrip('.').lower() or 'audio'}"
    for members in groups(stems).values():
        if len(members) > 1:
            for p in members:
                h = hashlib.blake2b(os.path.abspath(p).encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
                stems[p] = f"{stems[p]}-{h}"
    return stems


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


def delivered_met(result: render.MasterResult, outputs: Sequence[Mapping[str, Any]]) -> tuple[bool | None, bool | None]:
    """``(target_met, ceiling_met)`` of a delivery: the master's and every delivered file's, as decoded.

    None where there is no target (or no ceiling); False as soon as one file misses.
    """

    def all_of(master: bool | None, key: str) -> bool | None:
        flags = [master] + [o.get(key) for o in outputs]
        known = [f for f in flags if f is not None]
        return None if not known else all(known)

    return all_of(result.target_met, "target_met"), all_of(result.ceiling_met, "ceiling_met")


def summary_row(path: str, result: render.MasterResult, outputs: list[dict[str, Any]], selection: Mapping[str, Any]) -> dict[str, Any]:
    """The CLI's per-input object (``acetate master --json``).

    ``output`` is the master's own report; each entry of ``outputs`` gives its delivered
    file's figures as decoded and its own ``target_met`` / ``ceiling_met``; the top-level
    ``target_met`` / ``ceiling_met`` hold for the master and every file.
    """
    out_report = _report_subset(result.output_report)
    out_report["true_peak_dbtp_16x"] = result.output_report.get("true_peak_dbtp_16x")
    target_met, ceiling_met = delivered_met(result, outputs)
    return {
        "path": path,
        "outputs": outputs,
        "preset": result.preset,
        "selection": dict(selection),
        "target_lufs": result.target_lufs,
        "ceiling_dbtp": result.ceiling_dbtp,
        "target_met": target_met,
        "ceiling_met": ceiling_met,
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
    stage = "input"
    try:
        from acetate.pipeline.track import check_input

        check_input(path)  # before anything opens it: a FIFO would block, a device never end
        stage = "decode"
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
