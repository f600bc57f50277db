"""Job files: load, validate and override the YAML that declares a catalogue run.

A job (``jobs/*.yaml``) says what to process, where the results go and how::

    name: nightly                 # default: the file's stem
    description: free text
    mode: master                  # master | analyze | training-data
    inputs:                       # exactly one of demo / paths / manifest
      manifest: /mnt/catalogue/manifest.csv   # CSV or Parquet: track_id, path [, album, artist, isrc, target, preset]
      # paths: [/mnt/catalogue/incoming, "/mnt/more/**/*.flac"]  # folders (recursive), globs or files
      # demo: {per_style: 1, seconds: 20, include_bad: true}     # the built-in synthetic catalogue
    output: /mnt/masters/nightly  # the output root OUT
    targets:                      # delivery targets by name (built-ins: render.TARGETS)
      streaming: {integrated_lufs: -14.0, true_peak_dbtp: -1.0, tolerance_lu: 0.1}
    target: streaming             # target(s) of tracks whose manifest row names none (name or list)
    formats: [wav24]              # see acetate.pipeline.io.audio.FORMATS
    presets:
      bank: null                  # a preset bank file, or null for the built-in presets
      preset: null                # force this preset for every track
      intensity: medium           # low | medium | high (how far the chain moves a track)
      max_limiting_db: null       # most limiting allowed to reach a target (null: the preset's)
      reference: null             # [ref.wav:2, other.flac]: master toward these tracks instead of a preset
      amounts: null               # "eq=0.5,dynamics=0.3,width=0,limiter=1" (a manifest column may set it per track)
    album_mode: auto              # auto (on when the inputs name albums) | true | false
    options:
      device: auto                # auto | cpu | gpu (gpu: tasks need a worker with resource GPU)
      strict: false               # exit non-zero when any track failed
      retries: 2                  # how often Dask re-runs a task whose worker died
      max_in_flight: null         # tasks queued at once (default 2 x worker threads)
      progress: true              # progress bar on stderr
      verify: true                # fingerprint the masters too (features stage "output")
      allow_unsafe_levels: false  # accept targets louder than -5 LUFS, ceilings above 0 dBTP
    training:                     # mode training-data only: variants per track (acetate.pipeline.learning.training)
      presets: null               # preset names (default: the whole bank)
      intensities: [low, medium, high]
      n_random: null              # random draws per track instead of the grid
      seed: 0
      format: flac24

Unknown keys anywhere are an error that names the key.  Relative paths in a
job resolve against the current directory (so ``acetate run jobs/demo.yaml``
writes under the directory it is run from); relative paths inside a manifest
resolve against the manifest's folder.  :func:`apply_overrides` applies the
command line's ``--input`` / ``--out`` / ``--strict`` so one job serves many
catalogues.
"""

from __future__ import annotations

import copy
import csv
import glob as globmod
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from acetate.pipeline.chain import levels
from acetate.pipeline.io import audio, store
from acetate.pipeline.stages import error_message

__all__ = [
    "JobError",
    "MODES",
    "BUILTIN_TARGETS",
    "TrackSpec",
    "Job",
    "load_job",
    "parse_job",
    "apply_overrides",
    "resolve_tracks",
    "read_manifest",
    "read_table_file",
    "builtin_job_path",
    "builtin_job_names",
    "check_job",
    "config_hash",
]

MODES = ("master", "analyze", "training-data")

#: Tolerance (LU) of built-in targets that differ from the default 0.1 LU (what a master promises).
_TOLERANCES: dict[str, float] = {}


def _builtin_targets() -> dict[str, dict[str, float]]:
    from acetate.pipeline.chain.render import TARGETS  # one list of named targets for `acetate master` and jobs

    return {
        n: {"integrated_lufs": float(lufs), "true_peak_dbtp": float(tp), "tolerance_lu": _TOLERANCES.get(n, 0.1)}
        for n, (lufs, tp) in TARGETS.items()
    }


#: Delivery targets known by name (a job's ``targets`` may add or redefine them).
BUILTIN_TARGETS: dict[str, dict[str, float]] = _builtin_targets()

MANIFEST_COLUMNS = ("track_id", "path", "album", "artist", "isrc", "target", "preset", "amounts")

