"""`vprompt reproduce pbl`: the robust-prompting seed's three questions on the zoo's CNNs (or on any
standard / robust pair of source models: ``--standard`` and ``--robust``).

{standard, robust source} × {VP, VP + each PBL boundary} × tasks × seeds. Every run trains an
expansive visual prompt with frequency label mapping on train800val200, scores the whole test
split, then attacks the first ``attack_images`` test images with PGD and AutoAttack (the same
images, the target image perturbed before prompting). Answers:

1. *Inherited robustness*: VP's robust accuracy on the robust source vs the standard source.
2. *Trade-off*: VP's clean accuracy on the robust source vs the standard source.
3. *PBL*: each boundary's change in clean and robust accuracy against VP on the same source.

Every run keeps its prompt and an ``attack.json`` in its own folder, so a rerun skips finished
work and a crashed one resumes. `vprompt reproduce robust-tokens`
([`vprompt.recipes.robust_tokens`][]) runs the same grid with token prompts on the zoo's ViTs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar

from vprompt.backbones import BackboneSpec, check_model_name
from vprompt.data import FileListDataset, task_info, write_synthetic_suite
from vprompt.data.synthetic import synthetic_task_names
from vprompt.checkpoint import FINAL
from vprompt.model import load_prompt
from vprompt.progress import each
from vprompt.prompts.pixel import MappingRule, Template
from vprompt.records import open_records, recorded_or_run, say_summary
from vprompt.recipes.pbl_report import answers, results_markdown, write_prompt_images, write_tradeoff_plot
from vprompt.report import write_rows
from vprompt.robust.evaluation import AttackConfig, attack_report, attack_threat
from vprompt.sweep import Run, execute, run_settings
from vprompt.train import PrecisionChoice, TrainConfig
from vprompt.validation import Existing, NonEmpty, Validated, Writable, at_least, check_members

METHODS = ("vp", "vp+pbl-value", "vp+pbl-spatial", "vp+pbl-output")
SOURCES = {"standard": "zoo:fractal-resnet", "robust": "zoo:fractal-resnet-robust"}
ATTACK_FILE = "attack.json"


@dataclass(frozen=True)
class Variant:
    """One method row of the grid: the vprompt method that trains it and the method's options."""

    method: str
    options: dict[str, Any]


