"""The demo recipe end to end on one task: suite written, every method trained, table and JSON."""

from __future__ import annotations

import json

from vprompt.recipes.demo import DemoConfig, demo_table, run_demo


def test_demo_trains_every_method_and_writes_its_results(tmp_path):
    config = DemoConfig(out=tmp_path, epochs=1, tasks=["digits"])
    rows = run_demo(config, progress=False)
    assert [(r["task"], r["method"]) for r in rows] == [("digits", m) for m in config.methods]
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["chance"] == 0.1 for r in rows)
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    table = demo_table(rows, config)
    assert "| task | linear | vpt-shallow | vpt-deep | chance |" in table
    assert "zoo:fractal-vit (offline zoo weights)" in table and "seed 0" in table
    for method in config.methods:
        assert (tmp_path / "runs" / "digits" / method / "prompt" / "prompt.safetensors").is_file()