# key -> (type or tuple of types, default); nested dicts are validated by their own tables.
_TOP = {"name", "description", "mode", "inputs", "output", "targets", "target", "formats", "presets", "album_mode", "options", "training"}
_TRAINING = {"presets": None, "intensities": ["low", "medium", "high"], "n_random": None, "seed": 0, "format": "flac24"}
_INPUTS = {"demo", "paths", "manifest"}
_DEMO = {"per_style": 1, "seconds": 20.0, "include_bad": True, "seed": 0}
_TARGET = {"integrated_lufs", "true_peak_dbtp", "tolerance_lu"}
_PRESETS = {"bank": None, "preset": None, "intensity": "medium", "max_limiting_db": None, "reference": None, "amounts": None}
_OPTIONS = {
    "device": "auto",
    "strict": False,
    "retries": 2,
    "max_in_flight": None,
    "progress": True,
    "verify": True,
    "allow_unsafe_levels": False,
}


class JobError(ValueError):
    """A job file or manifest that cannot be used (the message names the key, value or row)."""


@dataclass(frozen=True)
class TrackSpec:
    """One track of a catalogue, as a worker receives it (paths absolute).

    ``targets`` are target names of the job; ``album_loudness_lufs`` (the
    album's input loudness) is filled in by the batch's album phase.
    """

    track_id: str
    path: str
    album: str | None = None
    artist: str | None = None
    isrc: str | None = None
    targets: tuple[str, ...] = ()
    preset: str | None = None
    album_loudness_lufs: float | None = None
    amounts: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


@dataclass
class Job:
    """A validated job (see the module docstring for each field)."""

    name: str
    mode: str
    inputs: dict[str, Any]
    output: str
    targets: dict[str, dict[str, float]]
    target: list[str]
    formats: list[str]
    presets: dict[str, Any]
    album_mode: str | bool
    options: dict[str, Any]
    training: dict[str, Any] = field(default_factory=lambda: dict(_TRAINING))
    description: str = ""
    path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def settings(self) -> dict[str, Any]:
        """The JSON-able job settings a worker needs (no inputs, no output root)."""
        return {
            "mode": self.mode,
            "targets": self.targets,
            "formats": list(self.formats),
            "preset_bank": self.presets.get("bank"),
            "preset": self.presets.get("preset"),
            "intensity": self.presets.get("intensity", "medium"),
            "max_limiting_db": self.presets.get("max_limiting_db"),
            "reference": list(self.presets.get("reference") or []),
            "amounts": self.presets.get("amounts"),
            "device": self.options["device"],
            "verify": bool(self.options["verify"]),
            "training": dict(self.training) if self.mode == "training-data" else None,
        }


def builtin_job_names() -> list[str]:
    """Names of the jobs shipped with Acetate (``demo``, ``nightly``, ...)."""
    return sorted(p.name[:-5] for p in resources.files("acetate.jobs").iterdir() if p.name.endswith(".yaml"))


