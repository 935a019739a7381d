"""`vprompt reproduce baselines`: the prompts beside the baselines every VTAB-1k table has, in one protocol.

Linear probe, VPT-deep, VAPT, key-value prompts, VFPT, LoRA and BitFit on the same tasks, backbone
and seeds: the base rate is picked per task and method on val200 (trained on train800), the final
runs train on train800val200 for each seed and report last-epoch test accuracy, and each final
model is attacked with PGD on the first test images (the image perturbed before any prompt). The
table adds what each method trains (without the head, which every method shares) and the time of
one training step as a ratio to full fine-tuning's, all methods timed in one process, so the
ratios compare on one machine. Offline it runs on the synthetic suite with the zoo ViT.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from vprompt.backbones import BackboneSpec
from vprompt.checkpoint import FINAL
from vprompt.data import FileListDataset, task_info
from vprompt.data.synthetic import synthetic_task_names
from vprompt.methods import get_method
from vprompt.model import count_parameters, create_model, load_prompt
from vprompt.progress import each
from vprompt.recipes.demo import DEMO_BACKBONE, DEMO_TASKS
from vprompt.recipes.run import task_dirs
from vprompt.records import RunRecords, backbone_identity, open_records, recorded_or_run, say_summary
from vprompt.report import markdown_table, seed_means, spread, write_rows
from vprompt.robust.evaluation import AttackConfig, attack_report
from vprompt.sweep import (LocalExecutor, Protocol, Run, execute, picked_rates, protocol_header, protocol_table,
                           run_name, run_settings, tuned_finals)
from vprompt.train import PrecisionChoice, TrainConfig
from vprompt.tuners import require_peft
from vprompt.validation import Existing, NonEmpty, Validated, Writable, above, at_least

METHODS = ("linear", "vpt-deep", "vapt", "kv-prompt", "vfpt", "lora", "bitfit")
"""The table's rows: the probe, the three token prompts of the papers' field, and two baselines
that change the backbone (peft's LoRA and the built-in BitFit)."""
OFFLINE_BASE_LRS = (0.1, 0.02, 0.004)
"""The offline grid: the demo's rate for the probe and VPT-deep, VAPT's, and a fifth of it for the
methods that change backbone weights, which diverge at the prompts' rates."""
TIMING_REFERENCE = "full"
"""Step times are given as a ratio to full fine-tuning's, the cost every method is meant to undercut."""


@dataclass
class BaselinesReproduction(Validated, PrecisionChoice):
    out: Annotated[Path, Writable()] = Path("reproduce-baselines")
    """Folder for the data, one folder per run, results.json and results.md."""
    data: Annotated[Path, Existing()] | None = None
    """Folder of VTAB-1k task folders; default: the offline synthetic suite."""
    tasks: Annotated[list[str], NonEmpty()] | None = None
    """Tasks to run; default: the demo's three (one per group) offline, every task found with --data."""
    methods: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: list(METHODS))
    """Registered method names (any; the default is the table's seven)."""
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] = field(default_factory=lambda: [0, 1, 2])
    epochs: Annotated[int, at_least(1)] = 10
    base_lrs: Annotated[list[Annotated[float, above(0)]], NonEmpty()] = field(
        default_factory=lambda: list(OFFLINE_BASE_LRS))
    """AdamW base rates, picked per task and method on val200 (one value: no tuning runs)."""
    prompt_len: Annotated[int, at_least(1)] = 10
    """Prompt tokens (VPT-deep, VAPT, VFPT) or keys (key-value prompts) per block."""
    eps: str = "2/255"
    """ℓ∞ budget of PGD: the zoo ViT is not adversarially trained, so at 8/255 every method is at zero."""
    pgd_steps: Annotated[int, at_least(1)] = 20
    attack_images: Annotated[int, at_least(1)] = 200
    """First test images attacked."""
    timing_steps: Annotated[int, at_least(1)] = 5
    """Training steps timed per method (after two untimed ones; the median is kept)."""
    quick: bool = False
    """One task, one seed, two epochs, one rate, 50 attacked images: minutes, not hours."""
    records: Annotated[Path, Writable()] | None = None
    """Folder of run records (docs/results/baselines/runs for the committed table): recorded runs are
    read back instead of rerun, and every finished run is recorded."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for method in self.methods:  # an unknown method, or a tuner without peft: one line before anything runs
            if get_method(method).adapt_backbone is not None:
                require_peft()
        self.attack_config()  # checks eps
        if self.data is None and self.tasks is not None:
            synthetic_task_names(self.tasks)

    def reduced(self) -> BaselinesReproduction:
        """--quick: the first task and seed, two epochs, one rate, 50 attacked images, 2 timed steps."""
        if not self.quick:
            return self
        tasks = (self.tasks or list(DEMO_TASKS))[:1] if self.data is None else self.tasks
        return replace(self, tasks=tasks, seeds=self.seeds[:1], epochs=2, base_lrs=[0.02], attack_images=50,
                       timing_steps=2, quick=False)

    def chosen_tasks(self) -> list[str] | None:
        """The task names to run (None: every task found in --data)."""
        return self.tasks if self.tasks is not None or self.data is not None else list(DEMO_TASKS)

    def method_options(self) -> dict[str, dict[str, Any]]:
        """Each method's options: the prompt length where it has one."""
        return {m: {"prompt_len": self.prompt_len} if get_method(m).takes_prompt_len else {} for m in self.methods}

    def protocol(self) -> Protocol:
        train = TrainConfig(epochs=self.epochs, batch_size=64, optimizer="adamw", warmup_epochs=1,
                            mixed_precision=self.mixed_precision)
        return Protocol(base_lrs=self.base_lrs, weight_decays=[1e-4], seeds=self.seeds, train=train)

    def attack_config(self) -> AttackConfig:
        return AttackConfig(attack="pgd", eps=self.eps, steps=self.pgd_steps, images=self.attack_images)


