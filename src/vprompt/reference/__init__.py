"""Published numbers as data: the papers' tables that `vprompt report` puts beside ours."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any


@lru_cache(maxsize=1)
def paper_numbers() -> tuple[dict[str, Any], ...]:
    """Every quoted number: paper, method, benchmark (vtab-1k, fgvc), average (mean of tasks or a
    VTAB group) and value (accuracy in %), plus the derived mean of group means for VTAB-1k."""
    data = json.loads(files(__package__).joinpath("paper_numbers.json").read_text(encoding="utf-8"))
    rows = list(data["rows"])
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for row in rows:
        if row["average"] in ("natural", "specialized", "structured"):
            groups.setdefault((row["paper"], row["method"]), {})[row["average"]] = row["value"]
    for (paper, method), values in groups.items():
        if len(values) == 3:
            rows.append({"paper": paper, "method": method, "benchmark": "vtab-1k", "average": "mean of group means",
                         "value": round(sum(values.values()) / 3, 2), "derived": True})
    return tuple(rows)


def paper_value(method: str, benchmark: str, average: str) -> dict[str, Any] | None:
    """The quoted row for ``method`` on ``benchmark`` under ``average`` (None when not quoted)."""
    return next((r for r in paper_numbers()
                 if (r["method"], r["benchmark"], r["average"]) == (method, benchmark, average)), None)
