"""Is ``--mixed-precision auto`` worth it on this CPU, and is it safe? bf16 autocast against fp32.

1. **Step cost.** Training steps (forward, cross-entropy, backward, SGD step) at bf16 autocast ÷
   the same step at fp32, each on the attention path ``vprompt.train`` takes (on a CPU under
   bf16, timm's explicit matmul-softmax instead of torch's fused kernel), and at bf16 that
   explicit path ÷ the fused kernel; all interleaved in one process: the demo's methods on the demo's backbone
   (``zoo:fractal-vit``, batch 64, as ``vprompt demo`` trains them) and VPT-deep (p = 10) on
   ViT-B/16 at 224², batch 8. Medians of per-round ratios with their interquartile range.
2. **End to end.** ``vprompt demo`` run as a user runs it (a fresh process, writing the synthetic
   suite, training, evaluating) with ``--mixed-precision auto`` and with ``no``, alternately; the
   ratio is wall-clock auto ÷ no. Full run: the whole demo once per precision, then one task
   (``--task``) with three seeds per precision, whose test accuracies say whether bf16 changes what
   the demo reports beyond seed noise. ``auto``'s choice on this machine is printed with the table
   and recorded in the demo's own rows.

    python benchmarks/precision.py --quick
    python benchmarks/precision.py --out docs/results/precision.json
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

import torch

from _common import (Column, Row, available_cores, base_parser, interleaved_timings, markdown_table, paired_ratios,
                     quartiles, run_demo_process, setup, training_step, write_outputs)
from step_cost import device_name
from vprompt.backbones import BackboneSpec
from vprompt.hardware import cpu_has_amx_bf16, cpu_has_avx512_bf16, resolve_precision
from vprompt.recipes.demo import DEMO_BACKBONE, DEMO_METHODS

SEEDS = (0, 1, 2)


def step_rows(quick: bool, rounds: int) -> list[Row]:
    """bf16 ÷ fp32 at the attention path ``vprompt.train`` takes for each, and, at bf16, the
    explicit attention path ÷ torch's fused kernel (the reason ``train`` switches on a CPU)."""
    cases = [(DEMO_BACKBONE, method, options, 64) for method, options in DEMO_METHODS.items()]
    if not quick:
        cases.append((BackboneSpec("vit_base_patch16_224"), "vpt-deep", {"prompt_len": 10}, 8))
    cpu = torch.device("cpu")
    rows = []
    for spec, method, options, batch in cases:
        steps = {"no": training_step(spec, method, 10, batch, cpu, False, **options),
                 "bf16": training_step(spec, method, 10, batch, cpu, True, **options),
                 "bf16 explicit": training_step(spec, method, 10, batch, cpu, True, fused_attention=False, **options),
                 "bf16 fused": training_step(spec, method, 10, batch, cpu, True, fused_attention=True, **options)}
        times = interleaved_timings(steps, rounds=rounds, warmup=1)
        for what, (numerator, denominator) in {"bf16 (as train runs it) ÷ fp32": ("bf16", "no"),
                                               "at bf16: explicit attention ÷ fused": ("bf16 explicit", "bf16 fused")
                                               }.items():
            q1, median, q3 = quartiles(paired_ratios(times[numerator], times[denominator]))
            rows.append({"part": "step", "what": f"{method} on {spec.describe()}, batch {batch}: {what}",
                         "ratio": round(median, 3), "ratio_q1": round(q1, 3), "ratio_q3": round(q3, 3),
                         "rounds": rounds})
            print(f"[precision] step {method} {spec.name} {what}: {median:.2f}", file=sys.stderr)
    return rows


def demo_rows(task: str, quick: bool) -> list[Row]:
    epochs = 2 if quick else 10
    runs = [(None, 0)] if not quick else []
    runs += [([task], seed) for seed in (SEEDS[:1] if quick else SEEDS)]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for tasks, seed in runs:
            seconds, results = {}, {}
            for precision in ("no", "auto"):  # alternately, so drift hits both alike
                seconds[precision], results[precision] = run_demo_process(Path(tmp) / precision, precision, seed, tasks, epochs)
            chosen = sorted({r["precision"] for r in results["auto"]})
            rows.append({"part": "demo", "what": f"vprompt demo {'--tasks ' + task if tasks else '(all tasks)'}, "
                                                 f"seed {seed}, {epochs} epochs",
                         "tasks": tasks or "all", "seed": seed, "epochs": epochs, "auto_is": ",".join(chosen),
                         "ratio": round(seconds["auto"] / seconds["no"], 3),
                         "seconds_no": round(seconds["no"], 1), "seconds_auto": round(seconds["auto"], 1),
                         "acc_no": {r["task"] + "/" + r["method"]: r["test_acc"] for r in results["no"]},
                         "acc_auto": {r["task"] + "/" + r["method"]: r["test_acc"] for r in results["auto"]}})
            print(f"[precision] demo {tasks or 'all'} seed {seed}: {rows[-1]['ratio']:.2f}", file=sys.stderr)
    return rows


