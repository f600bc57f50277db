"""``acetate master`` for one file: the stages of :mod:`acetate.pipeline.stages`, then a report row.

:func:`master_file` is what ``acetate master`` runs per input (batch workers run
the same stages through :func:`acetate.pipeline.catalogue.track.run_track`); it returns a
small JSON-able row and never raises for a bad input (the row carries ``error``
and the ``stage`` that failed). Also here: how a preset name is resolved in a
bank, and how inputs are named as outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from acetate.pipeline import stages
from acetate.pipeline.catalogue.runtime import track_scope
from acetate.pipeline.chain import render
from acetate.pipeline.chain.presets import load_bank

__all__ = ["resolve_preset", "output_stems", "delivered_met", "master_file", "summary_row"]


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

    from acetate.pipeline.io.store import name_key

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


def _report_subset(r: Mapping[str, Any]) -> dict[str, Any]:
    from acetate.pipeline.chain.meter import LOUDNESS_FIGURES

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

    The stages of :mod:`acetate.pipeline.stages`, in order; a failure becomes a
    ``{"path", "error", "stage"}`` row (never an exception).
    """
    try:
        b = load_bank(bank) if bank is None or isinstance(bank, (str, Path)) else bank
        stages.stage("input", lambda: stages.check_input(path))
        prog = stages.stage("decode", lambda: stages.decode(path, device=settings.device, output_rate=settings.output_rate))
        found = stages.stage("analyse", lambda: stages.analyse(prog.audio, prog.fs, settings.device))
        choice = stages.stage("select", lambda: stages.select(found.fingerprint, preset, b))
        result = stages.stage("render", lambda: stages.render(prog, found, choice, settings))
        outputs = stages.stage("write", lambda: stages.write(result, str(Path(out_dir) / (stem or Path(path).stem)), formats))
        return summary_row(path, result, outputs, choice.record())
    except stages.StageFailure as f:
        return {"path": path, "error": f"{f.error_type}: {f.message}", "stage": f.stage}
