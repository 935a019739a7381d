"""The lean forward against the full computation (``PromptedModel.set_lean(False)``), every ratio
lean ÷ full measured in one run with the two variants interleaved:

* **training steps** of VPT-shallow, VPT-deep and VAPT (p = 10) at ViT-S/16 and ViT-B/16, 224²:
  step time, and memory as ``step_cost.py`` counts it (weights, gradients, optimizer state and
  the storages autograd saves, on a CPU; the allocator peak on CUDA);
* **evaluation** at ViT-B/16: images per second of ``vprompt.evaluate`` over one in-memory split,
  for the linear probe and VPT-deep (``vprompt predict`` runs the same no-grad forward);
* **a PGD-20 attack** (L∞, 8/255) on VPT-deep at ViT-B/16 through ``vprompt.robust.pgd``.

Random-init timm models (no download), fp32, the machine's threads.

    python benchmarks/lean_forward.py --quick
    python benchmarks/lean_forward.py --out docs/results/lean_forward.json
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

import torch
from torch.utils.data import TensorDataset

from _common import Row, base_parser, interleaved_timings, markdown_table, paired_ratios, quartiles, setup, write_outputs
from step_cost import QUICK_SIZES, Size, build, counted_memory, cuda_peak_memory, device_name
from vprompt.backbones import BackboneSpec
from vprompt.evaluate import evaluate
from vprompt.model import create_model
from vprompt.robust.attacks import ThreatModel, pgd

STEP_METHODS = ("vpt-shallow", "vpt-deep", "vapt")
FULL_STEP_SIZES = (Size("ViT-S/16 224²", "vit_small_patch16_224", batch=8),
                   Size("ViT-B/16 224²", "vit_base_patch16_224", batch=8))
FULL_EVAL = Size("ViT-B/16 224²", "vit_base_patch16_224", batch=32)
QUICK_EVAL = QUICK_SIZES[1]
NUM_CLASSES = 100


def ratio_row(kind: str, size: Size, method: str, lean: list[float], full: list[float], args: argparse.Namespace,
              rounds: int, **extra: object) -> Row:
    """Lean ÷ full time per round (median and quartiles), with the absolute medians."""
    q1, ratio, q3 = quartiles(paired_ratios(lean, full))
    return {"kind": kind, "model": size.label, "method": method, "batch": size.batch, "time_ratio": round(ratio, 3),
            "time_ratio_q1": round(q1, 3), "time_ratio_q3": round(q3, 3),
            "lean_s": round(quartiles(lean)[1], 4), "full_s": round(quartiles(full)[1], 4), "rounds": rounds,
            "threads": args.threads, "torch": torch.__version__, "device": device_name(torch.device(args.device)),
            "load_avg_1m": round(os.getloadavg()[0], 2), **extra}


def step_rows(size: Size, args: argparse.Namespace, device: torch.device) -> list[Row]:
    rows = []
    for method in STEP_METHODS:
        benches = {}
        for lean in (True, False):
            bench = build(size, method, args.prompt_len, device, amp=False, seed=args.seed)
            bench.model.set_lean(lean)
            benches[lean] = bench
        times = interleaved_timings({"lean": benches[True].train_step, "full": benches[False].train_step},
                                    rounds=args.rounds, warmup=1)
        memory = {lean: (cuda_peak_memory if device.type == "cuda" else counted_memory)(bench, reference=False)
                  for lean, bench in benches.items()}
        rows.append(ratio_row("training step", size, method, times["lean"], times["full"], args, args.rounds,
                              memory_ratio=round(memory[True] / memory[False], 3), lean_bytes=memory[True],
                              full_bytes=memory[False], prompt_len=args.prompt_len,
                              memory_source="cuda max_memory_allocated" if device.type == "cuda"
                              else "saved-tensors accounting (CPU)"))
        print(f"[lean_forward] {size.label} {method}: step {rows[-1]['time_ratio']}, memory {rows[-1]['memory_ratio']}",
              flush=True)
    return rows


def eval_models(size: Size, method: str, device: torch.device) -> dict[bool, torch.nn.Module]:
    models = {}
    for lean in (True, False):
        torch.manual_seed(0)
        options = {"prompt_len": 10} if method != "linear" else {}
        model = create_model(BackboneSpec(size.timm_name, kwargs=size.kwargs, init_seed=0), method, NUM_CLASSES,
                             **options).to(device).eval()
        model.set_lean(lean)
        models[lean] = model
    return models


def eval_rows(size: Size, args: argparse.Namespace, device: torch.device) -> list[Row]:
    """``vprompt.evaluate`` over ``--eval-images`` images, and PGD-20 on a batch of ``--attack-batch``."""
    rows = []
    models = {method: eval_models(size, method, device) for method in ("linear", "vpt-deep")}
    generator = torch.Generator().manual_seed(args.seed)
    input_size = models["linear"][True].data_config.input_size
    images = torch.rand(args.eval_images, 3, *input_size, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (args.eval_images,), generator=generator)
    data = TensorDataset(images, labels)
    for method, pair in models.items():
        times = interleaved_timings({str(lean): (lambda m=model: evaluate(m, data, batch_size=size.batch))
                                     for lean, model in pair.items()}, rounds=args.rounds, warmup=1)
        row = ratio_row("evaluation", size, method, times["True"], times["False"], args, args.rounds,
                        images=args.eval_images)
        row["throughput_ratio"] = round(1 / row["time_ratio"], 3)
        rows.append(row)
        print(f"[lean_forward] {size.label} {method} eval: throughput lean ÷ full {row['throughput_ratio']}", flush=True)
    batch, target = images[:args.attack_batch].to(device), labels[:args.attack_batch].to(device)
    threat = ThreatModel("linf", 8 / 255)
    times = interleaved_timings(
        {str(lean): (lambda m=model: pgd(m, batch, target, threat, steps=20,
                                         generator=torch.Generator().manual_seed(0)))
         for lean, model in models["vpt-deep"].items()}, rounds=args.attack_rounds, warmup=0)
    rows.append(ratio_row("PGD-20 attack", replace(size, batch=args.attack_batch), "vpt-deep", times["True"],
                          times["False"], args, args.attack_rounds, attack="PGD-20 L-inf 8/255"))
    print(f"[lean_forward] PGD-20: time lean ÷ full {rows[-1]['time_ratio']}", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    first = rows[0]
    header = (f"Lean forward ÷ full computation (`set_lean(False)`), fp32, random-init timm models, on "
              f"{first['device']}, {first['threads']} threads, torch {first['torch']}; medians of per-round ratios "
              f"(interquartile range) over interleaved rounds after one warm-up round (the attack: none). Memory: "
              f"{first.get('memory_source', '')}. 1-minute load average at the end: {rows[-1]['load_avg_1m']}.\n\n")
    columns = [
        ("what", lambda r: r["kind"]), ("model", lambda r: r["model"]), ("method", lambda r: r["method"]),
        ("batch", lambda r: str(r["batch"])),
        ("time lean ÷ full (IQR)", lambda r: f"{r['time_ratio']:.3f} ({r['time_ratio_q1']:.3f}–{r['time_ratio_q3']:.3f})"),
        ("throughput lean ÷ full", lambda r: f"{r['throughput_ratio']:.3f}" if "throughput_ratio" in r else "–"),
        ("memory lean ÷ full", lambda r: f"{r['memory_ratio']:.3f}" if "memory_ratio" in r else "–"),
        ("rounds", lambda r: str(r["rounds"])),
    ]
    return header + markdown_table(rows, columns)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("lean forward vs full computation: training steps, evaluation, PGD-20")
    parser.add_argument("--prompt-len", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--eval-images", type=int, default=128)
    parser.add_argument("--attack-batch", type=int, default=4)
    parser.add_argument("--attack-rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    setup(args)
    device = torch.device(args.device)
    if args.quick:
        args.rounds, args.eval_images, args.attack_rounds = 3, 32, 2
    rows: list[Row] = []
    for size in (QUICK_SIZES if args.quick else FULL_STEP_SIZES):
        rows += step_rows(size, args, device)
    rows += eval_rows(QUICK_EVAL if args.quick else FULL_EVAL, args, device)
    write_outputs(rows, table(rows), args.out, args.quick)


if __name__ == "__main__":
    main()
