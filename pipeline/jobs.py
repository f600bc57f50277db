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
    formats: [wav24]              # see acetate.pipeline.audio.FORMATS
    presets:
      bank: null                  # a preset bank file, or null for the built-in presets
      preset: null                # force this preset for every track
      intensity: medium           # low | medium | high (how far the chain moves a track)
    album_mode: auto              # auto (on when the inputs name albums) | true | false
    options:
      device: auto                # auto | cpu | gpu (gpu: tasks need a worker with resource GPU)
      strict: false               # exit non-zero when any track failed
      retries: 2                  # how often Dask re-runs a task whose worker died
      max_in_flight: null         # tasks queued at once (default 2 x worker threads)
      progress: true              # progress bar on stderr
      verify: true                # fingerprint the masters too (features stage "output")
    training:                     # mode training-data only: variants per track (acetate.pipeline.training)
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
from typing import Any, Mapping

import yaml

from acetate.pipeline import audio

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
    "builtin_job_path",
    "config_hash",
]

MODES = ("master", "analyze", "training-data")

#: Tolerance (LU) of built-in targets that differ from the default 0.1 LU (what a master promises).
_TOLERANCES: dict[str, float] = {}


def _builtin_targets() -> dict[str, dict[str, float]]:
    from acetate.pipeline.render import TARGETS  # one list of named targets for `acetate master` and jobs

    return {n: {"integrated_lufs": float(l), "true_peak_dbtp": float(tp), "tolerance_lu": _TOLERANCES.get(n, 0.1)} for n, (l, tp) in TARGETS.items()}


#: Delivery targets known by name (a job's ``targets`` may add or redefine them).
BUILTIN_TARGETS: dict[str, dict[str, float]] = _builtin_targets()

MANIFEST_COLUMNS = ("track_id", "path", "album", "artist", "isrc", "target", "preset")

# key -> (type or tuple of types, default); nested dicts are validated by their own tables.
_TOP = {"name", "description", "mode", "inputs", "output", "targets", "target", "formats", "presets", "album_mode", "options", "training"}
_TRAINING = {"presets": None, "intensities": ["low", "medium", "high"], "n_random": None, "seed": 0, "format": "flac24"}
_INPUTS = {"demo", "paths", "manifest"}
_DEMO = {"per_style": 1, "seconds": 20.0, "include_bad": True, "seed": 0}
_TARGET = {"integrated_lufs", "true_peak_dbtp", "tolerance_lu"}
_PRESETS = {"bank": None, "preset": None, "intensity": "medium"}
_OPTIONS = {"device": "auto", "strict": False, "retries": 2, "max_in_flight": None, "progress": True, "verify": True}


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
            "device": self.options["device"],
            "verify": bool(self.options["verify"]),
            "training": dict(self.training) if self.mode == "training-data" else None,
        }


