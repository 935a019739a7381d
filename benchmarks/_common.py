"""Helpers every benchmark shares, so that they all follow DESIGN.md's "Numbers" conventions.

* one command line: ``--quick`` (about a minute on 2 CPU cores), ``--out FILE`` (JSON rows),
  ``--seed``, ``--threads``;
* one process set-up: all available cores unless told otherwise, every RNG seeded;
* one timing discipline: warm-up rounds, then the measured callables interleaved in rounds, so
  that drift (thermal, other processes on a shared machine) hits every variant alike;
* one output format: a list of flat JSON objects, and for full runs a markdown table beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from vprompt.hardware import available_cpus

Row = dict[str, Any]
Column = tuple[str, Callable[[Row], str]]


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes; a benchmark adds its own to the returned parser."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small configs, about a minute on 2 CPU cores")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here (full runs also write the table with the suffix .md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="intra-op threads (default: all available cores; on a loaded machine 1 gives "
                             "steadier timings, since a multi-threaded op waits for its slowest thread)")
    return parser


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    return available_cpus()


def setup(args: argparse.Namespace) -> None:
    """Set the thread count (``--threads``) and seed every RNG (``--seed``)."""
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def interleaved_timings(
    steps: Mapping[str, Callable[[], None]],
    rounds: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds per call of each step, one sample per round, steps run in order within a round.

    Interleaving (A B C … A B C …) instead of timing each step back to back means slow drift
    lands on all steps of a round alike, so per-round ratios cancel it. ``sync`` must wait for
    queued device work (``torch.cuda.synchronize`` on a GPU) so the clock sees the real cost.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for index in range(warmup + rounds):
        for name, step in steps.items():
            sync()
            started = time.perf_counter()
            step()
            sync()
            if index >= warmup:
                times[name].append(time.perf_counter() - started)
    return times


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-round ratios: each round's numerator over the same round's denominator."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """(first quartile, median, third quartile); the quartiles collapse to the value for one sample."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def markdown_table(rows: Sequence[Row], columns: Sequence[Column]) -> str:
    """A GitHub markdown table, one line per row, cells rendered by each column's formatter."""
    lines = ["| " + " | ".join(header for header, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(rows: Sequence[Row], markdown: str, out: Path | None, quick: bool) -> None:
    """Print the table; with ``--out`` write the JSON rows, and for a full run the table beside it with the suffix .md."""
    print(markdown)
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(list(rows), indent=2) + "\n")
    if not quick:
        out.with_suffix(".md").write_text(markdown + "\n")


def training_step(spec: Any, method: str, num_classes: int, batch: int, device: torch.device, bf16: bool,
                  checkpointing: bool = False, fused_attention: bool | None = None,
                  **options: Any) -> Callable[[], None]:
    """A training step as ``vprompt.train`` takes it (forward, under bf16 autocast if asked, on the
    attention path it picks; cross-entropy; zeroed gradients; backward; its SGD step) on a model
    built as it builds one, with one fixed random batch. ``fused_attention`` forces a path."""
    import torch.nn.functional as F

    from vprompt.hardware import attention_path, training_attention
    from vprompt.model import create_model
    from vprompt.train import TrainConfig, make_optimizer

    torch.manual_seed(0)
    model = create_model(spec, method, num_classes, **options).to(device).train()
    if checkpointing:
        model.set_grad_checkpointing(True)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], TrainConfig(batch_size=batch))
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, *model.data_config.input_size, generator=generator).to(device)
    labels = torch.randint(0, num_classes, (batch,), generator=generator).to(device)

    def path() -> contextlib.AbstractContextManager[None]:
        if fused_attention is not None:
            return attention_path(model, fused_attention)
        return training_attention(model, device.type, "bf16" if bf16 else "no")

    def step() -> None:
        # the whole step on one path: a checkpointed block is recomputed in the backward pass
        with path():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return step


def run_demo_process(out: Path, precision: str, seed: int, tasks: list[str] | None, epochs: int) -> tuple[float, list[Row]]:
    """Wall-clock seconds of one ``vprompt demo`` process (as a user runs it), and its result rows."""
    command = [sys.executable, "-c", "from vprompt.cli import main; main()", "demo", "--out", str(out),
               "--mixed-precision", precision, "--seed", str(seed), "--epochs", str(epochs)]
    if tasks:
        command += ["--tasks", *tasks]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return seconds, json.loads((out / "results.json").read_text())
