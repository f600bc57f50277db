"""The stages of one track, shared by every entry point: check -> decode -> analyse -> select -> render -> verify -> write.

``acetate master`` (:func:`acetate.pipeline.mastering.master_file`), the batch
workers of ``acetate run`` (:func:`acetate.pipeline.catalogue.track.run_track`),
``acetate analyze`` and ``acetate training-data`` call these functions, in this
order, through :func:`stage` (which turns any exception into a
:class:`StageFailure` naming the stage). Each returns a small typed result; the
decoded programme is handed from stage to stage once and never copied between
host and device inside the path.

========  ==============================  ====================================
stage     function                        result
========  ==============================  ====================================
input     :func:`check_input`             (raises for a non-regular file)
decode    :func:`decode`                  :class:`Programme` (dual mono applied)
analyse   :func:`analyse`                 :class:`Analysis`
select    :func:`select`                  :class:`Choice`
render    :func:`render`                  :class:`~acetate.pipeline.chain.render.MasterResult`
verify    :func:`verify`                  the master's fingerprint
write     :func:`write`                   the delivered files (:func:`~acetate.pipeline.chain.deliver.write_outputs`)
========  ==============================  ====================================

Mono is measured and delivered as dual mono at every entry point
(:func:`acetate.pipeline.io.audio.decode_programme`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from acetate.kernels import backend
from acetate.pipeline.io import audio
from acetate.pipeline.io.files import error_message  # the one message clean-up, re-exported for the stages' callers

if TYPE_CHECKING:  # annotations only (render imports much; these modules import it lazily)
    from acetate.pipeline.chain.render import MasterResult, MasterSettings

__all__ = [
    "STAGES",
    "StageFailure",
    "error_message",
    "stage",
    "Programme",
    "Analysis",
    "Choice",
    "check_input",
    "decode",
    "analyse",
    "select",
    "render",
    "verify",
    "write",
]

#: The stages, in order (the ``stage`` of a failure row; ``worker`` and ``job`` are the batch's own).
STAGES = ("input", "hash", "decode", "analyse", "select", "render", "verify", "write")

T = TypeVar("T")


class StageFailure(Exception):
    """A failure at a named stage: the original exception's type and a one-line message."""

    def __init__(self, stage: str, error_type: str, message: str) -> None:
        super().__init__(f"{stage}: {error_type}: {message}")
        self.stage, self.error_type, self.message = stage, error_type, message


