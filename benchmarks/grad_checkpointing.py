"""``--grad-checkpointing`` at ViT-B/16: peak memory and step time of VPT-deep and VAPT, with
activation checkpointing against without it, at batch 16 and at batch 64 (the VPT recipe's and
``vprompt train``'s default), at the precision ``--mixed-precision auto`` picks on this machine.

* **Step time**: training steps (forward, cross-entropy, backward, SGD step on the prompts and
  head) with and without checkpointing, interleaved in one process (``_common.interleaved_timings``);
  the ratio is the median of per-round ratios with its interquartile range.
* **Peak memory**: checkpointing frees activations during the forward pass and allocates them again,
  one block at a time, during the backward pass, so the memory held at the end of the forward pass
  (what ``step_cost.py`` counts on a CPU) would understate its peak. Each variant therefore runs in a
  fresh process of its own; once the model is built, the kernel's high-water mark of the process's
  resident memory (``VmHWM``) is reset (``/proc/self/clear_refs``), two training steps run, and
  the new high-water mark is the peak: weights, optimizer state, activations and the Python process
  itself, everything a user's machine must hold. On CUDA the allocator's peak is used instead.

    python benchmarks/grad_checkpointing.py --quick
    python benchmarks/grad_checkpointing.py --out docs/results/grad_checkpointing.json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from _common import (Column, Row, available_cores, base_parser, interleaved_timings, markdown_table, paired_ratios,
                     quartiles, setup, training_step, write_outputs)
from step_cost import device_name
from vprompt.backbones import BackboneSpec
from vprompt.hardware import resolve_precision

METHODS = ("vpt-deep", "vapt")
FULL = ("vit_base_patch16_224", {})
QUICK = ("vit_small_patch16_224", dict(img_size=96, patch_size=16, depth=6))


def peak_resident_bytes() -> int:
    """The process's resident-memory high-water mark since the last reset."""
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def measure_peak(config: dict[str, Any]) -> tuple[int, int]:
    """Peak memory of a model's first two training steps, and the memory held before them, in
    this process (run in a fresh one, so no earlier step's freed heap hides the peak)."""
    device = torch.device(config["device"])
    step = training_step(BackboneSpec(config["model"], kwargs=config["kwargs"]), config["method"], 100,
                         config["batch"], device, config["amp"], config["checkpointing"], prompt_len=10)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
        before = peak_resident_bytes()
    step()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(), before
    return peak_resident_bytes(), before


def peak_in_fresh_process(config: dict[str, Any], threads: int) -> tuple[int, int]:
    command = [sys.executable, __file__, "--peak-of", json.dumps(config), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    peak, before = json.loads(done.stdout.strip().splitlines()[-1])
    return peak, before


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Peak memory and step time with --grad-checkpointing against without it, at ViT-B/16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("auto", "no", "bf16"), default="auto",
                        help="as --mixed-precision (auto: what vprompt train picks on this machine)")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64],
                        help="batch sizes (default: 16, and 64, the VPT recipe's and vprompt train's default)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--peak-of", help=argparse.SUPPRESS)  # internal: measure one variant's peak and print it
    args = parser.parse_args(argv)
    setup(args)
    if args.peak_of:
        print(json.dumps(measure_peak(json.loads(args.peak_of))))
        return
    device = torch.device(args.device)
    amp = resolve_precision(args.precision, device) == "bf16"
    model_name, kwargs = QUICK if args.quick else FULL
    rows: list[Row] = []
    for batch in args.batches[:1] if args.quick else args.batches:
        spec = BackboneSpec(model_name, kwargs=kwargs)
        variants = {f"{m} {c}": training_step(spec, m, 100, batch, device, amp, c, prompt_len=10)
                    for m in METHODS for c in (False, True)}
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        times = interleaved_timings(variants, rounds=args.rounds, warmup=1, sync=sync)
        del variants
        for method in METHODS:
            (peak_on, before_on), (peak_off, before_off) = (
                peak_in_fresh_process({"model": model_name, "kwargs": kwargs, "batch": batch, "method": method,
                                       "checkpointing": ckpt, "device": args.device, "amp": amp}, args.threads)
                for ckpt in (True, False))
            q1, median, q3 = quartiles(paired_ratios(times[f"{method} True"], times[f"{method} False"]))
            rows.append({
                "model": model_name + (f" {kwargs}" if kwargs else ""), "method": method, "batch": batch,
                "prompt_len": 10, "step_ratio": round(median, 3), "step_ratio_q1": round(q1, 3),
                "step_ratio_q3": round(q3, 3), "peak_ratio": round(peak_on / peak_off, 3),
                "step_growth_ratio": round((peak_on - before_on) / (peak_off - before_off), 3),
                "peak_bytes_checkpointed": peak_on, "peak_bytes_plain": peak_off,
                "held_before_step_bytes_checkpointed": before_on, "held_before_step_bytes_plain": before_off,
                "memory_source": "cuda max_memory_allocated" if device.type == "cuda" else "process VmHWM (CPU)",
                "amp": "bf16" if amp else "no", "device": device_name(device), "threads": args.threads,
                "cores": available_cores(), "rounds": args.rounds, "torch": torch.__version__,
            })
            print(f"[grad_checkpointing] batch {batch} {method} done", file=sys.stderr)
    write_outputs(rows, table(rows), args.out, args.quick)


def table(rows: list[Row]) -> str:
    first = rows[0]
    columns: list[Column] = [
        ("batch", lambda r: str(r["batch"])),
        ("method", lambda r: r["method"]),
        ("step ÷ without (IQR)", lambda r: f"{r['step_ratio']:.2f} ({r['step_ratio_q1']:.2f}–{r['step_ratio_q3']:.2f})"),
        ("peak memory ÷ without", lambda r: f"{r['peak_ratio']:.2f}"),
        ("growth during the step ÷ without", lambda r: f"{r['step_growth_ratio']:.2f}"),
        ("peak MiB with / without",
         lambda r: f"{r['peak_bytes_checkpointed'] / 2**20:.0f} / {r['peak_bytes_plain'] / 2**20:.0f}"),
    ]
    caption = (
        f"Gradient checkpointing on {first['model']}, p = {first['prompt_len']}, amp "
        f"{first['amp']}, on {first['device']}, {first['threads']} threads. Step: median over {first['rounds']} "
        f"interleaved rounds of per-round ratios. Peak memory: {first['memory_source']}, each variant in a "
        f"fresh process (weights, optimizer state, activations and the interpreter); growth: the peak "
        f"minus what the process held before the measured steps (mostly activations)."
    )
    return caption + "\n\n" + markdown_table(rows, columns)


if __name__ == "__main__":
    main()