def builtin_job_path(name: str) -> str:
    """Path of a job shipped with Acetate (``demo``, ``nightly``, ...)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    p = resources.files("acetate.jobs") / f"{stem}.yaml"
    if not p.is_file():
        raise JobError(f"no built-in job named {name!r}; built-in jobs: {', '.join(builtin_job_names())}")
    return str(p)


def _unknown(d: Mapping[str, Any], allowed, where: str) -> None:
    if not isinstance(d, Mapping):
        raise JobError(f"{where} must be a mapping, got {type(d).__name__}")
    bad = sorted(str(k) for k in d if k not in allowed)
    if bad:
        raise JobError(f"unknown key {bad[0]!r} in {where}; allowed: {sorted(allowed)}")


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise JobError(f"{where} must be a number, got {v!r}")
    return float(v)


def load_job(path: str | os.PathLike) -> Job:
    """Read and validate a job file; a bare name like ``demo`` finds a built-in job."""
    p = os.fspath(path)
    if not os.path.exists(p):
        # A bare name (no folder, no YAML suffix) is a built-in job; anything that looks
        # like a path is a file that is not there.
        if os.sep not in p and "/" not in p and not p.lower().endswith((".yaml", ".yml")):
            p = builtin_job_path(p)
        else:
            raise JobError(f"file not found: {p} (built-in jobs: {', '.join(builtin_job_names())})")
    from acetate.pipeline.io.files import input_problem

    problem = input_problem(p)
    if problem is not None:
        raise JobError(f"job file {problem}")
    try:
        with open(p, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise JobError(f"file not found: {p}") from None
    except UnicodeDecodeError as exc:
        raise JobError(f"{p}: a job file is UTF-8 text; byte {exc.start} is not ({exc.reason})") from None
    except RecursionError:
        raise JobError(f"{p}: not valid YAML: nested too deeply") from None
    except (yaml.YAMLError, ValueError) as exc:  # PyYAML raises a bare ValueError for an escape beyond U+10FFFF
        msg = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise JobError(f"{p}: not valid YAML: {msg}") from None
    job = parse_job(data if data is not None else {}, default_name=Path(p).stem)
    job.path = str(p)
    return job


def parse_job(data: Mapping[str, Any], *, default_name: str = "job") -> Job:
    """Validate a job given as a mapping (see the module docstring); fills defaults."""
    import math

    _unknown(data, _TOP, "the job")
    # A job is a small tree of plain data. Refuse what YAML (or a caller) can build beyond
    # that before anything below copies, compares or prints it: a structure containing
    # itself (a recursive alias), nesting deeper than any job's, or an alias bomb (a few
    # lines whose anchors expand to billions of nodes). Iterative, memoised by identity.
    sizes: dict[int, int] = {}
    path: set[int] = set()
    todo: list[tuple[Any, int, bool]] = [(data, 0, False)]
    while todo:
        node, depth, finished = todo.pop()
        if not isinstance(node, (Mapping, list, tuple, set, frozenset)):
            continue
        kids = [*node.keys(), *node.values()] if isinstance(node, Mapping) else list(node)
        if finished:
            path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(k), 1) for k in kids)
            if sizes[id(node)] > 1_000_000:
                raise JobError("the job is too large (over a million values once its YAML aliases are expanded)")
            continue
        if id(node) in sizes:
            continue
        if id(node) in path:
            raise JobError("the job contains itself (a recursive YAML alias)")
        if depth > 32:
            raise JobError("the job is nested too deeply (more than 32 levels)")
        path.add(id(node))
        todo.append((node, depth, True))
        todo.extend((k, depth + 1, False) for k in kids)

    def path_value(v: Any, where: str) -> str:  # a path: non-empty, no NUL (which no file system takes)
        if not isinstance(v, str) or not v or "\0" in v:
            raise JobError(f"{where} must be a path, got {v!r}")
        return v

    def whole(v: Any, where: str, lo: int, hi: int, *, none: bool = False) -> int | None:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise JobError(f"{where} must be a whole number in {lo}..{hi}{' or null' if none else ''}, got {v!r}")
        return v

    name = data.get("name", default_name)
    if not isinstance(name, str) or not name or "\0" in name:
        raise JobError(f"name must be a non-empty string, got {name!r}")
    mode = data.get("mode", "master")
    if mode not in MODES:
        raise JobError(f"mode must be one of {MODES}, got {mode!r}")

    inputs = data.get("inputs") or {}
    _unknown(inputs, _INPUTS, "inputs")
    inputs = dict(inputs)
    given = [k for k in ("demo", "paths", "manifest") if inputs.get(k) not in (None, False)]
    if len(given) > 1:
        raise JobError(f"inputs: give one of demo / paths / manifest, not {given}")
    if "demo" in given:
        demo = inputs["demo"]
        demo = {} if demo is True else demo
        _unknown(demo, _DEMO, "inputs.demo")
        demo = {**_DEMO, **demo}
        whole(demo["per_style"], "inputs.demo.per_style", 1, 1000)
        whole(demo["seed"], "inputs.demo.seed", 0, 2**63 - 1)
        secs = demo["seconds"]
        if isinstance(secs, bool) or not isinstance(secs, (int, float)) or not 1.0 <= secs <= 3600.0:
            raise JobError(f"inputs.demo.seconds must be a number of seconds in 1..3600, got {secs!r}")
        if not isinstance(demo["include_bad"], bool):
            raise JobError(f"inputs.demo.include_bad must be true or false, got {demo['include_bad']!r}")
        inputs["demo"] = demo
    if "paths" in given:
        paths = inputs["paths"]
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(x, str) and x and "\0" not in x for x in paths):
            raise JobError(f"inputs.paths must be a list of folders, globs or files, got {inputs['paths']!r}")
        inputs["paths"] = paths
    if "manifest" in given:
        path_value(inputs["manifest"], "inputs.manifest")

    output = path_value(data.get("output", f"acetate-out/{name}"), "output")

    targets: dict[str, dict[str, float]] = {}
    raw_targets = data.get("targets") or {}
    if isinstance(raw_targets, list):  # a list of built-in names
        if not all(isinstance(t, str) for t in raw_targets):
            raise JobError(f"targets must be a mapping of name -> target or a list of built-in names, got {raw_targets!r}")
        raw_targets = {t: None for t in raw_targets}
    if not isinstance(raw_targets, Mapping):
        raise JobError(f"targets must be a mapping of name -> target, got {raw_targets!r}")
    for tname, spec in raw_targets.items():
        if not isinstance(tname, str) or not tname.strip():
            raise JobError(f"targets: a target name must be a non-empty string, got {tname!r}")
        base = dict(BUILTIN_TARGETS.get(str(tname).lower(), {}))
        if spec is None:
            if not base:
                raise JobError(f"target {tname!r} is not built in ({sorted(BUILTIN_TARGETS)}); give its integrated_lufs")
            spec = {}
        _unknown(spec, _TARGET, f"targets.{tname}")
        merged = {**{"tolerance_lu": 0.1, "true_peak_dbtp": -1.0}, **base, **spec}
        if "integrated_lufs" not in merged:
            raise JobError(f"targets.{tname}: integrated_lufs is required")
        t = {k: _number(merged[k], f"targets.{tname}.{k}") for k in sorted(_TARGET)}
        for k, v in t.items():
            if not math.isfinite(v):
                raise JobError(f"targets.{tname}.{k} must be a finite number, got {v!r}")
        if t["tolerance_lu"] <= 0:
            raise JobError(f"targets.{tname}.tolerance_lu must be > 0, got {t['tolerance_lu']}")
        targets[str(tname)] = t
    default_target = data.get("target")
    if default_target is None:
        default_target = [next(iter(targets))] if targets else ["streaming"]
    if isinstance(default_target, str):
        default_target = [default_target]
    if not isinstance(default_target, list) or not default_target:
        raise JobError(f"target must be a target name or a list of names, got {data.get('target')!r}")
    if not all(isinstance(t, str) for t in default_target):
        raise JobError(f"target must be a target name or a list of names, got {data.get('target')!r}")
    default_target = [_target_name(t, targets) for t in default_target]

    formats = data.get("formats", ["wav24"])
    formats = [formats] if isinstance(formats, str) else formats
    if not isinstance(formats, list) or not formats:
        raise JobError(f"formats must be a non-empty list, got {data.get('formats')!r}")
    formats = [f.strip().lower() if isinstance(f, str) else f for f in formats]
    for f in formats:
        if not isinstance(f, str) or f not in audio.FORMATS:
            raise JobError(f"unknown format {f!r}; choose from {sorted(audio.FORMATS)}")
    exts = [audio.FORMATS[f][0] for f in formats]
    if len(set(exts)) != len(exts):
        raise JobError(f"formats {formats} share a file extension; masters would overwrite each other")

    presets = data.get("presets") or {}
    _unknown(presets, _PRESETS, "presets")
    presets = dict(presets)
    presets = {**_PRESETS, **presets}
    for k in ("bank", "preset"):
        if presets[k] is not None and not isinstance(presets[k], str):
            raise JobError(f"presets.{k} must be a string or null, got {presets[k]!r}")
    if isinstance(presets["intensity"], str):
        presets["intensity"] = presets["intensity"].strip().lower()
    if presets["intensity"] not in ("low", "medium", "high"):
        raise JobError(f"presets.intensity must be low, medium or high, got {presets['intensity']!r}")
    ref = presets["reference"]
    if ref is not None:
        if isinstance(ref, str):
            ref = [ref]
        if not isinstance(ref, list) or not ref or not all(isinstance(a, str) and a.strip() for a in ref):
            raise JobError(f"presets.reference must be a list of REF[:WEIGHT] strings, got {ref!r}")
        if presets["preset"] or presets["bank"]:
            raise JobError("presets.reference replaces the preset: give it without presets.preset or presets.bank")
        from acetate.pipeline.chain.reference import parse_reference

        checked = []
        for a in ref:
            try:
                path, weight = parse_reference(a.strip())
            except ValueError as exc:
                raise JobError(f"presets.reference: {exc}") from None
            if not os.path.isfile(path):
                raise JobError(f"presets.reference: no such file {path!r}")
            checked.append(f"{os.path.abspath(path)}:{weight:g}")
        presets["reference"] = checked
    if presets["amounts"] is not None:
        presets["amounts"] = _check_amounts(presets["amounts"], "presets.amounts")
    ml = presets["max_limiting_db"]
    if ml is not None and (isinstance(ml, bool) or not isinstance(ml, (int, float)) or not 0 <= ml <= 60):
        raise JobError(f"presets.max_limiting_db must be a number of dB within 0..60 or null, got {ml!r}")

    album_mode = data.get("album_mode", "auto")
    if not (isinstance(album_mode, bool) or (isinstance(album_mode, str) and album_mode == "auto")):
        raise JobError(f"album_mode must be auto, true or false, got {album_mode!r}")

    options = data.get("options") or {}
    _unknown(options, _OPTIONS, "options")
    options = dict(options)
    options = {**_OPTIONS, **options}
    if options["device"] not in ("auto", "cpu", "gpu"):
        raise JobError(f"options.device must be auto, cpu or gpu, got {options['device']!r}")
    for k in ("strict", "progress", "verify", "allow_unsafe_levels"):
        if not isinstance(options[k], bool):
            raise JobError(f"options.{k} must be true or false, got {options[k]!r}")
    if isinstance(options["retries"], bool) or not isinstance(options["retries"], int) or not 0 <= options["retries"] <= 1000:
        raise JobError(f"options.retries must be a whole number >= 0 (at most 1000), got {options['retries']!r}")
    mif = options["max_in_flight"]
    if mif is not None and (isinstance(mif, bool) or not isinstance(mif, int) or not 1 <= mif <= 1_000_000):
        raise JobError(f"options.max_in_flight must be a whole number >= 1 (at most 1000000) or null, got {mif!r}")

    for tname, t in targets.items():
        try:
            levels.check_levels(
                t["integrated_lufs"], t["true_peak_dbtp"], allow_unsafe=options["allow_unsafe_levels"], where=f"targets.{tname}: "
            )
        except ValueError as exc:
            raise JobError(str(exc).replace("pass --allow-unsafe-levels", "set options.allow_unsafe_levels: true")) from None

    training = data.get("training") or {}
    _unknown(training, _TRAINING, "training")
    training = {**_TRAINING, **training}
    if training["format"] not in ("flac24", "wav24", "wav32f"):
        raise JobError(f"training.format must be flac24, wav24 or wav32f, got {training['format']!r}")
    intens = training["intensities"]
    if intens is not None and not isinstance(intens, list):
        raise JobError(f"training.intensities must be a list of low / medium / high, got {intens!r}")
    bad = [i for i in intens or [] if i not in ("low", "medium", "high")]
    if bad:
        raise JobError(f"training.intensities: unknown intensity {bad[0]!r}")
    tp = training["presets"]
    if tp is not None and (not isinstance(tp, list) or not all(isinstance(n, str) and n for n in tp)):
        raise JobError(f"training.presets must be a list of preset names or null, got {tp!r}")
    whole(training["n_random"], "training.n_random", 1, 100_000, none=True)
    whole(training["seed"], "training.seed", 0, 2**63 - 1)

    description = data.get("description", "")
    if description is not None and not isinstance(description, str):
        raise JobError(f"description must be text, got {description!r}")
    return Job(
        name=name,
        mode=mode,
        inputs=inputs,
        output=output,
        targets=targets,
        target=list(default_target),
        formats=list(formats),
        presets=presets,
        album_mode=album_mode,
        options=options,
        training=training,
        description=str(description or ""),
        raw=copy.deepcopy(dict(data)),
    )


def _target_name(name: str, targets: dict[str, dict[str, float]]) -> str:
    """The job's spelling of target ``name`` (case aside), adding a built-in one on first use."""
    if name in targets:
        return name
    folded = [t for t in targets if t.casefold() == name.casefold()]
    if len(folded) == 1:
        return folded[0]
    if name.lower() in BUILTIN_TARGETS:
        targets[name.lower()] = dict(BUILTIN_TARGETS[name.lower()])
        return name.lower()
    raise JobError(f"target {name!r} is neither in targets nor built in ({', '.join(sorted(BUILTIN_TARGETS))})")