def builtin_job_path(name: str) -> str:
    """Path of a job shipped with Acetate (``demo``, ``nightly``, ...)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    p = resources.files("acetate.jobs") / f"{stem}.yaml"
    if not p.is_file():
        raise JobError(f"no built-in job named {name!r}")
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
    if not os.path.exists(p) and os.sep not in p and not p.endswith((".yml",)):
        p = builtin_job_path(p)
    try:
        with open(p, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise JobError(f"no such job file: {p}") from None
    except yaml.YAMLError as exc:
        raise JobError(f"{p}: not valid YAML: {exc}") from None
    job = parse_job(data if data is not None else {}, default_name=Path(p).stem)
    job.path = str(p)
    return job


def parse_job(data: Mapping[str, Any], *, default_name: str = "job") -> Job:
    """Validate a job given as a mapping (see the module docstring); fills defaults."""
    _unknown(data, _TOP, "the job")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise JobError(f"name must be a non-empty string, got {name!r}")
    mode = data.get("mode", "master")
    if mode not in MODES:
        raise JobError(f"mode must be one of {MODES}, got {mode!r}")

    inputs = dict(data.get("inputs") or {})
    _unknown(inputs, _INPUTS, "inputs")
    given = [k for k in ("demo", "paths", "manifest") if inputs.get(k) not in (None, False)]
    if len(given) > 1:
        raise JobError(f"inputs: give one of demo / paths / manifest, not {given}")
    if "demo" in given:
        demo = inputs["demo"]
        demo = {} if demo is True else dict(demo)
        _unknown(demo, _DEMO, "inputs.demo")
        inputs["demo"] = {**_DEMO, **demo}
    if "paths" in given:
        paths = inputs["paths"]
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(x, str) for x in paths):
            raise JobError(f"inputs.paths must be a list of folders, globs or files, got {inputs['paths']!r}")
        inputs["paths"] = paths
    if "manifest" in given and not isinstance(inputs["manifest"], str):
        raise JobError(f"inputs.manifest must be a path, got {inputs['manifest']!r}")

    output = data.get("output", f"acetate-out/{name}")
    if not isinstance(output, str) or not output:
        raise JobError(f"output must be a path, got {output!r}")

    targets: dict[str, dict[str, float]] = {}
    raw_targets = data.get("targets") or {}
    if isinstance(raw_targets, list):  # a list of built-in names
        raw_targets = {t: None for t in raw_targets}
    if not isinstance(raw_targets, Mapping):
        raise JobError(f"targets must be a mapping of name -> target, got {raw_targets!r}")
    for tname, spec in raw_targets.items():
        base = dict(BUILTIN_TARGETS.get(tname, {}))
        if spec is None:
            if not base:
                raise JobError(f"target {tname!r} is not built in ({sorted(BUILTIN_TARGETS)}); give its integrated_lufs")
            spec = {}
        _unknown(spec, _TARGET, f"targets.{tname}")
        merged = {**{"tolerance_lu": 0.1, "true_peak_dbtp": -1.0}, **base, **spec}
        if "integrated_lufs" not in merged:
            raise JobError(f"targets.{tname}: integrated_lufs is required")
        t = {k: _number(merged[k], f"targets.{tname}.{k}") for k in sorted(_TARGET)}
        if t["true_peak_dbtp"] > 0:
            raise JobError(f"targets.{tname}.true_peak_dbtp must be <= 0, got {t['true_peak_dbtp']}")
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
    for t in default_target:
        if t not in targets:
            if t in BUILTIN_TARGETS:
                targets[t] = dict(BUILTIN_TARGETS[t])
            else:
                raise JobError(f"target {t!r} is neither in targets nor built in ({sorted(BUILTIN_TARGETS)})")

    formats = data.get("formats", ["wav24"])
    formats = [formats] if isinstance(formats, str) else formats
    if not isinstance(formats, list) or not formats:
        raise JobError(f"formats must be a non-empty list, got {data.get('formats')!r}")
    for f in formats:
        if f not in audio.FORMATS:
            raise JobError(f"unknown format {f!r}; choose from {sorted(audio.FORMATS)}")
    exts = [audio.FORMATS[f][0] for f in formats]
    if len(set(exts)) != len(exts):
        raise JobError(f"formats {formats} share a file extension; masters would overwrite each other")

    presets = dict(data.get("presets") or {})
    _unknown(presets, _PRESETS, "presets")
    presets = {**_PRESETS, **presets}
    for k in ("bank", "preset"):
        if presets[k] is not None and not isinstance(presets[k], str):
            raise JobError(f"presets.{k} must be a string or null, got {presets[k]!r}")
    if presets["intensity"] not in ("low", "medium", "high"):
        raise JobError(f"presets.intensity must be low, medium or high, got {presets['intensity']!r}")

    album_mode = data.get("album_mode", "auto")
    if album_mode not in ("auto", True, False):
        raise JobError(f"album_mode must be auto, true or false, got {album_mode!r}")

    options = dict(data.get("options") or {})
    _unknown(options, _OPTIONS, "options")
    options = {**_OPTIONS, **options}
    if options["device"] not in ("auto", "cpu", "gpu"):
        raise JobError(f"options.device must be auto, cpu or gpu, got {options['device']!r}")
    for k in ("strict", "progress", "verify"):
        if not isinstance(options[k], bool):
            raise JobError(f"options.{k} must be true or false, got {options[k]!r}")
    if isinstance(options["retries"], bool) or not isinstance(options["retries"], int) or options["retries"] < 0:
        raise JobError(f"options.retries must be a whole number >= 0, got {options['retries']!r}")
    mif = options["max_in_flight"]
    if mif is not None and (isinstance(mif, bool) or not isinstance(mif, int) or mif < 1):
        raise JobError(f"options.max_in_flight must be a whole number >= 1 or null, got {mif!r}")

    training = dict(data.get("training") or {})
    _unknown(training, _TRAINING, "training")
    training = {**_TRAINING, **training}
    if training["format"] not in ("flac24", "wav24", "wav32f"):
        raise JobError(f"training.format must be flac24, wav24 or wav32f, got {training['format']!r}")
    bad = [i for i in training["intensities"] or [] if i not in ("low", "medium", "high")]
    if bad:
        raise JobError(f"training.intensities: unknown intensity {bad[0]!r}")

    description = data.get("description", "")
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
    if v is None:
        return None
    if isinstance(v, float) and v != v:  # NaN from Parquet/pandas-written files
        return None
    s = str(v).strip()
    return s or None


def read_manifest(path: str | os.PathLike) -> list[dict[str, str | None]]:
    """Rows of a CSV or Parquet manifest (known columns only; others are ignored).

    Paths are made absolute against the manifest's folder.  Raises
    :class:`JobError` naming a missing required column, an empty ``track_id``
    / ``path`` (by row) or a duplicate ``track_id``.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise JobError(f"no such manifest: {p}")
    if p.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        cols = table.column_names
        raw = table.to_pylist()
    else:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            cols = list(reader.fieldnames or [])
            raw = list(reader)
    for req in ("track_id", "path"):
        if req not in cols:
            raise JobError(f"manifest {p} lacks the required column {req!r} (has {cols})")
    base = Path(p).resolve().parent
    rows, seen = [], set()
    for i, r in enumerate(raw):
        row = {c: _opt(r.get(c)) for c in MANIFEST_COLUMNS}
        line = i + 2
        if not row["track_id"]:
            raise JobError(f"manifest {p} row {line}: empty track_id")
        if not row["path"]:
            raise JobError(f"manifest {p} row {line}: empty path for track {row['track_id']!r}")
        if row["track_id"] in seen:
            raise JobError(f"manifest {p} row {line}: duplicate track_id {row['track_id']!r}")
        seen.add(row["track_id"])
        if not os.path.isabs(row["path"]):
            row["path"] = str(base / row["path"])
        rows.append(row)
    return rows


