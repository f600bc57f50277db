"""Row validation shared by the dataset schemas' table builders."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa


def checked_rows(
    schema: pa.Schema, rows: Iterable[Mapping[str, Any]], name: str, allowed: Mapping[str, Sequence[Any]] | None = None
) -> list[dict[str, Any]]:
    """``rows`` as dicts over ``schema``'s columns (missing -> None).

    An unknown column, or a value of a column in ``allowed`` outside its values, is a
    :class:`ValueError` naming the dataset, the row and the column.
    """
    names = schema.names
    known = set(names)
    out = []
    for i, r in enumerate(rows):
        unknown = sorted(set(r) - known)
        if unknown:
            raise ValueError(f"{name} row {i}: unknown column {unknown[0]!r}")
        for col, values in (allowed or {}).items():
            if r.get(col) not in values:
                raise ValueError(f"{name} row {i}: {col} must be one of {values}, got {r.get(col)!r}")
        out.append({n: r.get(n) for n in names})
    return out