def run_baselines_reproduction(config: BaselinesReproduction, backbone: BackboneSpec | None = None,
                               progress: bool = True) -> list[dict[str, Any]]:
    """Every task × method through the protocol, each final run attacked; the step timing; writes
    results.json and results.md into ``out``."""
    config = config.reduced()
    backbone = backbone or DEMO_BACKBONE
    protocol, methods = config.protocol(), config.method_options()
    tasks = [str(task) for task in task_dirs(config.out, config.data, config.chosen_tasks())]
    records = open_records(config.records, protocol.train.mixed_precision)
    finals = tuned_finals(tasks, methods, backbone, protocol, config.out, LocalExecutor(), progress, records)
    attack = config.attack_config()
    rows = []
    for row, run in each(finals, "final runs, attacked", progress, lambda final: run_name(final[1])):
        settings = {"run": run_settings(run), "attack": asdict(attack)}
        rows.append(row | recorded_or_run(records, settings, lambda run=run: final_and_attack(run, attack)))
    classes = task_info(Path(tasks[0])).num_classes
    costs = method_costs(backbone, methods, classes, config.timing_steps, records, progress)
    say_summary(records, progress)
    write_rows(rows, config.out / "results.json")
    write_rows([{"method": m} | c for m, c in costs.items()], config.out / "costs.json")
    (config.out / "results.md").write_text(results_markdown(rows, costs, backbone, protocol, attack) + "\n")
    return rows


def final_and_attack(run: Run, attack: AttackConfig) -> dict[str, Any]:
    """Train (or read back) a final run, then attack its model on the first test images."""
    test_acc = execute(run)
    model = load_prompt(run.out_dir / FINAL, run.backbone)  # our own run, on the backbone the user gave
    report = attack_report(model, FileListDataset(run.task, run.eval_split, model.image_size), model.num_classes,
                           attack)
    return {"test_acc": test_acc, "attacked_images": report["n"], "clean_acc_attacked": report["clean_acc"],
            "robust_acc_pgd": report["robust_acc_pgd"]}


def method_costs(backbone: BackboneSpec, methods: dict[str, dict[str, Any]], num_classes: int, steps: int,
                 records: RunRecords | None, progress: bool) -> dict[str, dict[str, Any]]:
    """Per method: what it trains besides the head, and its training step's seconds and ratio to
    full fine-tuning's, every method timed in this one process (or read back as one record)."""
    timed = methods | {TIMING_REFERENCE: {}}
    settings = {"timing": {"backbone": backbone_identity(backbone), "methods": timed, "num_classes": num_classes,
                           "batch_size": 64, "steps": steps}}

    def measure() -> dict[str, Any]:
        return {m: step_seconds(backbone, m, o, num_classes, 64, steps)
                for m, o in each(list(timed.items()), "timing steps", progress, lambda item: item[0])}

    seconds = recorded_or_run(records, settings, measure)
    costs = {}
    for method, options in methods.items():
        report = count_parameters(backbone, method, num_classes, **options)
        costs[method] = {"trained_without_head": report.prompt + report.backbone, "step_seconds": seconds[method],
                         "step_ratio_to_full": seconds[method] / seconds[TIMING_REFERENCE]}
    return costs


def step_seconds(backbone: BackboneSpec, method: str, options: dict[str, Any], num_classes: int, batch_size: int,
                 steps: int) -> float:
    """The median wall-clock of one AdamW training step (forward, backward, update) at ``batch_size``
    on the device training uses, after two untimed steps; fp32, without the frozen-feature cache."""
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # where the training runs
    model = create_model(backbone, method, num_classes, **options).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images = torch.rand(batch_size, 3, *model.image_size, device=device)
    labels = torch.randint(num_classes, (batch_size,), device=device)
    times = []
    for _ in range(steps + 2):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return statistics.median(times[2:])


def results_markdown(rows: list[dict[str, Any]], costs: dict[str, dict[str, Any]], backbone: BackboneSpec,
                     protocol: Protocol, attack: AttackConfig) -> str:
    """The summary per method (cost, clean and PGD accuracy as means over tasks with their spread over
    seeds), then clean and PGD accuracy per task."""
    pgd = f"PGD-{attack.steps} ℓ∞ {attack.eps}"
    summary = [{"method": method, "trained (without head)": f"{cost['trained_without_head']:,}",
                "step time ÷ full": f"{cost['step_ratio_to_full']:.2f}",
                "clean (mean of tasks)": spread(seed_means([r for r in rows if r["method"] == method], "test_acc")),
                f"{pgd} (mean of tasks)": spread(seed_means([r for r in rows if r["method"] == method],
                                                            "robust_acc_pgd"))}
               for method, cost in costs.items()]
    attacked = [row | {"test_acc": row["robust_acc_pgd"]} for row in rows]
    return "\n\n".join([
        protocol_header(protocol, backbone) + picked_rates(rows),
        f"{pgd} on the first {rows[0]['attacked_images']} test images of each final model (the image perturbed "
        "before any prompt; robust only if also correct clean). Step time: the median of one fp32 AdamW step at "
        "batch 64 (no frozen-feature cache), every method timed in one process, as a ratio to full fine-tuning's. "
        "Spread: the sample std over seeds of each seed's mean over tasks.",
        markdown_table(summary),
        "Clean test accuracy per task:", protocol_table(rows),
        f"{pgd} accuracy per task:", protocol_table(attacked)])