@dataclass
class PBLReproduction(Validated, PrecisionChoice):
    out: Annotated[Path, Writable()] = Path("reproduce-pbl")
    """Folder for the data, one folder per run, results.json / results.md, the plot and prompt images."""
    tasks: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: ["objects", "digits"])
    """Synthetic tasks to prompt for."""
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] = field(default_factory=lambda: [0, 1, 2])
    methods: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: list(METHODS))
    """Which of vp, vp+pbl-value, vp+pbl-spatial, vp+pbl-output to run."""
    epochs: Annotated[int, at_least(1)] = 10
    template: Template = "expansive"
    """VP template (expansive: the 32-pixel image in the centre of the 64-pixel source canvas)."""
    mapping: MappingRule = "flm"
    value_strength: Annotated[float, at_least(0)] = 0.5
    """λ of PBL's value boundary."""
    spatial_strength: Annotated[float, at_least(0)] = 0.1
    """λ of PBL's spatial boundary."""
    output_strength: Annotated[float, at_least(0)] = 0.1
    """λ of PBL's output boundary (0.1 gives 2 source classes per class for a 10-class task)."""
    attack_images: Annotated[int, at_least(1)] = 100
    """First test images attacked by PGD and AutoAttack (AutoAttack is the slow part)."""
    eps: str = "8/255"
    pgd_steps: Annotated[int, at_least(1)] = 20
    quick: bool = False
    """One task, one seed, three epochs, 50 attacked images: minutes, not hours."""
    standard: str = SOURCES["standard"]
    """The standard source: zoo:NAME, robustbench:NAME, or a timm name (with --standard-weights)."""
    standard_weights: Annotated[Path, Existing()] | None = None
    """Local weights for the standard source (.safetensors, or .pt read without pickle execution)."""
    robust: str = SOURCES["robust"]
    """The robust source, named like --standard (e.g. resnet50 with Salman et al.'s checkpoint)."""
    robust_weights: Annotated[Path, Existing()] | None = None
    records: Annotated[Path, Writable()] | None = None
    """Folder of run records (docs/results/<table>/runs for a committed table): a run recorded there
    is read back instead of rerun, and every finished run is recorded."""

    allowed_methods: ClassVar[tuple[str, ...]] = METHODS
    plot_title: ClassVar[str] = "VP and PBL: clean vs robust"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_members("methods", self.methods, self.allowed_methods)
        attack_threat("linf", self.eps)
        synthetic_task_names(self.tasks)
        check_model_name(self.standard)
        check_model_name(self.robust)

    def reduced(self) -> PBLReproduction:
        """--quick: the first task and seed, three epochs, 50 attacked images."""
        if not self.quick:
            return self
        return replace(self, tasks=self.tasks[:1], seeds=self.seeds[:1], epochs=3, attack_images=50, quick=False)

    def sources(self) -> dict[str, BackboneSpec]:
        """Source kind → backbone; local weights make the spec load them."""
        return {"standard": BackboneSpec(self.standard, checkpoint=optional_path(self.standard_weights)),
                "robust": BackboneSpec(self.robust, checkpoint=optional_path(self.robust_weights))}

    def variants(self) -> dict[str, Variant]:
        """The chosen method rows, by name."""
        every = self.every_variant()
        return {name: every[name] for name in self.methods}

    def every_variant(self) -> dict[str, Variant]:
        """Plain VP, and VP with each PBL boundary loosened."""
        base = {"template": self.template, "mapping": self.mapping}
        strengths = {"value": self.value_strength, "spatial": self.spatial_strength, "output": self.output_strength}
        return {"vp": Variant("vp", base)} | {
            f"vp+pbl-{boundary}": Variant("vp", base | {"pbl": boundary, "pbl_strength": strength})
            for boundary, strength in strengths.items()}

    def train_config(self, variant: str, seed: int) -> TrainConfig:
        """VP's optimisation (ILM-VP's Adam at a high rate, no weight decay) for every row."""
        return TrainConfig(epochs=self.epochs, batch_size=64, optimizer="adamw", base_lr=0.2, weight_decay=0.0,
                           warmup_epochs=0, seed=seed, mixed_precision=self.mixed_precision)

    def answer_lines(self) -> Callable[[list[dict[str, Any]]], list[str]]:
        """The function that states the recipe's answers from its rows."""
        return answers

    def attack_config(self) -> AttackConfig:
        return AttackConfig(attack="both", eps=self.eps, steps=self.pgd_steps, images=self.attack_images)


def run_robustness_reproduction(config: PBLReproduction, sources: dict[str, BackboneSpec] | None = None,
                                progress: bool = True) -> list[dict[str, Any]]:
    """Every source × variant × task × seed; writes results.json, results.md, tradeoff.png, and prompts/
    (pictures of the pixel prompts)."""
    config = config.reduced()
    sources = sources or config.sources()
    task_dirs = write_synthetic_suite(config.out / "data", tasks=config.tasks, progress=False)
    jobs = [(kind, variant, task, seed) for kind in sources for variant in config.variants()
            for task in task_dirs for seed in config.seeds]
    classes = {task: task_info(task).num_classes for task in task_dirs}
    records = open_records(config.records, config.train_config(config.methods[0], config.seeds[0]).mixed_precision)
    rows = []
    for kind, variant, task, seed in each(jobs, "source × method × task × seed", progress,
                                          lambda job: f"{job[0]} {job[1]} {job[2].name} seed {job[3]}"):
        run_dir = config.out / "runs" / kind / variant / task.name / f"seed{seed}"

        def run(kind: str = kind, variant: str = variant, task: Path = task, seed: int = seed,
                run_dir: Path = run_dir) -> dict[str, Any]:
            return run_one(config, kind, sources[kind], variant, task, seed, run_dir)

        row = recorded_or_run(records, run_settings_of(config, kind, sources[kind], variant, task, seed), run)
        rows.append(row | {"chance": 1 / classes[task]})
    say_summary(records, progress)
    write_rows(rows, config.out / "results.json")
    (config.out / "results.md").write_text(
        results_markdown(rows, config_summary(config, sources), config.answer_lines()) + "\n")
    write_tradeoff_plot(rows, config.out / "tradeoff.png", config.plot_title)
    variants = config.variants()
    write_prompt_images([r for r in rows if variants[r["method"]].method == "vp"], config.out, config.out / "prompts",
                        sources)
    return rows