def accuracy_rows(demo: list[Row], task: str) -> list[Row]:
    """Per method on ``task``: mean ± standard deviation over the seeds at each precision."""
    seeded = [row for row in demo if row["tasks"] != "all"]
    rows = []
    for method in DEMO_METHODS:
        key = f"{task}/{method}"
        no = [row["acc_no"][key] for row in seeded]
        auto = [row["acc_auto"][key] for row in seeded]
        spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in (no, auto)]
        # the difference of the means against two standard errors of that difference
        noise = 2 * (spread[0] ** 2 / len(no) + spread[1] ** 2 / len(auto)) ** 0.5
        difference = statistics.mean(auto) - statistics.mean(no)
        rows.append({"part": "accuracy", "what": f"{method} on {task}, seeds {', '.join(str(r['seed']) for r in seeded)}",
                     "mean_no": round(statistics.mean(no), 4), "std_no": round(spread[0], 4),
                     "mean_auto": round(statistics.mean(auto), 4), "std_auto": round(spread[1], 4),
                     "difference": round(difference, 4), "two_standard_errors": round(noise, 4),
                     "within_noise": abs(difference) <= noise})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("bf16 autocast ÷ fp32: training steps, and vprompt demo end to end with its accuracies")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--task", default="digits", help="the task the seeds run on")
    args = parser.parse_args(argv)
    setup(args)
    machine = {"device": device_name(torch.device("cpu")), "threads": args.threads, "cores": available_cores(),
               "amx_bf16": cpu_has_amx_bf16(), "avx512_bf16": cpu_has_avx512_bf16(),
               "auto_precision": resolve_precision("auto", "cpu"), "torch": torch.__version__}
    rows = step_rows(args.quick, args.rounds)
    demo = demo_rows(args.task, args.quick)
    rows += demo + accuracy_rows(demo, args.task)
    rows = [row | machine for row in rows]
    write_outputs(rows, table(rows), args.out, args.quick)


def table(rows: list[Row]) -> str:
    first = rows[0]
    speed: list[Column] = [
        ("measured", lambda r: r["what"]),
        ("ratio (IQR)", lambda r: f"{r['ratio']:.2f}" + (
            f" ({r['ratio_q1']:.2f}–{r['ratio_q3']:.2f})" if "ratio_q1" in r else
            f" ({r['seconds_auto']:.0f} s ÷ {r['seconds_no']:.0f} s)")),
    ]
    accuracy: list[Column] = [
        ("method, task, seeds", lambda r: r["what"]),
        ("test acc, no", lambda r: f"{r['mean_no']:.3f} ± {r['std_no']:.3f}"),
        ("test acc, auto", lambda r: f"{r['mean_auto']:.3f} ± {r['std_auto']:.3f}"),
        ("auto − no", lambda r: f"{r['difference']:+.3f}"),
        ("2 standard errors", lambda r: f"{r['two_standard_errors']:.3f}"),
        ("within noise", lambda r: "yes" if r["within_noise"] else "no"),
    ]
    caption = (
        f"bf16 autocast against fp32 on {first['device']}, {first['threads']} threads; AMX-BF16 "
        f"{'yes' if first['amx_bf16'] else 'no'}, AVX512-BF16 {'yes' if first['avx512_bf16'] else 'no'}, so "
        f"`--mixed-precision auto` is `{first['auto_precision']}` here. Steps: medians over "
        f"{first['rounds']} interleaved rounds of per-round ratios. Demo: wall-clock of whole processes, "
        f"run alternately."
    )
    accuracy_caption = "Test accuracy (mean ± standard deviation over seeds) at `--mixed-precision no` and `auto`."
    speed_rows = [r for r in rows if r["part"] in ("step", "demo")]
    accuracy_rows_ = [r for r in rows if r["part"] == "accuracy"]
    return (caption + "\n\n" + markdown_table(speed_rows, speed) + "\n\n" + accuracy_caption + "\n\n"
            + markdown_table(accuracy_rows_, accuracy))


if __name__ == "__main__":
    main()
