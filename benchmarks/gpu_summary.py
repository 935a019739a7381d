"""The one table of ``benchmarks/gpu.sh``: the headline figure of each benchmark it ran, read back
from their JSON files in OUT_DIR, written to OUT_DIR/summary.json and summary.md.

    python benchmarks/gpu_summary.py docs/results/gpu
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from _common import Row, markdown_table


def read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def step_cost_rows(rows: list[Row]) -> list[Row]:
    return [{"benchmark": "step_cost (bf16)", "measured": f"{r['method']} on {r['model']}, batch {r['batch']}",
             "figure": f"{r['step_ms']:.1f} ms/step, {r['step_ratio_vs_backbone']:.2f}× backbone fwd+bwd"}
            for r in rows if r["method"] in ("vpt-deep", "vapt", "full")]


def vs_official_rows(rows: list[Row]) -> list[Row]:
    def memory(row: Row) -> str:
        ratio = row["mem_ratio_vs_official"]
        return "" if ratio is None else f", memory ÷ official {ratio:.2f}"

    return [{"benchmark": "vs_official", "measured": f"{r['settings']}: {r['ours']} vs {r['official']}",
             "figure": f"step ÷ official {r['step_ratio_vs_official']:.2f}" + memory(r)}
            for r in rows if r.get("kind") == "timing median"]


def lean_forward_rows(rows: list[Row]) -> list[Row]:
    def figure(row: Row) -> str:
        memory = f", memory {row['memory_ratio']:.2f}" if "memory_ratio" in row else ""
        return f"time lean ÷ full {row['time_ratio']:.2f}" + memory
    return [{"benchmark": "lean_forward", "measured": f"{r['kind']}: {r['method']} on {r['model']}, batch {r['batch']}",
             "figure": figure(r)} for r in rows]


def data_path_rows(rows: list[Row]) -> list[Row]:
    return [{"benchmark": "data_path", "measured": f"{r['loader']} vs step {r['step']}",
             "figure": f"loader ÷ step images/s {r['loader_over_step']:.1f}"} for r in rows]


def demo_rows(demo: dict[str, Any]) -> list[Row]:
    by_method: dict[str, list[float]] = {}
    for row in demo["rows"]:
        by_method.setdefault(row["method"], []).append(row["test_acc"])
    accuracy = ", ".join(f"{m} {statistics.mean(v):.3f}" for m, v in by_method.items())
    return [{"benchmark": "vprompt demo", "measured": "all tasks, seed 0, end to end",
             "figure": f"{demo['seconds']:.0f} s; mean test acc {accuracy}"}]


def main(out: Path) -> None:
    rows: list[Row] = []
    for name, summarise in (("step_cost_bf16.json", step_cost_rows), ("vs_official.json", vs_official_rows),
                            ("lean_forward.json", lean_forward_rows),
                            ("data_path.json", data_path_rows), ("demo.json", demo_rows)):
        found = read(out / name)
        if found is not None:
            rows += summarise(found)
    table = markdown_table(rows, [("benchmark", lambda r: r["benchmark"]), ("measured", lambda r: r["measured"]),
                                  ("figure", lambda r: r["figure"])])
    print(table)
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "summary.md").write_text(table + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