def _rows_from_paths(paths: list[str]) -> list[dict[str, str | None]]:
    rows, seen = [], {}
    for entry in paths:
        if any(ch in entry for ch in "*?["):
            files = sorted(f for f in globmod.glob(entry, recursive=True) if os.path.isfile(f))
            items = [(f, Path(f).stem) for f in files]
        elif os.path.isdir(entry):
            root = Path(entry)
            items = []
            for f in audio.list_audio([entry]):
                rel = Path(f).relative_to(root).with_suffix("")
                items.append((f, "__".join(rel.parts)))
        elif os.path.exists(entry):
            items = [(entry, Path(entry).stem)]
        else:
            raise JobError(f"input {entry!r} is not a file, folder or glob that matches anything")
        for f, tid in items:
            if tid in seen:
                raise JobError(f"two input files map to track_id {tid!r}: {seen[tid]} and {f}; use a manifest")
            seen[tid] = f
            rows.append({c: None for c in MANIFEST_COLUMNS} | {"track_id": tid, "path": str(Path(f).resolve())})
    return rows


def resolve_tracks(job: Job) -> tuple[list[TrackSpec], bool]:
    """The job's tracks, and whether album mode is on.

    A ``demo`` input writes the built-in catalogue to ``OUT/demo-input`` first
    (kept between runs).  A manifest row's ``target`` may name several targets
    separated by ``;``.
    """
    inputs = job.inputs
    if inputs.get("demo"):
        from acetate.pipeline import demo

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
        rows = _rows_from_paths(inputs["paths"])
    else:
        raise JobError("the job has no inputs: give inputs.manifest, inputs.paths or inputs.demo (or --input)")

    specs = []
    for r in rows:
        names = [t.strip() for t in r["target"].split(";")] if r.get("target") else list(job.target)
        for t in names:
            if t not in job.targets:
                if t in BUILTIN_TARGETS:
                    job.targets[t] = dict(BUILTIN_TARGETS[t])
                else:
                    raise JobError(f"track {r['track_id']!r} names target {t!r}, which the job does not define")
        specs.append(
            TrackSpec(
                track_id=r["track_id"],
                path=r["path"],
                album=r.get("album"),
                artist=r.get("artist"),
                isrc=r.get("isrc"),
                targets=tuple(names),
                preset=r.get("preset"),
            )
        )
    has_albums = any(s.album for s in specs)
    album = has_albums if job.album_mode == "auto" else bool(job.album_mode) and has_albums
    return specs, album


def config_hash(job: Job) -> str:
    """A short hash of the resolved job settings (inputs and output included)."""
    blob = json.dumps(
        {"settings": job.settings(), "inputs": job.inputs, "output": job.output, "album_mode": job.album_mode, "target": job.target},
        sort_keys=True,
        default=str,
    )
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()