def check_job(job: Job) -> Any:
    """Checks of a job that need more than its file, made before any work: the preset bank
    loads and the job's forced preset is in it (case aside; rewritten to the bank's spelling).

    Returns the loaded bank. Raises :class:`JobError` naming the problem and, for a
    preset, the bank's names.
    """
    from acetate.pipeline.chain import presets
    from acetate.pipeline.mastering import resolve_preset

    try:
        bank = presets.load_bank(job.presets.get("bank"))
    except (OSError, ValueError) as exc:
        raise JobError(f"presets.bank: cannot load {job.presets.get('bank')}: {exc}") from None
    if job.presets.get("preset"):
        try:
            job.presets["preset"] = resolve_preset(bank, job.presets["preset"])
        except ValueError as exc:
            raise JobError(f"presets.preset: {exc}") from None
    return bank


def apply_overrides(job: Job, *, input: str | None = None, out: str | None = None, strict: bool | None = None) -> Job:
    """A copy of ``job`` with the command line's overrides applied.

    ``input`` is a manifest (``.csv`` / ``.parquet``) or a folder / glob / file.
    """
    j = copy.deepcopy(job)
    if input is not None:
        if input.lower().endswith((".csv", ".parquet", ".pq")):
            j.inputs = {"manifest": input}
        else:
            j.inputs = {"paths": [input]}
    if out is not None:
        j.output = out
    if strict is not None:
        j.options["strict"] = bool(strict)
    return j