def run_settings_of(config: PBLReproduction, kind: str, source: BackboneSpec, variant: str, task: Path,
                    seed: int) -> dict[str, Any]:
    """What makes one source × variant × task × seed this run, for its record: the training run's
    settings (data, weights, method, schedule) and the attack's."""
    chosen = config.variants()[variant]
    training = Run(str(task), source, chosen.method, chosen.options, config.train_config(variant, seed), Path(),
                   "train800val200", "test")
    return {"source_kind": kind, "variant": variant, "run": run_settings(training),
            "attack": asdict(config.attack_config())}


def run_one(config: PBLReproduction, kind: str, source: BackboneSpec, variant: str, task: Path, seed: int,
            run_dir: Path) -> dict[str, Any]:
    """Train (or read back) one prompt, attack it (or read the attack back), and return its row."""
    chosen, train_config = config.variants()[variant], config.train_config(variant, seed)
    options = chosen.options
    test_acc = execute(Run(str(task), source, chosen.method, options, train_config, run_dir, "train800val200",
                           "test"))
    attack_file = run_dir / ATTACK_FILE
    attack_settings = asdict(config.attack_config())
    cached = json.loads(attack_file.read_text()) if attack_file.is_file() else None
    if cached is None or cached["settings"] != attack_settings:
        model = load_prompt(run_dir / FINAL, source)  # our own run, on the source the user gave
        test = FileListDataset(task, "test", model.image_size)
        report = attack_report(model, test, model.num_classes, config.attack_config())
        cached = {"settings": attack_settings, "report": report}
        attack_file.write_text(json.dumps(cached, indent=2))
    report = cached["report"]
    return {"source": source.name, "source_kind": kind, "method": variant, "task": task.name, "seed": seed,
            "pbl": options.get("pbl", "none"), "pbl_strength": options.get("pbl_strength", 0.0),
            "clean_acc": test_acc,
            "attacked_images": report["n"], "clean_acc_attacked": report["clean_acc"],
            "robust_acc_pgd": report["robust_acc_pgd"], "robust_acc_aa": report["robust_acc_aa"],
            "eps": report["eps"], "norm": report["norm"], "attack_pgd": report["attack_pgd"],
            "attack_aa": report["attack_aa"], "prompt": str((run_dir / FINAL).relative_to(config.out))}


def optional_path(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def config_summary(config: PBLReproduction, sources: dict[str, BackboneSpec]) -> str:
    by_rate: dict[float, list[str]] = {}
    for name in config.methods:
        by_rate.setdefault(config.train_config(name, config.seeds[0]).base_lr, []).append(name)
    rates = "; ".join(f"base_lr {rate:g} for {', '.join(names)}" for rate, names in by_rate.items())
    return (f"Sources: {', '.join(f'{kind} = {spec.describe()}' for kind, spec in sources.items())}. "
            f"VP template {config.template}, mapping {config.mapping}; {config.epochs} epochs AdamW on "
            f"train800val200 ({rates}); seeds {config.seeds}. Clean accuracy on the whole test split; "
            f"PGD-{config.pgd_steps} and AutoAttack (standard) at ℓ∞ eps {config.eps} on its first "
            f"{config.attack_images} images, the image perturbed before prompting.")

