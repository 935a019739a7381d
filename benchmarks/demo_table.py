"""The demo's table over seeds: ``vprompt demo`` as a user runs it, one fresh process per seed, timed.

Why: one seed's table cannot say whether VPT-deep beats linear beyond noise. Three seeds (each its
own synthetic suite and training seed) give every cell a spread, and each process's wall-clock
checks the promise that the demo at its defaults finishes within 6 minutes on a 2-core CPU without
AMX-BF16 (3 with it); the rows record which CPU ran them.

Full run (the committed table; it also writes the ``vprompt-demo`` presets from seed 0's results)::

    python benchmarks/demo_table.py --records docs/results/demo/runs --out docs/results/demo.json
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _common import (Row, available_cores, base_parser, markdown_table, run_demo_process, setup,
                     write_outputs)
from vprompt.hardware import cpu_has_amx_bf16, cpu_has_avx512_bf16
from vprompt.records import backbone_identity, open_records
from vprompt.report import seed_means, spread
from vprompt.recipes.demo import DEMO_BACKBONE, DEMO_METHODS, DemoConfig, demo_train_config
from vprompt.sweep import learned_settings

PRESETS = Path(__file__).parent.parent / "src" / "vprompt" / "presets" / "vprompt_demo.json"


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
             f"seeds {', '.join(map(str, seeds))} (each its own suite; n = {len(seeds)}); mean ± sample std over seeds.",
             "", "Wall-clock of each demo process: " + ", ".join(f"seed {s} {t:.0f} s" for s, t in seconds.items())
             + f" (longest {max(seconds.values()) / 60:.1f} min), on {rows[0]['cpu']}."]
    gains = [f"- {method} − linear (task mean): "
             f"{spread([a - b for a, b in zip(task_means(rows, method), task_means(rows, 'linear'))])}"
             for method in methods if method != "linear" and "linear" in methods]
    return "\n".join(header) + "\n\n" + text + "\n\n" + "\n".join(gains)


def cpu_description() -> str:
    """Which bf16 hardware the CPU has: the demo's time depends on it (``auto`` trains in bf16 on AMX)."""
    cores = available_cores()
    if cpu_has_amx_bf16():
        return f"a {cores}-core CPU with AMX-BF16"
    return f"a {cores}-core CPU without AMX-BF16" + (" (AVX512-BF16)" if cpu_has_avx512_bf16() else "")


def demo_presets(rows: list[Row]) -> dict:
    """The ``vprompt-demo`` presets: the demo's one setting per method and task, with seed 0's test
    accuracy, written from the results so that the two never drift apart (tests/test_presets.py)."""
    presets = json.loads(PRESETS.read_text())
    train = demo_train_config(DemoConfig())
    seed_rows = [row for row in rows if row["seed"] == 0]
    precisions = ", ".join(sorted({row["precision"] for row in seed_rows})).replace("no", "fp32")
    presets["accuracy"] = (f"test accuracy after {seed_rows[0]['epochs']} epochs on train800val200, seed 0 (n = 1), "
                           f"{precisions}")
    presets["methods"] = {method: {"options": {}, "tasks": {
        row["task"]: {"lr": train.base_lr, "weight_decay": train.weight_decay, **DEMO_METHODS[method],
                      "accuracy": row["test_acc"]} for row in seed_rows if row["method"] == method}}
        for method in dict.fromkeys(row["method"] for row in seed_rows)}
    return presets


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", help="synthetic tasks (default: all, as the demo)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--mixed-precision", default="auto", help="the demo's --mixed-precision")
    parser.add_argument("--records", type=Path,
                        help="folder of run records (docs/results/demo/runs for the committed table; one per CPU "
                             "class, AMX-BF16 or not): a recorded seed is read back, every finished one recorded")
    args = parser.parse_args()
    setup(args)
    if args.quick:
        args.seeds, args.tasks, args.epochs = args.seeds[:1], args.tasks or ["digits"], 2
    records = open_records(args.records, args.mixed_precision)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            def run(seed: int = seed) -> Row:
                seconds, results = run_demo_process(Path(tmp) / f"seed{seed}", args.mixed_precision, seed, args.tasks,
                                                    args.epochs)
                print(f"[demo_table] seed {seed}: {seconds:.0f} s", flush=True)
                return {"rows": [row | {"epochs": args.epochs, "demo_seconds": round(seconds, 1),
                                        "cpu": cpu_description()} for row in results]}

            settings = {"seed": seed, "tasks": args.tasks, "epochs": args.epochs, "mixed_precision": args.mixed_precision,
                        "backbone": backbone_identity(DEMO_BACKBONE), "methods": DEMO_METHODS,
                        "train": learned_settings(demo_train_config(DemoConfig())),
                        "cpu": cpu_description()}  # the demo's time is the point: one kind of CPU per record
            rows += (records.reuse_or_run(settings, run) if records else run())["rows"]
    if records is not None:
        print(records.summary())
    write_outputs(rows, summary_table(rows), args.out, args.quick)
    if args.out and not args.quick and 0 in args.seeds and not args.tasks:
        PRESETS.write_text(json.dumps(demo_presets(rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
