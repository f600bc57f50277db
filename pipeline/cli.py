"""The ``acetate`` command line: thin sub-commands that parse, call and print.

Each sub-command is registered by an ``_add_<name>`` function below and runs a
``_cmd_<name>`` handler; the work itself lives in the pipeline modules.
"""
from __future__ import annotations

import argparse
import sys


# --- sub-commands -----------------------------------------------------------------
# (each _add_* registers one sub-command; keep handlers thin)


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
