"""The ``acetate`` command line: thin sub-commands that parse, call and print.

Each sub-command is registered by an ``_add_<name>`` function below and runs a
``_cmd_<name>`` handler; the work itself lives in the pipeline modules.
"""
from __future__ import annotations

import argparse
import sys


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

    from acetate.pipeline import audio, meter

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
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
