"""Import layering, read from the source with ``ast`` (nothing here imports the modules).

Layers, lowest first:

* ``kernels/`` (``acetate.kernels``): pure array functions on NumPy or CuPy. They
  know nothing of files, formats, presets, jobs or clusters, so they import none of
  the pipeline, the jobs, the schemas, Dask, Arrow, libsndfile or scikit-learn (not
  even lazily inside a function), and CuPy only where it is asked for: inside a
  function, or under ``try:``, never unconditionally when the module is imported;
* ``schemas/`` (``acetate.schemas``): table layouts, below the pipeline that fills them.

Each rule is one :class:`Rule` in :data:`RULES`: the files it covers (glob patterns
relative to the repository root), the modules they must not import, and whether an
import inside a function or a ``try:``/``if`` is allowed. Adding a rule is one line,
for example ``Rule("stages", ("pipeline/chain/render.py",), ("acetate.pipeline.catalogue.batch",))``.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Import(NamedTuple):
    """One module a source file imports."""

    module: str  # absolute dotted name ("acetate.pipeline.chain.render", "cupy", ...)
    line: int
    import_time: bool  # runs unconditionally when the file is imported (not in a def, try or if)


@dataclass(frozen=True)
class Rule:
    """Files matching ``paths`` must not import any of ``forbidden`` (a name or a dotted prefix).

    ``import_time_only``: only imports that run unconditionally when the module is
    imported count; one inside a function, or under ``try:`` or ``if``, is allowed.
    """

    name: str
    paths: tuple[str, ...]
    forbidden: tuple[str, ...]
    import_time_only: bool = False


#: What the kernels must never import, at any level of a file.
KERNEL_FORBIDDEN = (
    "acetate.pipeline",
    "acetate.jobs",
    "acetate.schemas",
    "dask",
    "dask_cuda",
    "distributed",
    "pyarrow",
    "soundfile",
    "sklearn",
)

RULES = (
    Rule("kernels-are-pure", ("kernels/*.py",), KERNEL_FORBIDDEN),
    Rule("kernels-import-cupy-lazily", ("kernels/*.py",), ("cupy", "cupyx"), import_time_only=True),
    Rule("schemas-below-pipeline", ("schemas/*.py",), ("acetate.pipeline",)),
    # the stages and what they are made of know nothing of jobs, Dask, learning or the CLI
    Rule(
        "stages-below-batch",
        ("pipeline/stages.py", "pipeline/chain/*.py", "pipeline/io/*.py"),
        ("acetate.pipeline.catalogue", "acetate.pipeline.learning", "acetate.pipeline.cli", "distributed", "dask"),
    ),
    Rule("io-below-stages", ("pipeline/io/*.py",), ("acetate.pipeline.stages", "acetate.pipeline.chain", "acetate.pipeline.mastering")),
)


def _package_dirs() -> dict[str, str]:
    """Folder -> package, from pyproject.toml's ``[tool.setuptools] package-dir``."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {Path(folder).as_posix(): package for package, folder in mapping.items()}


def _package_of(path: Path) -> str:
    """The dotted package a source file belongs to (for relative imports)."""
    rel = path.resolve().relative_to(ROOT).parent.as_posix()
    dirs = _package_dirs()
    if rel in dirs:
        return dirs[rel]
    parent, _, sub = rel.rpartition("/")
    if parent in dirs and (path.resolve().parent / "__init__.py").exists():  # a subpackage of a mapped folder
        return f"{dirs[parent]}.{sub}"
    raise LookupError(f"{path}: folder {rel!r} is not a package in pyproject.toml")


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    if node.level > len(parts):
        raise ValueError(f"relative import beyond the top package at line {node.lineno}")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def imports(source: str, package: str, filename: str = "<source>") -> Iterator[Import]:
    """Every module ``source`` imports: ``import``/``from ... import`` statements (a
    ``from X import y`` counts as importing ``X`` and ``X.y``, since ``y`` may be a
    submodule), and ``importlib.import_module`` / ``__import__`` calls with a literal name."""
    tree = ast.parse(source, filename)

    def walk(node: ast.AST, import_time: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = import_time and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Try, ast.TryStar, ast.If))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name, child.lineno, inner)
            elif isinstance(child, ast.ImportFrom):
                base = _resolve(child, package)
                yield Import(base, child.lineno, inner)
                for alias in child.names:
                    if alias.name != "*":
                        yield Import(f"{base}.{alias.name}" if base else alias.name, child.lineno, inner)
            elif (
                isinstance(child, ast.Call)
                and child.args
                and isinstance(child.args[0], ast.Constant)
                and isinstance(child.args[0].value, str)
            ):
                f = child.func
                called = f.attr if isinstance(f, ast.Attribute) else (f.id if isinstance(f, ast.Name) else "")
                if called in ("import_module", "__import__"):
                    yield Import(child.args[0].value, child.lineno, inner)
            yield from walk(child, inner)

    yield from walk(tree, True)