def _opt(v: Any) -> str | None:
    """A manifest cell as text (numbers as written); None for empty, null or NaN.

    Raises TypeError (named by :func:`read_manifest` with its row and column) for a
    value that is no text: bytes, lists, structs or booleans of a Parquet file.
    """
    if v is None:
        return None
    if isinstance(v, float) and v != v:  # NaN from Parquet/pandas-written files
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise TypeError(f"a {type(v).__name__}, not text")
    s = str(v).strip()
    return s or None


def read_table_file(
    path: str | os.PathLike, columns: Sequence[str], what: str = "manifest"
) -> tuple[list[str], list[tuple[int, Mapping[str, Any]]]]:
    """The column names and ``(line or row number, row)`` pairs of a CSV or Parquet table file.

    The one reader of the tables a user hands Acetate (track manifests, learning's pairs
    manifests). A CSV is UTF-8 text (a byte-order mark allowed; UTF-16 with its byte-order
    mark is read too); of a Parquet file only ``columns`` are read (others, of any type or
    named twice, are nobody's business). Raises :class:`JobError` naming the file and line
    for a missing or non-regular file, text that is not UTF-8, a NUL byte, broken CSV
    quoting, or a file that is not Parquet.
    """
    import codecs
    import io

    from acetate.pipeline.io.files import input_problem

    p = os.fspath(path)
    if not os.path.exists(p):
        raise JobError(f"no such {what}: {p}")
    problem = input_problem(p)
    if problem is not None:
        raise JobError(f"{what} {problem}")
    numbered: list[tuple[int, Mapping[str, Any]]] = []
    if p.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        try:  # the columns asked for only
            pf = pq.ParquetFile(p)
            cols = list(pf.schema_arrow.names)
            table = pf.read(columns=[c for c in columns if cols.count(c) == 1])
            numbered = [(i + 1, r) for i, r in enumerate(table.to_pylist())]
        except Exception as exc:  # pyarrow: ArrowInvalid, OSError, ArrowNotImplementedError, values Python cannot hold
            msg = error_message(exc)[:300]
            raise JobError(f"{what} {p} is not a readable Parquet file: {msg}") from None
    else:
        with open(p, "rb") as fh:
            data = fh.read()
        codec = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise JobError(
                f"{what} {p} line {line}: not {codec.upper().replace('-SIG', '')} text (byte 0x{data[exc.start]:02x}); save it as UTF-8 CSV"
            ) from None
        if "\0" in text:
            line = text.count("\n", 0, text.index("\0")) + 1
            raise JobError(
                f"{what} {p} line {line}: a NUL byte (a binary file, or UTF-16 without its byte-order mark?); save it as UTF-8 CSV"
            )
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            cols = list(reader.fieldnames or [])
            for r in reader:
                numbered.append((reader.line_num, r))
        except csv.Error as exc:
            raise JobError(f"{what} {p} line {reader.line_num}: not valid CSV: {exc}") from None
    return cols, numbered


