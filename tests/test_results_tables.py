"""Committed results tables are what their committed JSON rows render to: a table cannot be
edited by hand, or drift from the rows it claims to show."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
RESULTS = ROOT / "docs" / "results"


def vs_official_markdown(module, rows: list[dict]) -> str:
    parity = [row for row in rows if row["kind"] == "parity"]
    medians = [row for row in rows if row["kind"] == "timing median"]
    return module.parity_table(parity) + "\n\n" + module.timing_table(medians)


RENDERERS = {  # results name: (the benchmark that writes it, how it renders its rows)
    "lean_forward": ("lean_forward", lambda module, rows: module.table(rows)),
    "feature_cache": ("feature_cache", lambda module, rows: module.table(rows)),
    "vs_official": ("vs_official", vs_official_markdown),
    "official_parity": ("vs_official", lambda module, rows: module.parity_table(rows)),
}


@pytest.mark.parametrize("name", RENDERERS)
def test_a_committed_table_regenerates_from_its_json(name, monkeypatch):
    benchmark, render = RENDERERS[name]
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    module = importlib.import_module(benchmark)
    rows = json.loads((RESULTS / f"{name}.json").read_text())
    assert render(module, rows) + "\n" == (RESULTS / f"{name}.md").read_text()
    sys.modules.pop(benchmark, None)


def test_a_spread_over_one_seed_says_n_1_and_never_reads_as_zero():
    from vprompt.report import spread, spread_text

    assert spread([0.66]) == "0.660 (n = 1)"
    assert spread([0.5, 0.5, 0.5]) == "0.500 (n = 3, equal)"
    assert spread_text(0.01, 0.0002, 3) == "0.010 ± <0.001"
    assert spread([0.2, 0.22]) == "0.210 ± 0.014"
    assert spread_text(41.234, 0.5, 3, digits=2) == "41.23 ± 0.50"
