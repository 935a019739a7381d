"""The demo's table over seeds: ``vprompt demo`` as a user runs it, one fresh process per seed, timed.

Why: one seed's table cannot say whether VPT-deep beats linear beyond noise. Three seeds (each its
own synthetic suite and training seed) give every cell a spread, and each process's wall-clock
checks the promise that the demo finishes within 12 minutes on 2 cores.

Full run (the committed table)::

    python benchmarks/demo_table.py --out docs/results/demo.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import Row, base_parser, markdown_table, run_demo_process, seed_means, setup, spread, write_outputs
from vprompt.recipes.demo import DEMO_BACKBONE


def task_means(rows: list[Row], method: str) -> list[float]:
    """One mean over the tasks per seed, for the spread over seeds."""
    return seed_means([row for row in rows if row["method"] == method], "test_acc")


def summary_table(rows: list[Row]) -> str:
    """Per task and method, mean ± std over seeds; the task mean; VPT-deep's gain over linear; seconds per seed."""
    methods = list(dict.fromkeys(row["method"] for row in rows))
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    seeds = sorted({row["seed"] for row in rows})
    lines: list[Row] = []
    for task in tasks:
        line: Row = {"task": task, "chance": f"{next(r['chance'] for r in rows if r['task'] == task):.3f}"}
        for method in methods:
            line[method] = spread([r["test_acc"] for r in rows if r["task"] == task and r["method"] == method])
        lines.append(line)
    lines.append({"task": "mean (tasks)", "chance": ""} | {m: spread(task_means(rows, m)) for m in methods})
    text = markdown_table(lines, [(c, lambda r, c=c: str(r.get(c, ""))) for c in ["task", *methods, "chance"]])
    seconds = {s: next(r["demo_seconds"] for r in rows if r["seed"] == s) for s in seeds}
    precisions = ", ".join(sorted({row["precision"] for row in rows}))
    header = [f"`vprompt demo` on {DEMO_BACKBONE.describe()}, {rows[0]['epochs']} epochs, precision {precisions}; "
             f"seeds {', '.join(map(str, seeds))} (each its own suite); mean ± sample std over seeds.",
             "", "Wall-clock of each demo process: " + ", ".join(f"seed {s} {t:.0f} s" for s, t in seconds.items())
             + f" (longest {max(seconds.values()) / 60:.1f} min)."]
    gains = [f"- {method} − linear (task mean): "
             f"{spread([a - b for a, b in zip(task_means(rows, method), task_means(rows, 'linear'))])}"
             for method in methods if method != "linear" and "linear" in methods]
    return "\n".join(header) + "\n\n" + text + "\n\n" + "\n".join(gains)


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", help="synthetic tasks (default: all, as the demo)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--mixed-precision", default="auto", help="the demo's --mixed-precision")
    args = parser.parse_args()
    setup(args)
    if args.quick:
        args.seeds, args.tasks, args.epochs = args.seeds[:1], args.tasks or ["digits"], 2
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            seconds, results = run_demo_process(Path(tmp) / f"seed{seed}", args.mixed_precision, seed, args.tasks,
                                                args.epochs)
            rows += [row | {"epochs": args.epochs, "demo_seconds": round(seconds, 1)} for row in results]
            print(f"[demo_table] seed {seed}: {seconds:.0f} s", flush=True)
    write_outputs(rows, summary_table(rows), args.out, args.quick)


if __name__ == "__main__":
    main()
