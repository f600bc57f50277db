"""The ``acetate`` command line: thin sub-commands that parse, call and print.

Each sub-command is registered by an ``_add_<name>`` function below and runs a
``_cmd_<name>`` handler; the work itself lives in the pipeline modules.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Mapping

# --- sub-commands -----------------------------------------------------------------
# (each _add_* registers one sub-command; keep handlers thin)


def _fmt(v, spec: str = "7.2f") -> str:
    return "   --  " if v is None else format(v, spec)


def _add_loudness(sub) -> None:
    p = sub.add_parser("loudness", help="measure BS.1770-4 / EBU R128 loudness of files")
    p.add_argument("paths", nargs="+", metavar="FILE", help="audio files or folders")
    p.add_argument("--json", action="store_true", help="print one JSON array, one object per file")
    p.add_argument("--oversample", type=int, default=None, help="true-peak oversampling ratio (default: 4x below 96 kHz)")
    p.set_defaults(func=_cmd_loudness)


def _cmd_loudness(args) -> int:
    import json

    from acetate.pipeline.chain import meter
    from acetate.pipeline.io import audio

    reports = [meter.measure_file(p, oversample=args.oversample) for p in audio.list_audio(args.paths)]
    failed = any("error" in r for r in reports)
    if args.json:
        print(json.dumps(reports, indent=2, allow_nan=False))
        return 1 if failed else 0
    print(f"{'integrated':>10} {'LRA':>6} {'TP dBTP':>8} {'SP dBFS':>8} {'M max':>7} {'S max':>7} {'dur s':>8}  path")
    for r in reports:
        if "error" in r:
            print(f"{'error':>10} {'':>6} {'':>8} {'':>8} {'':>7} {'':>7} {'':>8}  {r['path']}: {r['error']}")
            continue
        print(
            f"{_fmt(r['integrated_lufs'], '10.2f')} {_fmt(r['loudness_range_lu'], '6.2f')} {_fmt(r['true_peak_dbtp'], '8.2f')} "
            f"{_fmt(r['sample_peak_dbfs'], '8.2f')} {_fmt(r['momentary_max_lufs'])} {_fmt(r['short_term_max_lufs'])} "
            f"{r['duration_s']:8.2f}  {r['path']}"
        )
    return 1 if failed else 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="fingerprint files (loudness, spectrum, dynamics, stereo) to Parquet")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders")
    p.add_argument("--out", required=True, metavar="FEATURES.parquet", help="Parquet file to write (schema 'features')")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu")
    p.set_defaults(func=_cmd_analyze)


def _cmd_analyze(args) -> int:
    import os

    import pyarrow.parquet as pq

    from acetate.pipeline.chain import analyse
    from acetate.pipeline.io import audio, files, store
    from acetate.schemas.features import features_table

    out = os.path.abspath(args.out)
    try:  # before any work: the Parquet file must be writable where it is asked for
        if os.path.isdir(out):
            raise ValueError(
                f"--out {args.out} is a folder; give the Parquet file's path (for example {os.path.join(args.out, 'features.parquet')})"
            )
        store.check_output_root(os.path.dirname(out), "--out's folder")
    except ValueError as exc:
        print(f"acetate analyze: {exc}", file=sys.stderr)
        return 2
    from acetate.pipeline import stages

    rows = []
    for path in audio.list_audio(args.paths):
        try:
            rows.append(stages.stage("analyse", lambda: analyse.analyze_file(path, device=args.device)))
            print(f"ok      {path}")
        except stages.StageFailure as f:
            rows.append({"path": path, "error": f"{f.error_type}: {f.message}"})
            print(f"FAILED  {path}: {f.message}")
    table = features_table(rows)
    files.atomic_write(out, lambda tmp: pq.write_table(table, tmp))  # a crash never leaves half a file
    print(f"wrote {table.num_rows} rows to {out}")
    return 1 if any("error" in r for r in rows) else 0


def _lower(v: str) -> str:
    return v.strip().lower()


def _add_master(sub) -> None:
    from acetate.pipeline.chain.render import TARGETS
    from acetate.pipeline.io.audio import FORMATS

    targets = ", ".join(f"{n} ({lufs:g} LUFS, {c:g} dBTP)" for n, (lufs, c) in TARGETS.items())
    formats = ", ".join(FORMATS)
    p = sub.add_parser(
        "master",
        help="master tracks or folders to delivery formats",
        description="Names of targets, presets and formats are matched without regard to case.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (every audio file inside)")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: DIR/<input stem>.<ext> per format (inputs whose stems meet get their extension, then a hash, added)",
    )
    p.add_argument(
        "--target", default="streaming", metavar="NAME|LUFS", help=f"loudness target: {targets}, or a number in LUFS (default streaming)"
    )
    p.add_argument(
        "--ceiling",
        type=float,
        default=None,
        metavar="DBTP",
        help="true-peak ceiling in dBTP (default: the named target's, or the preset's for a number)",
    )
    p.add_argument(
        "--preset",
        default="auto",
        metavar="auto|NAME",
        help="preset name (see `acetate presets`), or auto to pick the nearest from the bank (default auto)",
    )
    p.add_argument("--bank", default=None, metavar="PATH", help="preset bank file (default: the built-in bank)")
    p.add_argument(
        "--intensity",
        type=_lower,
        choices=("low", "medium", "high"),
        default="medium",
        help="how far the chain moves a track (default medium)",
    )
    p.add_argument(
        "--format", default="wav24", metavar="FMT[,FMT...]", help=f"delivery formats, comma-separated: {formats} (default wav24)"
    )
    p.add_argument("--rate", type=int, default=None, metavar="HZ", help="delivery sample rate (default: the source's)")
    p.add_argument(
        "--device", type=_lower, choices=("cpu", "gpu", "auto"), default="cpu", help="array backend for the kernels (default cpu)"
    )
    p.add_argument("--allow-unsafe-levels", action="store_true", help="accept a target louder than -5 LUFS or a ceiling above 0 dBTP")
    p.add_argument(
        "--max-limiting",
        type=float,
        default=None,
        metavar="DB",
        help="most limiter gain reduction allowed to reach the target (default: the preset's); beyond it the chain's compression is pushed first",
    )
    p.add_argument(
        "--reference",
        action="append",
        default=None,
        metavar="REF[:WEIGHT]",
        help="master toward this reference track's spectrum instead of a preset (repeatable, weights default 1)",
    )
    p.add_argument(
        "--amount",
        default=None,
        metavar="STAGE=A[,...]",
        help="per-stage amounts 0..1 replacing the intensity: eq, dynamics, width, limiter (e.g. eq=0.5,width=0)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (none is drawn where stderr is not a terminal)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the inputs that would be mastered or refused, and the files each would write; decodes nothing",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help=f"print one JSON array, one object per input (also written to DIR/{MASTER_REPORT}; summary on stderr)",
    )
    p.set_defaults(func=_cmd_master)


def _master_plan(args):
    """Everything `acetate master` checks before decoding anything: levels, formats, preset, --out."""
    from acetate.pipeline import mastering
    from acetate.pipeline.chain import levels, presets, render
    from acetate.pipeline.io import audio, store

    target = args.target.strip().lower() if isinstance(args.target, str) else args.target
    target, ceiling = render.resolve_target(target, args.ceiling)
    levels.check_levels(target, ceiling, allow_unsafe=args.allow_unsafe_levels)
    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()]
    unknown = [f for f in formats if f not in audio.FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown format(s) {unknown or [args.format]}; choose from {', '.join(audio.FORMATS)}")
    exts = [audio.FORMATS[f][0] for f in formats]
    if len(set(exts)) != len(exts):
        raise ValueError(f"formats {formats} share a file extension; one master would overwrite the other")
    try:
        bank = presets.load_bank(args.bank)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load the preset bank {args.bank}: {exc}") from None
    amounts = render.parse_amounts(getattr(args, "amount", None))
    if getattr(args, "reference", None):
        if args.preset.strip().lower() != "auto" or args.bank:
            raise ValueError("--reference replaces the preset: give it without --preset or --bank")
        bank = _reference_bank(args.reference)
        preset = bank.names[0]
    else:
        preset = mastering.resolve_preset(bank, args.preset)
    out = store.check_output_root(args.out)
    settings = render.MasterSettings(
        target_lufs=target,
        ceiling_dbtp=ceiling,
        intensity=args.intensity,
        output_rate=args.rate,
        device=args.device,
        max_limiting_db=args.max_limiting,
        amounts=amounts,
    )
    return settings, formats, bank, preset, out


def _reference_bank(specs: list[str], max_db: float | None = None) -> Any:
    """A one-preset bank holding the reference preset of ``specs`` (``REF[:WEIGHT]``), forced by name;
    ``max_db`` bounds its EQ (default :data:`acetate.pipeline.chain.reference.MAX_REFERENCE_DB`)."""
    from acetate.pipeline.chain import presets, reference

    try:
        preset, record = reference.reference_from_files(specs, max_db=max_db or reference.MAX_REFERENCE_DB)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot use the reference(s) {specs}: {exc}") from None
    proto = presets.selection_vector(reference.measure_reference(record[0]["path"]))
    meta = {"name": "references", "kind": "reference", "references": record, "selection": {"features": list(presets.SELECTION_FEATURES)}}
    return presets.Bank([preset], proto[None, :], [proto[None, :]], meta)


def _cmd_master(args) -> int:
    import os

    from acetate.pipeline import mastering
    from acetate.pipeline.io import audio

    try:
        settings, formats, bank, preset, out = _master_plan(args)
    except ValueError as exc:
        print(f"acetate master: {exc}", file=sys.stderr)
        return 2
    from acetate.pipeline.catalogue.jobs import _inside

    # An output folder inside an input folder: its masters are not inputs (a folder's files only;
    # an output folder that holds the inputs' folder leaves them alone).
    nested = [d for d in args.inputs if os.path.isdir(d) and _inside(str(out), d) and not _inside(d, str(out))]
    paths, seen = [], set()
    for p in audio.list_audio(args.inputs):
        real = os.path.realpath(p)
        if real in seen:  # one file named twice is one input
            continue
        seen.add(real)
        paths.append(p)
    ours = [p for p in paths if nested and _inside(p, str(out))]
    if ours:
        print(f"acetate master: left out {len(ours)} file(s) under the output folder {out}", file=sys.stderr)
        paths = [p for p in paths if p not in ours]
    stems = mastering.output_stems(paths)
    clobbered = [p for p in paths for f in formats if os.path.realpath(out / f"{stems[p]}.{audio.FORMATS[f][0]}") == os.path.realpath(p)]
    if clobbered:
        print(f"acetate master: the master of {clobbered[0]} would overwrite it; choose another --out", file=sys.stderr)
        return 2
    if args.dry_run:
        return _master_dry_run(stems, out, formats, args.json)
    rows = _master_all(args, stems, out, settings, formats, preset, bank, skipped=len(ours))
    return 1 if any("error" in r for r in rows) else 0


def _master_dry_run(stems: dict[str, str], out: Any, formats: list[str], as_json: bool) -> int:
    """``acetate master --dry-run``: per input, master (and which files it would write or replace) or
    refuse (what decoding would refuse from the header), and the audio in all; nothing decoded or written."""
    import json
    import os

    from acetate.pipeline.io import audio

    rows = []
    for path, stem in stems.items():
        files_out = [os.path.join(out, f"{stem}.{audio.FORMATS[f][0]}") for f in formats]
        try:
            head = audio.check_header(path)
        except audio.AudioError as exc:
            rows.append({"path": path, "action": "refuse", "reason": str(exc), "duration_s": None, "outputs": []})
            continue
        replaced = [f for f in files_out if os.path.exists(f)]
        reason = f"replaces {len(replaced)} existing file(s)" if replaced else "new"
        rows.append({"path": path, "action": "master", "reason": reason, "duration_s": round(head.duration_s, 3), "outputs": files_out})
    audio_s = sum(r["duration_s"] or 0.0 for r in rows)
    n_ok = sum(r["action"] == "master" for r in rows)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        dur = "" if r["duration_s"] is None else f"  {r['duration_s']:.1f} s"
        print(f"{r['action']:<7} {r['path']}{dur}  {r['reason']}" + "".join(f"\n          -> {o}" for o in r["outputs"]))
    print(f"dry run: {len(rows)} inputs: {n_ok} to master, {len(rows) - n_ok} refused; {audio_s:.0f} s of audio; nothing was written")
    return 0


def _master_lines(row: dict[str, Any]) -> list[str]:
    """The per-input lines of ``acetate master``."""
    path = row["path"]
    if "error" in row:
        return [f"FAILED  {path}  [{row['stage']}] {row['error']}"]
    i = row["input"]
    lines = [f"ok      {path}  preset={row['preset']}  input {_fmt(i['integrated_lufs'], '.1f')} LUFS"]
    for o in row["outputs"]:  # each delivered file as decoded
        flags = [w for w, key in (("target missed", "target_met"), ("ceiling missed", "ceiling_met")) if o.get(key) is False]
        flag = f"  ({', '.join(flags)}: see notes)" if flags else ""
        lines.append(f"          {o['path']}  {_fmt(o['integrated_lufs'], '.2f')} LUFS, TP {_fmt(o['true_peak_dbtp'], '.2f')} dBTP{flag}")
    lines += [f"          note: {note}" for note in row.get("notes") or []]
    return lines


#: The record of an ``acetate master`` run, written into its output folder: one object per input.
MASTER_REPORT = "acetate-master.json"


def _master_all(args, stems: dict[str, str], out: Any, settings: Any, formats: list[str], preset: str, bank: Any, *, skipped: int) -> list:
    """Master every input in turn with a progress bar, warnings where they happen, and the end summary."""
    import json
    import os
    import time
    from pathlib import Path

    from acetate.pipeline import console, mastering
    from acetate.pipeline.io import audio, files

    rows: list[dict[str, Any]] = []
    audio_s, t0 = 0.0, time.perf_counter()
    say = sys.stderr if args.json else sys.stdout
    bar = console.progress_bar(len(stems), enabled=not args.no_progress)
    try:
        for path in stems:
            bar.set_postfix_str(os.path.basename(path)[-40:], refresh=False)
            row = mastering.master_file(path, out, settings, formats=formats, preset=preset, bank=bank, stem=stems[path])
            row.pop("trace", None)
            rows.append(row)
            if "error" not in row:
                try:
                    audio_s += audio.info(path).duration_s
                except audio.AudioError:
                    pass  # decoded by another library than the header reader: counted as 0 s
            warn = console.low_confidence_warning(path, row.get("selection"))
            if warn:
                bar.write(warn, file=sys.stderr)
            if not args.json:
                for line in _master_lines(row):
                    bar.write(line, file=sys.stdout)
            bar.update(1)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    text = json.dumps(rows, indent=2, allow_nan=False, default=float)
    report = (
        files.atomic_write(os.path.join(out, MASTER_REPORT), lambda tmp: Path(tmp).write_text(text, encoding="utf-8")) if rows else None
    )
    if args.json:
        print(text)
    done = [r for r in rows if "error" not in r]
    met = (sum(r.get("target_met") is not False for r in done), sum(r.get("ceiling_met") is not False for r in done))
    for line in console.summary_lines(
        done=len(done),
        failed=len(rows) - len(done),
        skipped=skipped,
        audio_s=audio_s,
        wall_s=wall,
        met=met,
        triage=console.master_triage(rows),
        report=report,
    ):
        print(line, file=say)
    return rows


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a catalogue job (jobs/*.yaml) on a Dask cluster")
    p.add_argument("job", metavar="JOB.yaml", help="job file, or a built-in job's name (demo, nightly, remaster-catalogue)")
    p.add_argument(
        "--cluster", metavar="CLUSTER.yaml", default=None, help="where to run (default: ./cluster.yaml if present, else a local cluster)"
    )
    p.add_argument(
        "--input", metavar="DIR|MANIFEST", default=None, help="override the job's inputs: a folder, glob, file or a CSV/Parquet manifest"
    )
    p.add_argument("--out", metavar="DIR", default=None, help="override the job's output root")
    p.add_argument(
        "--workers", type=int, metavar="N", default=None, help="local workers / GPUs / Slurm jobs to start, or workers to wait for"
    )
    p.add_argument(
        "--device",
        type=_lower,
        choices=("cpu", "gpu", "auto"),
        default=None,
        help="override options.device; gpu (or auto, where CuPy is installed) on a local cluster starts one worker per visible GPU",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 when any track failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not build the review report OUT/report/ at the end")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be done, skipped, redone (and why) or refused, with counts and the time it would take; decodes and writes nothing",
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON (one row per track)")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    import contextlib
    import os

    from acetate.pipeline.catalogue import batch, cluster, jobs
    from acetate.pipeline.io import store

    if args.json and not args.dry_run:
        print("acetate run: --json goes with --dry-run", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        try:
            job = jobs.apply_overrides(jobs.load_job(args.job), input=args.input, out=args.out, strict=True if args.strict else None)
            if args.device is not None:
                job.options["device"] = args.device
            if args.dry_run:
                return _dry_run(job, args.json)
            # Refused before a cluster starts: an output that cannot be written, or one another run holds.
            run_id = batch.new_run_id()
            stack.enter_context(store.output_lock(store.check_output_root(job.output, "--out" if args.out else "output"), run_id=run_id))
            jobs.check_job(job)
            cfg = cluster.load_cluster_config(args.cluster or ("cluster.yaml" if os.path.isfile("cluster.yaml") else None))
            handle = stack.enter_context(cluster.connect(cfg, workers=args.workers, device=job.options["device"]))
        except (jobs.JobError, cluster.ClusterError, store.OutputBusy, ValueError, OSError) as exc:
            print(f"acetate run: {exc}", file=sys.stderr)
            return 2
        print(f"acetate run: job {job.name!r} ({job.mode}) on {handle.description}", flush=True)
        print(f"dashboard: {_dashboard_line(handle)}", flush=True)
        try:
            result = batch.run_job(
                job,
                handle.client,
                run_id=run_id,
                progress=False if args.no_progress else None,
                cluster_desc=f"{handle.kind} {handle.scheduler_address}",
            )
        except KeyboardInterrupt:
            print("acetate run: interrupted; run the same command again to finish the catalogue", file=sys.stderr)
            return 130
        except jobs.JobError as exc:
            print(f"acetate run: {exc}", file=sys.stderr)
            return 2
    print(
        f"{result.tracks} tracks: {result.done} done, {result.skipped} already done, {result.failed} failed; "
        f"{result.audio_seconds:.0f} s of audio in {result.wall_seconds:.1f} s ({result.x_realtime:.1f}x realtime)"
    )
    for f in result.failures[:20]:
        print(f"failed  {f['track_id']}  [{f['stage']}] {f['error_type']}: {f['message']}")
    if len(result.failures) > 20:
        print(f"... and {len(result.failures) - 20} more (see the failures dataset)")
    out = result.out_root
    for line in _low_confidence_lines(out, result.run_id):
        print(line, file=sys.stderr)
    if job.mode == "master":
        print(f"masters: {os.path.join(out, 'masters')}")
    print(f"Parquet: {out}/{{features,presets,loudness,failures,runs}}  (run {result.run_id})")
    if job.mode == "master" and not args.no_report:
        _report_summary(out)
    return result.exit_code(job.options["strict"])


def _low_confidence_lines(out: str, run_id: str, most: int = 20) -> list[str]:
    """Warning lines for the tracks of run ``run_id`` whose selection fell below the bank's
    ``min_confidence`` (rendered with the gentle fallback), from its ``presets`` rows."""
    from acetate.pipeline import console
    from acetate.pipeline.chain.presets import GENTLE
    from acetate.pipeline.io import store

    try:
        rows = store.read_dataset(out, "presets").to_pylist()
    except (OSError, ValueError):
        return []
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["run_id"] == run_id and not r["forced"] and r["preset"] == GENTLE.name and r["nearest"] != GENTLE.name:
            seen.setdefault(
                r["track_id"], {"low_confidence": True, "confidence": r["confidence"], "nearest": r["nearest"], "distance": r["distance"]}
            )
    lines = [w for tid, sel in list(seen.items())[:most] if (w := console.low_confidence_warning(tid, sel))]
    if len(seen) > most:
        lines.append(f"warning: ... and {len(seen) - most} more low-confidence selections (see the presets dataset and the report)")
    return lines


def _dry_run(job: Any, as_json: bool) -> int:
    """``acetate run --dry-run``: the plan of :func:`acetate.pipeline.catalogue.plan.plan_job`."""
    from acetate.pipeline.catalogue import jobs, plan

    jobs.check_job(job)
    p = plan.plan_job(job)
    if as_json:
        print(plan.plan_json(p))
        return 0
    for r in p.rows:
        dur = "" if r.duration_s is None else f"  {r.duration_s:.1f} s"
        print(f"{r.action:<7} {r.track_id}{dur}  {r.reason}")
    for line in p.summary_lines():
        print(line)
    return 0


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="where an output folder stands: tracks by status and stage, the last run, what a rerun would do")
    p.add_argument("out", metavar="OUT", help="a run's output root")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--no-plan", action="store_true", help="do not dry-run the last run's job (no input is hashed)")
    p.set_defaults(func=_cmd_status)


def _cmd_status(args) -> int:
    import json

    from acetate.pipeline.catalogue import plan

    try:
        st = plan.folder_status(args.out, with_plan=not args.no_plan)
    except (ValueError, OSError) as exc:
        print(f"acetate status: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(st.to_dict(), indent=2, default=str))
    else:
        for line in st.summary_lines():
            print(line)
    return 0


def _report_summary(out: str, top: int = 10, open_it: bool = False) -> int:
    """Build OUT/report/ and print targets met, the three worst triage entries and the report's path."""
    from acetate.pipeline.report import build_report

    try:
        rep = build_report(out, top=top)
    except (OSError, ValueError) as exc:
        print(f"report: not built: {exc}", file=sys.stderr)
        return 1
    done = [t for t in rep.run.tracks if t.status == "done"]
    met = sum(bool(t.target_met) for t in done)
    ceil = sum(bool(t.ceiling_met) for t in done)
    print(f"targets met: {met}/{len(done)}  ceilings met: {ceil}/{len(done)}")
    for e in rep.triage[:3]:
        reason = e.reason if len(e.reason) <= 110 else e.reason[:107] + "..."
        print(f"check  {e.track_id}  {reason}")
    print(f"report: {rep.index}  ({len(rep.rebuilt)} of {rep.tracks} track page(s) rebuilt)")
    if open_it:
        import pathlib
        import webbrowser

        webbrowser.open(pathlib.Path(rep.index).resolve().as_uri())
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="build the static review site OUT/report/index.html of a run")
    p.add_argument("out", metavar="OUT", help="a run's output root (finished or partly finished)")
    p.add_argument("--open", action="store_true", help="open the report in a browser")
    p.add_argument("--top", type=int, default=10, metavar="N", help="tracks in the triage list (default 10)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    import os

    if not os.path.isdir(args.out):
        print(f"acetate report: no such folder: {args.out}", file=sys.stderr)
        return 2
    if args.top < 0:
        print("acetate report: --top must be 0 or more", file=sys.stderr)
        return 2
    return _report_summary(args.out, args.top, args.open)


def _dashboard_line(handle) -> str:
    """The dashboard's address, only where it can serve: a local cluster's needs bokeh in this environment."""
    import importlib.util

    link = handle.dashboard_link
    if not link:
        return "not available"
    if handle.kind == "local" and importlib.util.find_spec("bokeh") is None:
        return "not available (the dashboard needs bokeh: pip install 'bokeh>=3.1')"
    return link


def _add_presets(sub) -> None:
    p = sub.add_parser("presets", help="list the presets of a bank (default: the built-in bank)")
    p.add_argument("--bank", default=None, metavar="PATH", help="bank file (.parquet or .json)")
    p.add_argument("--json", action="store_true", help="print the bank's presets and metadata as JSON")
    p.add_argument("--export", default=None, metavar="PATH", help="also write the bank to PATH (.parquet or .json)")
    p.set_defaults(func=_cmd_presets)


def _cmd_presets(args) -> int:
    import json

    from acetate.pipeline.chain import presets

    try:
        bank = presets.load_bank(args.bank)
        if args.export:
            presets.save_bank(bank, args.export)
    except (OSError, ValueError) as exc:
        print(f"acetate presets: {exc}", file=sys.stderr)
        return 2
    if args.json:
        meta = {k: v for k, v in bank.meta.items() if k != "selection"}
        print(json.dumps({"bank": meta, "presets": bank.info()}, indent=2, allow_nan=False, default=str))
        return 0
    print(f"bank {bank.name!r} ({bank.meta.get('kind', '?')}): {bank.description}")
    report = bank.meta.get("report")
    if report:
        print(
            f"  learned from {report.get('n_pairs')} pairs, K={report.get('k')}, held-out accuracy {report.get('accuracy')} (chance {report.get('chance')})"
            + "".join(f"\n  warning: {w}" for w in report.get("warnings") or [])
        )
    print(f"{'name':18s} {'EQ':>8} {'for':>6} {'LUFS':>6} {'ceil':>5} {'ratios':>20} {'rows':>5}  description")
    for r in bank.info():
        ratios = "/".join(f"{v:g}" for v in r["ratio"])
        print(
            f"{r['name']:18s} {r['eq_mode']:>8} {r['content']:>6} {r['target_lufs']:6.1f} {r['ceiling_dbtp']:5.1f} {ratios:>20} "
            f"{r['members']:5d}  {r['description']}"
        )
    return 0


def _add_learn(sub) -> None:
    p = sub.add_parser("learn", help="learn a preset bank from mix/master pairs")
    p.add_argument("--pairs", required=True, metavar="MANIFEST", help="CSV or Parquet with mix_path, master_path[, group]")
    p.add_argument("--out", required=True, metavar="BANK", help="bank to write (.parquet, or .json)")
    p.add_argument("--k", type=int, default=None, help="number of presets (default: the lowest held-out transfer error over 1..--k-max)")
    p.add_argument("--k-max", type=int, default=8, help="largest K tried when choosing (default 8)")
    p.add_argument("--test-size", type=float, default=0.25, help="fraction of groups held out for the accuracy estimate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="bank name (default: the manifest's stem)")
    p.add_argument("--max-offset", type=float, default=10.0, metavar="S", help="largest mix/master offset searched, seconds")
    p.add_argument("--json", action="store_true", help="print the training report as JSON")
    p.add_argument(
        "--no-render-check",
        action="store_true",
        help="skip mastering the held-out mixes (the report then has transfer errors of the EQ curves only)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 3 (bank still written) when the learned bank does no better than chance or the default bank",
    )
    p.add_argument(
        "--blend-k",
        type=int,
        default=None,
        metavar="K",
        help="blend the K nearest presets (default: chosen by transfer error among 1 and 3)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="blend temperature, in selection-distance units (default 1)")
    p.set_defaults(func=_cmd_learn)


def _cmd_learn(args) -> int:
    import json

    from acetate.pipeline.chain import presets
    from acetate.pipeline.learning import learn

    progress = None if args.json else print
    try:
        bank, report = learn.learn_from_manifest(
            args.pairs,
            k=args.k,
            k_max=args.k_max,
            test_size=args.test_size,
            seed=args.seed,
            name=args.name,
            max_offset_s=args.max_offset,
            progress=progress,
            render_check=not args.no_render_check,
            blend_k=args.blend_k,
            temperature=args.temperature,
        )
        presets.save_bank(bank, args.out)
    except (OSError, ValueError) as exc:
        print(f"acetate learn: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(_learn_summary(args.out, bank, report))
    for w in report.get("warnings") or []:
        print(f"acetate learn: warning: {w}", file=sys.stderr)
    return 3 if args.strict and report.get("warnings") else 0


def _learn_summary(out: str, bank: Any, report: Mapping[str, Any]) -> str:
    """What ``acetate learn`` says about the bank it wrote: K and why, held-out accuracy beside
    chance, and the held-out errors (EQ transfer; masters vs true masters) against the baselines."""
    model = report.get("model") or {}
    lines = [
        f"wrote {out}: {len(bank)} presets from {report['n_pairs']} pairs ({report['n_groups']} groups)",
        f"K={report['k']} ({report['k_criterion']}); selection {model.get('method')} with a blend of {model.get('blend_k')}",
        f"per preset {report['per_preset']}",
    ]
    if report.get("accuracy") is not None:
        split = report["split"]
        lines.append(
            f"held out {split['test_pairs']} pairs of {split['test_groups']} groups: accuracy {report['accuracy']:.2f} (chance {report['chance']:.2f})"
        )
        tr = report["transfer"]
        lines.append(f"EQ transfer error: learned {tr['learned_db']} dB, default bank {tr['default_db']} dB, no EQ {tr['none_db']} dB")
        r = report.get("rendered")
        if r:
            lines.append(
                f"masters vs true masters (band spectrum, intensity {r['intensity']}): raw mixes {r['raw_db']} dB, "
                f"learned bank {r['learned_db']} dB (ratio {r['ratio']}), default bank {r['default_db']} dB (ratio {r['default_ratio']})"
            )
            for name, row in (r.get("per_preset") or {}).items():
                lines.append(f"  {name}: {row['n']} pairs, raw {row['raw_db']} dB -> learned {row['learned_db']} dB")
    if report["skipped"]:
        lines.append(f"skipped {len(report['skipped'])} pair(s): see the bank's report")
    return "\n".join(lines)


def _add_house(sub) -> None:
    p = sub.add_parser("house", help="a bank of house curves from a folder of a label's released masters")
    p.add_argument("inputs", nargs="+", metavar="FOLDER", help="released masters: folders or files")
    p.add_argument("--out", required=True, metavar="BANK", help="bank to write (.parquet, or .json); use it with --bank")
    p.add_argument("--k", type=int, default=None, help="number of house curves (default: 1, or 2-3 where the folder is varied)")
    p.add_argument("--name", default="house", help="bank and first preset name (default house)")
    p.add_argument("--json", action="store_true", help="print the bank's house report as JSON")
    p.set_defaults(func=_cmd_house)


def _cmd_house(args) -> int:
    import json

    from acetate.pipeline.chain import presets
    from acetate.pipeline.learning import house

    try:
        bank, skipped = house.house_from_folder(args.inputs, name=args.name, k=args.k, progress=None if args.json else print)
        presets.save_bank(bank, args.out)
    except (OSError, ValueError) as exc:
        print(f"acetate house: {exc}", file=sys.stderr)
        return 2
    report = {**bank.meta["house"], "skipped": skipped, "presets": list(bank.names)}
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(f"wrote {args.out}: {len(bank)} house curve(s) from {report['n_masters']} masters ({report['criterion']})")
        for s in skipped:
            print(f"skipped {s['path']}: {s['error']}", file=sys.stderr)
    return 0


def _add_training_data(sub) -> None:
    p = sub.add_parser("training-data", help="render preset/intensity variants of tracks and a Parquet table of what went in and out")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: DIR/training.parquet and DIR/audio/")
    p.add_argument("--bank", default=None, metavar="PATH", help="preset bank (default: the built-in bank)")
    p.add_argument("--presets", default=None, metavar="NAME[,NAME...]", help="presets to render (default: all in the bank)")
    p.add_argument("--intensities", default="low,medium,high", metavar="I[,I...]", help="intensities (default low,medium,high)")
    p.add_argument(
        "--random", type=int, default=None, metavar="N", help="N random (preset, intensity, target) draws per track instead of the grid"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="flac24", choices=("flac24", "wav24", "wav32f"))
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="cpu")
    p.set_defaults(func=_cmd_training_data)


def _cmd_training_data(args) -> int:
    from acetate.pipeline.io import store
    from acetate.pipeline.learning import training

    try:
        store.check_output_root(args.out)
        path = training.generate(
            args.inputs,
            args.out,
            presets=[s.strip() for s in args.presets.split(",") if s.strip()] if args.presets else None,
            intensities=[s.strip() for s in args.intensities.split(",") if s.strip()],
            n_random=args.random,
            seed=args.seed,
            bank=args.bank,
            fmt=args.format,
            device=args.device,
            progress=print,
        )
    except (OSError, ValueError, KeyError) as exc:
        print(f"acetate training-data: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acetate",
        description="Acetate: batch mastering for music catalogues (loudness, fingerprints, presets, masters).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, obj in list(globals().items()):
        if name.startswith("_add_") and callable(obj):
            obj(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    # Small matrix products dominate the kernels' BLAS use; a BLAS thread pool per
    # call costs more than it gains (Dask workers get the same from their nanny).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from acetate.pipeline.catalogue import runtime

    runtime.keep_arrays_in_heap()  # track after track in this process: reuse the large arrays' pages
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