def read_manifest(path: str | os.PathLike) -> list[dict[str, str | None]]:
    """Rows of a CSV or Parquet manifest (known columns only; others are ignored).

    Paths are made absolute against the manifest's folder.  A CSV manifest is
    UTF-8 text (a byte-order mark allowed; UTF-16 with its byte-order mark is
    read too).  Raises :class:`JobError` naming an unreadable file (not a regular
    file, not UTF-8, a NUL byte, broken CSV quoting, not Parquet) with its line,
    a missing required column, a column given twice, a cell that is not text, an
    empty ``track_id`` / ``path`` (by row), a NUL in an id or path, or a
    duplicate ``track_id``.
    """
    p = os.fspath(path)
    cols, numbered = read_table_file(p, MANIFEST_COLUMNS)
    dup = next((c for i, c in enumerate(cols) if c in cols[:i]), None)
    if dup is not None and dup in MANIFEST_COLUMNS:
        raise JobError(f"manifest {p} has the column {dup!r} twice")
    for req in ("track_id", "path"):
        if req not in cols:
            raise JobError(f"manifest {p} lacks the required column {req!r} (has {cols})")
    base = Path(p).resolve().parent
    rows, seen = [], set()
    for line, r in numbered:
        row = {}
        for c in MANIFEST_COLUMNS:
            try:
                row[c] = _opt(r.get(c))
            except TypeError as exc:
                raise JobError(f"manifest {p} row {line}: {c} must be text, got {exc}") from None
        if not row["track_id"]:
            raise JobError(f"manifest {p} row {line}: empty track_id")
        if not row["path"]:
            raise JobError(f"manifest {p} row {line}: empty path for track {row['track_id']!r}")
        for c in ("track_id", "path"):
            if "\0" in row[c]:
                raise JobError(f"manifest {p} row {line}: a NUL character in {c} {row[c]!r}")
        if row["track_id"] in seen:
            raise JobError(f"manifest {p} row {line}: duplicate track_id {row['track_id']!r}")
        seen.add(row["track_id"])
        if not os.path.isabs(row["path"]):
            row["path"] = str(base / row["path"])
        rows.append(row)
    return rows


