"""`vprompt reproduce vapt`: VAPT against VPT-deep, VPT-shallow and linear under the VTAB-1k protocol.

With ``--data`` pointing at VTAB-1k task folders and a pretrained ViT-B/16 this is the paper's
protocol (grid on train800/val200, retrain on train800val200 × 5 seeds, last-epoch test
accuracy; run it on a GPU). Without ``--data`` it runs the same protocol offline on the
synthetic suite with a smaller grid.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from vprompt.backbones import BackboneSpec
from vprompt.data.synthetic import synthetic_task_names
from vprompt.methods import get_method
from vprompt.recipes.demo import DEMO_BACKBONE
from vprompt.records import open_records, say_summary
from vprompt.recipes.run import task_dirs
from vprompt.report import write_rows
from vprompt.sweep import (LocalExecutor, Protocol, RayExecutor, picked_rates, protocol_header, protocol_table,
                           run_protocol, summarise)
from vprompt.train import PrecisionChoice, TrainConfig
from vprompt.validation import Existing, NonEmpty, Validated, Writable, above, at_least

METHODS = ("vapt", "vpt-deep", "vpt-shallow", "linear")


OFFLINE_BASE_LRS = (0.1, 0.02)
"""The offline grid, picked per task and method on val200: VPT-deep and the probe's rate on the zoo ViT
(the demo's), and VAPT's, whose prompts come from a small network (the earlier one-rate table's)."""


def offline_protocol(quick: bool) -> Protocol:
    """A smaller grid and fewer epochs for the synthetic suite on a CPU."""
    train = TrainConfig(epochs=3 if quick else 10, batch_size=64, optimizer="adamw", warmup_epochs=1)
    if quick:
        return Protocol(base_lrs=[0.01], weight_decays=[1e-4], seeds=[0, 1], train=train)
    return Protocol(base_lrs=list(OFFLINE_BASE_LRS), weight_decays=[1e-4], seeds=[0, 1, 2], train=train)


@dataclass
class VAPTReproduction(Validated, PrecisionChoice):
    out: Annotated[Path, Writable()] = Path("reproduce-vapt")
    data: Annotated[Path, Existing()] | None = None
    """Folder of VTAB-1k task folders (the paper's protocol); default: the offline synthetic suite."""
    tasks: Annotated[list[str], NonEmpty()] | None = None
    """Task folder names to run (default: all found)."""
    prompt_len: Annotated[int, at_least(1)] = 10
    quick: bool = False
    """Offline only: one grid point, two seeds, three epochs."""
    base_lrs: Annotated[list[Annotated[float, above(0)]], NonEmpty()] | None = None
    """Override the protocol's base_lr grid (one value: no tuning runs)."""
    weight_decays: Annotated[list[Annotated[float, at_least(0)]], NonEmpty()] | None = None
    """Override the protocol's weight-decay grid."""
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] | None = None
    """Override the protocol's seeds."""
    epochs: Annotated[int, at_least(1)] | None = None
    """Override the protocol's epochs."""
    records: Annotated[Path, Writable()] | None = None
    """Folder of run records (docs/results/vapt/runs for the committed table): recorded runs are read
    back instead of rerun, and every finished run is recorded there."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data is None:
            synthetic_task_names(self.tasks)

    def protocol(self) -> Protocol:
        """The offline or the paper's protocol, with this config's overrides."""
        base = offline_protocol(self.quick) if self.data is None else Protocol()
        return replace(base, base_lrs=self.base_lrs or base.base_lrs,
                       weight_decays=self.weight_decays if self.weight_decays is not None else base.weight_decays,
                       seeds=self.seeds or base.seeds,
                       train=replace(base.train, epochs=self.epochs or base.train.epochs,
                                     mixed_precision=self.mixed_precision))


def run_vapt_reproduction(config: VAPTReproduction, backbone: BackboneSpec | None = None,
                          protocol: Protocol | None = None, progress: bool = True,
                          executor: LocalExecutor | RayExecutor | None = None) -> list[dict[str, Any]]:
    """Every task × method through the protocol; writes results.json and results.md into ``out``."""
    backbone = backbone or DEMO_BACKBONE
    protocol = protocol or config.protocol()
    methods = {m: {"prompt_len": config.prompt_len} if get_method(m).takes_prompt_len else {} for m in METHODS}
    tasks = [str(task) for task in task_dirs(config.out, config.data, config.tasks)]
    records = open_records(config.records, protocol.train.mixed_precision)
    rows = run_protocol(tasks, methods, backbone, protocol, config.out, executor, progress, records)
    say_summary(records, progress)
    write_rows(rows, config.out / "results.json")
    (config.out / "results.md").write_text(results_table(rows, backbone, protocol) + "\n")
    return rows


def results_table(rows: list[dict[str, Any]], backbone: BackboneSpec, protocol: Protocol) -> str:
    """The protocol table, with how often VAPT beats VPT-deep."""
    summary = {(s["task"], s["method"]): s["mean"] for s in summarise(rows)}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    wins = sum(summary[t, "vapt"] > summary[t, "vpt-deep"] for t in tasks)
    return (protocol_header(protocol, backbone) + f" VAPT beats VPT-deep on {wins} of {len(tasks)} tasks."
            + picked_rates(rows) + "\n\n" + protocol_table(rows))
