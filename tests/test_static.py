"""Static checks in the test run: ruff (lint and format) over the tree, mypy on the kernels and the stage interfaces.

Both tools come with the ``test`` extra; their settings are in ``pyproject.toml``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    return [exe]


def test_ruff_lint():
    p = _run([*_ruff(), "check", "--no-cache", "."], ROOT)
    assert p.returncode == 0, p.stdout + p.stderr


def test_ruff_format():
    p = _run([*_ruff(), "format", "--check", "--no-cache", "."], ROOT)
    assert p.returncode == 0, "run `ruff format .`:\n" + p.stdout + p.stderr


def test_mypy_on_kernels_and_stages(tmp_path):
    """mypy cannot follow the editable install's import hook (python/mypy#13392), so it checks
    a tree of links laid out as the installed package (``acetate/kernels`` -> ``kernels/``)."""
    import importlib.util

    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is not installed: pip install -e '.[test]'")
    pkg = tmp_path / "acetate"
    pkg.mkdir()
    for f in (ROOT / "acetate").glob("*.py"):
        os.symlink(f, pkg / f.name)
    for d in ("kernels", "pipeline", "schemas", "jobs"):
        os.symlink(ROOT / d, pkg / d)
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "-p",
        "acetate.kernels",
        "-m",
        "acetate.pipeline.stages",
    ]
    p = _run(cmd, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