def _matches(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(source: str, package: str, rule: Rule, filename: str = "<source>") -> list[str]:
    """``"file:line imports module"`` for each import in ``source`` that ``rule`` forbids."""
    out = []
    for imp in imports(source, package, filename):
        if rule.import_time_only and not imp.import_time:
            continue
        if any(_matches(imp.module, p) for p in rule.forbidden):
            out.append(f"{filename}:{imp.line} imports {imp.module}")
    return list(dict.fromkeys(out))  # in file order, once each


def rule_files(rule: Rule) -> list[Path]:
    return sorted({p for pattern in rule.paths for p in ROOT.glob(pattern)})


def check_rule(rule: Rule) -> list[str]:
    """Violations of ``rule`` over the repository's files (at least one file must match)."""
    files = rule_files(rule)
    assert files, f"rule {rule.name!r}: no file matches {rule.paths}"
    out = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        out += violations(path.read_text(encoding="utf-8"), _package_of(path), rule, rel)
    return out


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_import_layers(rule: Rule):
    bad = check_rule(rule)
    assert not bad, f"layer rule {rule.name!r} broken (forbidden: {', '.join(rule.forbidden)}):\n  " + "\n  ".join(bad)


# ---------------------------------------------------------------- the checker itself


def _names(source: str, rule: Rule, package: str = "acetate.kernels") -> list[str]:
    return sorted(v.split(" imports ")[1] for v in violations(source, package, rule))


def test_checker_finds_forbidden_imports_at_any_level():
    rule = RULES[0]
    src = """
import numpy as np
from . import backend
from .. import pipeline
from acetate.schemas import features
import pyarrow.parquet as pq

def f():
    import soundfile
    from sklearn.cluster import KMeans
    import importlib
    return importlib.import_module("dask.array")

try:
    import distributed
except ImportError:
    pass
"""
    assert _names(src, rule) == [
        "acetate.pipeline",
        "acetate.schemas",
        "acetate.schemas.features",
        "dask.array",
        "distributed",
        "pyarrow.parquet",
        "sklearn.cluster",
        "sklearn.cluster.KMeans",
        "soundfile",
    ]
    assert _names("from . import backend, fir\nimport numpy\nimport dask_ml\n", rule) == []  # a prefix is a whole name


def test_checker_allows_lazy_cupy_only():
    rule = RULES[1]
    lazy = """
def f():
    import cupy
    import cupyx.scipy.signal as s

try:
    import cupy
except ImportError:
    cupy = None

if False:
    import cupy
"""
    assert _names(lazy, rule) == []
    assert _names("import numpy\nimport cupy as cp\n", rule) == ["cupy"]
    assert _names("from cupyx.scipy import ndimage\n", rule) == ["cupyx.scipy", "cupyx.scipy.ndimage"]
    assert _names("class A:\n    import cupy\n", rule) == ["cupy"]  # a class body runs at import


def test_checker_resolves_relative_imports():
    rule = RULES[2]
    assert _names("from ..pipeline import render\n", rule, "acetate.schemas") == ["acetate.pipeline", "acetate.pipeline.render"]
    assert _names("from . import features\n", rule, "acetate.schemas") == []
    assert _package_of(ROOT / "kernels" / "backend.py") == "acetate.kernels"
    assert _package_of(ROOT / "schemas" / "features.py") == "acetate.schemas"