def _inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies in ``folder`` (or is it), links resolved."""
    p, f = os.path.realpath(os.path.abspath(path)), os.path.realpath(os.path.abspath(folder))
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


def _rows_from_paths(
    paths: list[str], *, exclude: Sequence[str] = (), known: Mapping[str, str] | None = None
) -> list[dict[str, str | None]]:
    """Tracks of folders, globs and files: ids from the path without its extension.

    A folder's files are named by their path inside it (``a/b.wav`` -> ``a__b``), a
    glob's or a lone file's by its stem. Where two files would get one id (``song.wav``
    beside ``song.flac``, or ``d1/song.wav`` and ``d2/song.flac`` given as files), each
    keeps its extension and, if that is not enough, the folders that tell them apart
    (``song.wav``, ``song.flac``; ``d1__song.wav``, ``d2__song.wav``), so the ids depend
    on the files alone, and no input is refused or shadowed (``known``, path -> id, holds the
    ids earlier runs gave: a file keeps its id, and only a newcomer that meets it is renamed,
    so adding ``song.flac`` beside last night's ``song.wav`` does not re-id ``song``); ids that still meet
    (``x/y.wav`` beside ``x__y.wav``) get 8 hex digits of their path's hash. A file
    listed twice (by the same resolved path) is one track. Files under the folders of
    ``exclude`` (acetate's own folders of the output root, when it lies inside an input
    folder) are never inputs: a rerun does not master its own masters.
    """
    items: list[tuple[str, str, str]] = []  # (file, id, id with the extension)
    seen_paths: set[str] = set()
    for entry in paths:
        if any(ch in entry for ch in "*?["):
            found = sorted(f for f in globmod.glob(entry, recursive=True) if not os.path.isdir(f))
            got = [(f, Path(f).stem, Path(f).name) for f in found]
        elif os.path.isdir(entry):
            root = Path(entry)
            got = []
            for f in audio.list_audio([entry]):
                rel = Path(f).relative_to(root)
                got.append((f, "__".join(rel.with_suffix("").parts), "__".join(rel.parts)))
        elif os.path.exists(entry) or os.path.islink(entry):
            got = [(entry, Path(entry).stem, Path(entry).name)]
        else:
            raise JobError(f"input {entry!r} is not a file, folder or glob that matches anything")
        for f, tid, full in got:
            if any(_inside(f, e) for e in exclude):
                continue
            key = os.path.realpath(f) if os.path.exists(f) else os.path.abspath(f)
            if key in seen_paths:
                continue
            seen_paths.add(key)
            items.append((f, tid, full))
    known = dict(known or {})
    kept: list[str | None] = []  # ids earlier runs gave these files (each id to one file only)
    for f, _, _ in items:
        k = known.get(os.path.abspath(f))
        kept.append(k if isinstance(k, str) and k not in kept else None)
    taken = {k for k in kept if k is not None}
    by_id: dict[str, list[int]] = {}
    for i, (_, tid, _) in enumerate(items):
        if kept[i] is None:
            by_id.setdefault(tid, []).append(i)
    ids = [kept[i] if kept[i] is not None else tid for i, (_, tid, _) in enumerate(items)]
    for tid, members in by_id.items():
        if len(members) < 2 and tid not in taken:
            continue
        fulls = [items[i][2] for i in members]
        if len(set(fulls)) < len(fulls):  # the same name in different folders: the folders too
            absp = [os.path.abspath(items[i][0]) for i in members]
            common = os.path.commonpath([os.path.dirname(a) for a in absp])
            fulls = ["__".join(Path(os.path.relpath(a, common)).parts) for a in absp]
        for i, full in zip(members, fulls):
            ids[i] = full
    counts: dict[str, int] = {}
    for tid in ids:
        counts[tid] = counts.get(tid, 0) + 1
    for i, tid in enumerate(ids):  # still the same ('x/y.wav' beside 'x__y.wav'): the path's hash decides
        if counts[tid] > 1 and kept[i] is None:
            h = hashlib.blake2b(os.path.abspath(items[i][0]).encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
            ids[i] = f"{tid}-{h}"
    dup: dict[str, int] = {}
    for i, tid in enumerate(ids):
        if tid in dup:  # pragma: no cover - distinct paths, equal 32-bit hashes
            raise JobError(f"two input files map to track_id {tid!r}: {items[dup[tid]][0]} and {items[i][0]}; use a manifest")
        dup[tid] = i
    return [{c: None for c in MANIFEST_COLUMNS} | {"track_id": tid, "path": os.path.abspath(f)} for (f, _, _), tid in zip(items, ids)]


def resolve_tracks(job: Job) -> tuple[list[TrackSpec], bool]:
    """The job's tracks, and whether album mode is on.

    A ``demo`` input writes the built-in catalogue to ``OUT/demo-input`` first
    (kept between runs).  A manifest row's ``target`` may name several targets
    separated by ``;``.
    """
    inputs = job.inputs
    if inputs.get("demo"):
        from acetate.pipeline.catalogue import demo

        d = inputs["demo"]
        manifest = demo.make_catalogue(
            Path(job.output) / "demo-input",
            seconds=float(d["seconds"]),
            per_style=int(d["per_style"]),
            include_bad=bool(d["include_bad"]),
            seed=int(d["seed"]),
        )
        rows = read_manifest(manifest)
    elif inputs.get("manifest"):
        rows = read_manifest(inputs["manifest"])
    elif inputs.get("paths"):
        # acetate's own folders under the output root are never inputs (a rerun must not master
        # its masters); the rest of it may hold the label's music (``--out lib --input lib/album``)
        own = [os.path.join(job.output, d) for d in ("masters", "training", "demo-input", store.STATE_DIR)]
        known = store.read_json(track_ids_path(job))
        rows = _rows_from_paths(inputs["paths"], exclude=own, known=known if isinstance(known, dict) else None)
    else:
        raise JobError("the job has no inputs: give inputs.manifest, inputs.paths or inputs.demo (or --input)")

    bank = check_job(job)
    from acetate.pipeline.mastering import resolve_preset

    specs = []
    for r in rows:
        names = [t.strip() for t in r["target"].split(";")] if r.get("target") else list(job.target)
        try:
            names = list(dict.fromkeys(_target_name(t, job.targets) for t in names))
        except JobError as exc:
            raise JobError(f"track {r['track_id']!r}: {exc}") from None
        if r.get("preset"):
            try:
                r["preset"] = resolve_preset(bank, r["preset"])
            except ValueError as exc:
                raise JobError(f"track {r['track_id']!r}: {exc}") from None
        specs.append(
            TrackSpec(
                track_id=r["track_id"],
                path=r["path"],
                album=r.get("album"),
                artist=r.get("artist"),
                isrc=r.get("isrc"),
                targets=tuple(names),
                preset=r.get("preset"),
                amounts=_check_amounts(r["amounts"], f"track {r['track_id']!r}: amounts") if r.get("amounts") else None,
            )
        )
    try:  # no two tracks may meet in one output file, ledger entry or task key
        store.check_distinct({s.track_id: store.safe_name(s.track_id) for s in specs}, "track")
        store.check_distinct({t: store.safe_name(t) for t in job.targets}, "target")
    except ValueError as exc:
        raise JobError(str(exc)) from None
    has_albums = any(s.album for s in specs)
    album = has_albums if job.album_mode == "auto" else bool(job.album_mode) and has_albums
    return specs, album


def track_ids_path(job: Job) -> str:
    """``OUT/.acetate/track_ids.json``: the id each input file of a folder or glob was given (path -> id)."""
    return os.path.join(job.output, store.STATE_DIR, "track_ids.json")


def record_track_ids(job: Job, specs: Sequence[TrackSpec]) -> None:
    """Remember the ids of a run's folder and glob inputs, so later runs give each file the same id
    (called by the batch, under the output folder's lock)."""
    if not job.inputs.get("paths"):
        return
    known = store.read_json(track_ids_path(job))
    known = known if isinstance(known, dict) else {}
    merged = {**known, **{s.path: s.track_id for s in specs}}
    if merged != known:
        store.write_json(track_ids_path(job), merged)


def config_hash(job: Job) -> str:
    """A short hash of the resolved job settings (inputs and output included)."""
    blob = json.dumps(
        {"settings": job.settings(), "inputs": job.inputs, "output": job.output, "album_mode": job.album_mode, "target": job.target},
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def _check_amounts(value: Any, where: str) -> str:
    """Per-stage amounts (``"eq=0.5,width=0"`` or a mapping) checked and written as a canonical string."""
    from acetate.pipeline.chain import render

    if isinstance(value, Mapping):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    if not isinstance(value, str):
        raise JobError(f"{where} must be STAGE=AMOUNT[,...] or a mapping, got {value!r}")
    try:
        pairs = render.MasterSettings(amounts=render.parse_amounts(value)).amounts
    except ValueError as exc:
        raise JobError(f"{where}: {exc}") from None
    return ",".join(f"{k}={v:g}" for k, v in pairs)