def stage(name: str, fn: Callable[[], T]) -> T:
    """Run ``fn``; any exception becomes a :class:`StageFailure` at stage ``name``.

    Examples
    --------
    >>> try:
    ...     stage("decode", lambda: 1 / 0)
    ... except StageFailure as f:
    ...     (f.stage, f.error_type, f.message)
    ('decode', 'ZeroDivisionError', 'division by zero')
    """
    try:
        return fn()
    except StageFailure:
        raise
    except MemoryError as exc:
        raise StageFailure(name, "MemoryError", f"out of memory: {error_message(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        raise StageFailure(name, type(exc).__name__, error_message(exc)) from exc


# --- results ------------------------------------------------------------------------------


@dataclass
class Programme:
    """A decoded track as Acetate masters it: ``(channels, samples)`` float32 on its device."""

    audio: Any
    fs: int
    path: str
    notes: list[str] = field(default_factory=list)

    def take(self) -> Any:
        """Hand the audio over (to the last render): this holder keeps no reference, so the
        renderer can free the input once its chain has run, before the limiter (the memory peak)."""
        x, self.audio = self.audio, None
        return x


@dataclass(frozen=True)
class Analysis:
    """The input's loudness report, fingerprint and BS.1770 gating-block loudness (LUFS)."""

    report: dict[str, Any]
    fingerprint: dict[str, float]
    blocks: np.ndarray


@dataclass(frozen=True)
class Choice:
    """The preset a track is mastered with, and how it was chosen.

    ``preset`` is what is rendered (a bank preset, a blend of the nearest ones or the
    gentle fallback); ``nearest`` the bank's nearest preset's name (None when forced);
    ``confidence`` 0..1 (None when forced); ``weights`` the blend; ``notes`` why the
    rendered preset is not simply the nearest.
    """

    preset: Any
    forced: bool
    distance: float | None
    runners_up: list[tuple[str, float]]
    confidence: float | None = None
    nearest: str | None = None
    weights: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Why: the features that drove the choice and the bank's nearest reference rows (:class:`~acetate.pipeline.chain.presets.Selection`).
    explain: dict[str, Any] = field(default_factory=dict)
    #: The confidence fell below the bank's ``min_confidence``: mastered with the gentle fallback (a note says so).
    low_confidence: bool = False

    @property
    def name(self) -> str:
        return str(getattr(self.preset, "name", self.preset))

    def record(self) -> dict[str, Any]:
        """The JSON-able selection record (``preset, forced, distance, confidence, nearest, weights, runners_up, notes, explain,
        low_confidence``)."""
        return {
            "preset": self.name,
            "forced": self.forced,
            "distance": self.distance,
            "confidence": self.confidence,
            "nearest": self.nearest,
            "weights": [{"name": n, "weight": round(w, 4)} for n, w in self.weights],
            "runners_up": list(self.runners_up),
            "notes": list(self.notes),
            "explain": dict(self.explain),
            "low_confidence": self.low_confidence,
        }


# --- the stages -------------------------------------------------------------------------------


def check_input(path: str) -> None:
    """Raise :class:`~acetate.pipeline.io.audio.AudioError` unless ``path`` is a regular file (a FIFO,
    device, socket, folder, dangling link or link loop is named), before anything opens it."""
    from acetate.pipeline.io.files import input_problem

    problem = input_problem(path)
    if problem is not None:
        raise audio.AudioError(problem)


def decode(path: str, *, device: str = "cpu", output_rate: int | None = None) -> Programme:
    """Decode ``path`` as Acetate delivers it (mono as dual mono), onto ``device``, at ``output_rate``.

    The resampling to a delivery rate happens here, once, so analysis, render and
    verification all see the rate that is delivered.
    """
    x, fs = audio.decode_programme(path)
    xd = backend.to_device(x, backend.array_module(device))
    del x
    notes = []
    if output_rate and int(output_rate) != fs:
        from acetate.pipeline.chain.render import resample

        notes.append(f"resampled {fs} Hz -> {int(output_rate)} Hz before mastering")
        xd, fs = resample(xd, fs, int(output_rate)), int(output_rate)
    return Programme(xd, int(fs), str(path), notes)


def analyse(x: Any, fs: int, device: str = "cpu") -> Analysis:
    """The input's loudness report, fingerprint and gating blocks, in one meter pass.

    Raises
    ------
    RenderError
        More channels than a master supports, shorter than one 400 ms block, or a
        silent programme (no 400 ms block above the -70 LUFS gate): nothing to master.
    """
    from acetate.pipeline.chain import analyse as features
    from acetate.pipeline.chain import meter, render

    render.check_programme(x, fs)
    xd = backend.to_device(x, backend.array_module(device))
    report, stats = meter.measure_report(xd, fs)
    if report["integrated_lufs"] is None:
        raise render.SilentProgramme("silent or too quiet: no 400 ms block above the -70 LUFS absolute gate, integrated loudness undefined")
    given = {k: (math.nan if report[k] is None else report[k]) for k in features.LOUDNESS_KEYS if k in report}
    fp = features.fingerprint(xd, fs, loudness=given)
    return Analysis(report, fp, meter.gating_blocks(stats))


def select(fingerprint: Mapping[str, float], preset: str | None, bank: Any, **options: Any) -> Choice:
    """The preset for a track: ``preset`` forced by name (matched without regard to case), or with
    ``"auto"`` / None the bank's selection from ``fingerprint`` (:meth:`~acetate.pipeline.chain.presets.Bank.select`:
    the nearest preset, or the blend of the nearest, or the gentle fallback when not confident;
    ``options``: its ``blend_k``, ``temperature``, ``min_confidence``)."""
    from acetate.pipeline.chain.presets import GENTLE
    from acetate.pipeline.mastering import resolve_preset

    if preset and preset.strip().lower() != "auto":
        name = resolve_preset(bank, preset)
        return Choice(bank[name], True, None, [])
    sel = bank.select(fingerprint, **{k: v for k, v in options.items() if v is not None})
    return Choice(
        sel.rendered,
        False,
        float(sel.distance),
        [(str(n), float(d)) for n, d in sel.runners_up],
        confidence=float(sel.confidence),
        nearest=sel.preset.name,
        weights=[(str(n), float(w)) for n, w in sel.weights],
        notes=list(sel.notes),
        explain={k: v for k, v in sel.to_dict().items() if k in ("drivers", "nearest_members", "speech")},
        low_confidence=sel.applied is GENTLE,
    )


def render(programme: Programme, analysis: Analysis, choice: Choice, settings: MasterSettings, *, hand_over: bool = True) -> MasterResult:
    """Master the programme (:func:`acetate.pipeline.chain.render.master`) with the chosen preset.

    With ``hand_over`` (the last render of a track) the programme gives its audio up to
    the renderer, which frees it once its chain has run.
    """
    from acetate.pipeline.chain import render as chain

    # The audio goes straight into the call (no name for it in this frame), so a handed-over
    # input has no reference left but the renderer's own.
    result = chain.master(
        programme.take() if hand_over else programme.audio, programme.fs, settings, preset=choice.preset, fingerprint=analysis.fingerprint
    )
    result.notes[:0] = [*programme.notes, *choice.notes]
    return result


def verify(result: MasterResult, device: str) -> dict[str, float]:
    """The master's fingerprint, on the device it was rendered on (its loudness figures from
    the renderer's own output report: no second meter pass)."""
    from acetate.pipeline.chain import analyse as features

    rep = result.output_report
    given = {k: (math.nan if rep.get(k) is None else rep[k]) for k in features.LOUDNESS_KEYS if k in rep}
    xp = backend.array_module(device)
    y = result.device_audio if result.device_audio is not None else result.audio
    return features.fingerprint(backend.to_device(y, xp), result.fs, loudness=given)


def write(result: MasterResult, stem: str, formats: Sequence[str]) -> list[dict[str, Any]]:
    """Deliver the master in each format, each file verified as it decodes
    (:func:`acetate.pipeline.chain.deliver.write_outputs`)."""
    from acetate.pipeline.chain import deliver

    return deliver.write_outputs(result, stem, formats)
