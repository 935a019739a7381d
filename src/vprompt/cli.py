"""The `vprompt` command line: each subcommand is a typed dataclass that calls one library function.

Errors meant for the user ([`VpromptError`][vprompt.VpromptError]) are printed as one line and
exit with status 2; an interrupted run says how to resume.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tyro
from tqdm import tqdm
from tyro.conf import Positional, subcommand

from vprompt.backbones import BackboneSpec, check_model_name
from vprompt.errors import ConfigError, VpromptWarning
from vprompt.data.synthetic import synthetic_task_names
from vprompt.failures import BUG_REPORT, parse_error_line, user_message
from vprompt.methods import DEFAULT_METHOD, make_config, method_names
from vprompt.recipes.demo import DemoConfig
from vprompt.recipes.hgprompt import HGPromptReproduction
from vprompt.recipes.pbl import PBLReproduction
from vprompt.recipes.robust_tokens import RobustTokensReproduction
from vprompt.recipes.vapt import VAPTReproduction
from vprompt.robust.adversarial import AdversarialConfig
from vprompt.robust.evaluation import AttackConfig, attack_threat
from vprompt.train import TrainConfig
from vprompt.transfer import TransferConfig, check_methods
from vprompt.validation import (Existing, NonEmpty, Validated, Writable, above, at_least, at_most, below)


@dataclass
class BackboneArgs(Validated):
    model: str
    """timm model name, e.g. vit_base_patch16_224."""
    model_arg: list[str] = field(default_factory=list)
    """Extra timm constructor arguments as KEY=VALUE (VALUE parsed as JSON when it can be), e.g. img_size=32."""
    pretrained: bool = False
    """Load timm's pretrained weights (needs the network or a filled cache)."""
    weights: Annotated[Path, Existing()] | None = None
    """Local backbone weights: .safetensors, or .pt read with weights_only=True."""
    init_seed: Annotated[int, at_least(0)] = 0
    """Seed of the random init when neither --pretrained nor --weights is given."""

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_key_values(self.model_arg)
        if self.model is not None:
            check_model_name(self.model)
        elif self.model_arg or self.weights or self.pretrained:
            raise ConfigError("--model-arg, --weights and --pretrained describe a backbone: name it with --model")

    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.model, self.pretrained, str(self.weights) if self.weights else None,
                            parse_key_values(self.model_arg), self.init_seed)


def method_choices() -> str:
    """The --method help. Annotations are strings here, evaluated each time a parser is built, so
    a method registered after this module was imported is listed too."""
    return f"Method: {', '.join(method_names())}."


@dataclass
class MethodArgs(Validated):
    method: Annotated[str, tyro.conf.arg(help=method_choices())] = DEFAULT_METHOD
    prompt_len: Annotated[int, at_least(1)] | None = None
    """Prompt tokens per layer (token-prompt methods; default 10)."""
    prompt_dropout: Annotated[float, at_least(0), below(1)] | None = None
    """Dropout on prompt tokens (token-prompt methods; default 0.0)."""
    method_arg: list[str] = field(default_factory=list)
    """Other method options as KEY=VALUE, e.g. for vapt: kernel=3 projector=per-layer residual=false; for vp:
    template=expansive|pad|patch|full mapping=flm|ilm|rlm|first-n|linear mapping_k=2 pbl=output pbl_strength=0.1;
    head_norm=false for a plain linear head."""

    def __post_init__(self) -> None:
        super().__post_init__()
        make_config(self.method, **self.options())  # the method's own types and bounds, before anything is built

    def options(self) -> dict[str, Any]:
        given = {"prompt_len": self.prompt_len, "prompt_dropout": self.prompt_dropout}
        return {k: v for k, v in given.items() if v is not None} | parse_key_values(self.method_arg)


@dataclass
class AdversarialArgs(Validated):
    adv_train: Literal["none", "fgsm-rs", "pgd"] = "none"
    """Train the prompt on adversarial examples: fgsm-rs (fast AT) or pgd (Madry); none: clean training."""
    adv_norm: Literal["linf", "l2"] = "linf"
    adv_eps: str = "8/255"
    """Training eps in [0, 1] pixel units (a number or a fraction like 8/255)."""
    adv_steps: Annotated[int, at_least(1)] = 7
    """PGD steps per training example (pgd only)."""
    adv_ramp_steps: Annotated[int, at_least(0)] = 0
    """Ramp eps up linearly from 0 over this many optimizer steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        attack_threat(self.adv_norm, self.adv_eps)

    def config(self) -> AdversarialConfig | None:
        if self.adv_train == "none":
            return None
        threat = attack_threat(self.adv_norm, self.adv_eps)
        return AdversarialConfig(threat, self.adv_train, pgd_steps=self.adv_steps, ramp_steps=self.adv_ramp_steps)


@dataclass
class Train(Validated):
    """Train one method on one task and save its prompt."""

    data: str
    """Task: a VTAB-1k-layout folder, fgvc:[NAME:]PATH (VPT's json splits) or torchvision:NAME:ROOT."""
    out: Annotated[Path, Writable()]
    """Run folder: checkpoints every epoch, metrics.json/csv, and the final prompt in OUT/prompt."""
    backbone: BackboneArgs
    method: MethodArgs = field(default_factory=MethodArgs)
    train: TrainConfig = field(default_factory=TrainConfig)
    adversarial: AdversarialArgs = field(default_factory=AdversarialArgs)
    train_split: str | None = None
    """Split to train on (default: the final-training split, train800val200 for VTAB-1k and trainval
    for FGVC and torchvision sets; train800 or train while tuning on val200 / val)."""
    download: bool = False
    """Let a torchvision dataset download itself when it is not on disk."""
    eval_split: str | None = "test"
    """Split scored after every epoch (None: no evaluation)."""
    resume: bool = False
    """Continue the run in OUT from its last checkpoint."""
    progress: bool = True
    """Show progress bars (--no-progress for logs)."""

    def run(self) -> None:
        from accelerate import PartialState

        from vprompt.runs import train_on_task

        row = train_on_task(self.data, self.backbone.spec(), self.method.method, self.method.options(),
                            self.train, self.out, self.train_split, self.eval_split, self.resume, self.progress,
                            adversarial=self.adversarial.config(), download=self.download)
        if PartialState().is_main_process:  # once, also under `accelerate launch`
            print(json.dumps(row, indent=2))


@dataclass
class Eval(Validated):
    """Accuracy of a saved prompt on one split of a task folder; with --attack, robust accuracy too."""

    prompt: str
    """A prompt checkpoint folder, a run folder from `vprompt train`, or hf://ORG/NAME[@REVISION]."""
    data: str
    """Task: a VTAB-1k-layout folder, fgvc:[NAME:]PATH (VPT's json splits) or torchvision:NAME:ROOT."""
    split: str = "test"
    """Split to score (train800, val200, train800val200, test; train, val, trainval for FGVC and torchvision)."""
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(attack="none"))
    json: bool = False
    """Print the result as JSON."""

    def run(self) -> None:
        from vprompt.runs import evaluate_on_task

        row = evaluate_on_task(self.prompt, self.data, self.split, self.attack.batch_size, progress=not self.json,
                               attack=self.attack)
        if "robust" in row and not self.json:
            print_attack_report(row["task"], self.split, row["robust"], self.attack.eps)
        print(json.dumps(row) if self.json else
              f"{row['task']} [{row['split']}, {row['n']} images]: accuracy {row['acc']:.4f} ({row['method']} on {row['backbone']})")


@dataclass
class Predict(Validated):
    """Top-k classes of a trained prompt for your own images (files, folders, globs) or a task split."""

    prompt: str
    """A prompt checkpoint folder, a run folder from `vprompt train`, or hf://ORG/NAME[@REVISION]."""
    images: Positional[list[str]] = field(default_factory=list)
    """Image files, folders (searched recursively for image files) or glob patterns."""
    data: str | None = None
    """Instead of IMAGES: a task (any --data spec) whose --split is predicted."""
    split: str = "test"
    """The split of --data to predict."""
    top_k: Annotated[int, at_least(1)] = 5
    """Classes per image, most probable first."""
    out: Annotated[Path, Writable()] | None = None
    """Write the rows to a .csv or .json file (default: a line per image on stdout)."""
    batch_size: Annotated[int, at_least(1)] = 64
    device: str = "cpu"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    strict: bool = False
    """Stop at the first unreadable file (exit 2) instead of giving it an error row."""
    progress: bool = True
    """Show a progress bar (--no-progress for logs)."""

    def run(self) -> None:
        from vprompt.recipes.predict import predict_to

        predict_to(self.prompt, self.images, self.data, self.split, self.top_k, self.out, self.batch_size,
                   self.device, self.strict, self.progress)


@dataclass
class Export(Validated):
    """A trained prompt as one standalone file (TorchScript or ONNX): [0, 1] images in, logits out,
    without vprompt or timm; a JSON sidecar holds class names, input size and fingerprints."""

    prompt: str
    """A prompt checkpoint folder, a run folder from `vprompt train`, or hf://ORG/NAME[@REVISION]."""
    out: Annotated[Path, Writable()]
    """The file to write (e.g. model.onnx or model.pt); the sidecar is OUT.json."""
    format: Literal["onnx", "torchscript"] = "onnx"
    """onnx (runs with onnxruntime; needs the export extra) or torchscript (runs with torch.jit.load)."""

    def run(self) -> None:
        from vprompt.export import export_model
        from vprompt.checkpoint import resolve_prompt_dir
        from vprompt.model import load_prompt

        prompt_dir = resolve_prompt_dir(self.prompt)
        sidecar = export_model(load_prompt(prompt_dir), self.out, self.format, prompt_dir)
        print(f"exported {self.out} ({self.format}, checked against the PromptedModel) and {sidecar}")


@dataclass
class Attack(Validated):
    """Clean, PGD and AutoAttack accuracy of a saved prompt; the adversary perturbs the target image
    before it is prompted."""

    prompt: str
    """A prompt checkpoint folder, a run folder from `vprompt train`, or hf://ORG/NAME[@REVISION]."""
    data: str
    """Task: a VTAB-1k-layout folder, fgvc:[NAME:]PATH (VPT's json splits) or torchvision:NAME:ROOT."""
    split: str = "test"
    attack: AttackConfig = field(default_factory=AttackConfig)
    json: bool = False
    """Print the result as JSON."""

    def run(self) -> None:
        from vprompt.runs import attack_on_task

        row = attack_on_task(self.prompt, self.data, self.split, self.attack, progress=not self.json)
        if self.json:
            print(json.dumps(row))
        else:
            print_attack_report(row["task"], self.split, row, self.attack.eps)


def print_attack_report(task: str, split: str, report: dict[str, Any], eps_text: str) -> None:
    """One line for clean accuracy and the threat, then one per attack with its robust accuracy."""
    threat = f"{report['norm']} eps {report['eps']:.4g} ({eps_text}), first {report['n']} images of {split}"
    print(f"{task}: clean {report['clean_acc']:.4f}; {threat}")
    for key, name in (("robust_acc_pgd", "attack_pgd"), ("robust_acc_aa", "attack_aa")):
        if key in report:
            print(f"  robust {report[key]:.4f} under {report[name]}")


@dataclass
class Params(Validated):
    """Trainable parameters of a model × method: prompt, head and total."""

    backbone: BackboneArgs
    method: MethodArgs = field(default_factory=MethodArgs)
    num_classes: Annotated[int, at_least(1)] = 100
    """Target classes (sets the head size)."""
    json: bool = False

    def run(self) -> None:
        from vprompt.model import create_model, parameter_report

        model = create_model(self.backbone.spec(), self.method.method, self.num_classes, **self.method.options())
        report = parameter_report(model).to_dict()
        if self.json:
            print(json.dumps(report))
            return
        for key, value in report.items():
            print(f"{key:>16}: {value:,}")
        share = report["total_trainable"] / report["backbone_total"]
        print(f"{'trainable share':>16}: {share:.4%} of the backbone")


@dataclass
class Models:
    """The compatibility matrix: timm model families, example names, the methods that run on each."""

    json: bool = False
    """Print the matrix as JSON."""
    markdown: bool = False
    """Print the markdown table the README carries."""
    check: bool = False
    """Also run every method on a tiny random-init build of each family (offline, about a minute)."""

    def run(self) -> None:
        from vprompt.families.matrix import ROWS, check, markdown, matrix

        rows = matrix()
        if self.check:
            rows = [row | {"check": check(spec, row["methods"])} for spec, row in
                    zip(ROWS, progress_over(rows, "checking families"))]
        if self.json:
            print(json.dumps(rows, indent=2))
        elif self.markdown:
            print(markdown(rows))
        else:
            width = max(len(row["family"]) for row in rows)
            for row in rows:
                print(f"{row['family']:{width}}  {row['timm_class']:26} {', '.join(row['methods'])}")
                print(f"{'':{width}}  e.g. {', '.join(row['examples'])}" + (f"; {row['notes']}" if row["notes"] else ""))
        failures = [f"{row['family']}: {method} {result}" for row in rows
                    for method, result in row.get("check", {}).items() if result.startswith("MISMATCH")]
        if failures:
            raise ConfigError(f"{len(failures)} methods behave unlike the matrix says, first: {failures[0]}")


def progress_over(items: list, description: str):
    from tqdm import tqdm

    return tqdm(items, desc=description, file=sys.stderr)


@dataclass
class Synth(Validated):
    """Write the offline synthetic suite in the VTAB-1k file-list layout."""

    out: Positional[Annotated[Path, Writable()]]
    """Folder for the suite: one task folder each, plus suite.json."""
    seed: Annotated[int, at_least(0)] = 0
    """Same seed, same files."""
    image_size: Annotated[int, at_least(16)] = 32
    """Side of the square images, in pixels (at least 16)."""
    test_size: Annotated[int, at_least(1)] = 500
    """Images in each test split (train800 / val200 are fixed by the layout)."""
    tasks: Annotated[list[str], NonEmpty()] | None = None
    """Tasks to write (default: all): objects textures digits cells sprites_location sprites_orientation count."""

    def __post_init__(self) -> None:
        super().__post_init__()
        synthetic_task_names(self.tasks)

    def run(self) -> None:
        from vprompt.data import write_synthetic_suite

        written = write_synthetic_suite(self.out, seed=self.seed, image_size=self.image_size,
                                        test_size=self.test_size, tasks=self.tasks)
        print(f"wrote {len(written)} tasks to {self.out}: {', '.join(p.name for p in written)}")


@dataclass
class Check(Validated):
    """Verify a task folder or a folder of tasks, and say precisely what is wrong."""

    path: Positional[Annotated[Path, Existing()]]
    """A task folder (with the split files) or a folder of task folders."""

    def run(self) -> None:
        from vprompt.data import check_dataset

        report = check_dataset(self.path, progress=True)
        print("\n".join(report.lines()))
        if not report.ok:
            raise SystemExit(1)


class Group:
    """A command with subcommands: runs the one chosen."""

    command: Any

    def run(self) -> None:
        self.command.run()


@dataclass
class Data(Group):
    """Dataset tools: write the synthetic suite, check a prepared folder."""

    command: Union[Annotated[Synth, subcommand("synth")], Annotated[Check, subcommand("check")]]


@dataclass
class Demo:
    """Offline tour: synthetic suite, then linear / VPT-shallow / VPT-deep on a small ViT; prints a table."""

    config: DemoConfig = field(default_factory=DemoConfig)

    def run(self) -> None:
        from vprompt.recipes.demo import demo_table, run_demo

        rows = run_demo(self.config)
        print(demo_table(rows, self.config))
        print(f"\nresults: {self.config.out / 'results.json'}")


@dataclass
class OptionalBackboneArgs(BackboneArgs):
    model: str | None = None  # type: ignore[assignment]
    """timm model name (default: the recipe's own offline backbone)."""

    def spec_or_none(self) -> BackboneSpec | None:
        return self.spec() if self.model else None


@dataclass
class ReproduceVAPT:
    """VAPT vs VPT-deep / VPT-shallow / linear under the VTAB-1k protocol (offline by default)."""

    config: VAPTReproduction = field(default_factory=VAPTReproduction)
    backbone: OptionalBackboneArgs = field(default_factory=OptionalBackboneArgs)

    def run(self) -> None:
        from vprompt.recipes.vapt import run_vapt_reproduction

        run_vapt_reproduction(self.config, self.backbone.spec_or_none())
        print((self.config.out / "results.md").read_text())
        print(f"results: {self.config.out / 'results.json'}")


@dataclass
class ReproducePBL:
    """VP and PBL on the zoo's standard and robust CNN: clean, PGD and AutoAttack accuracy."""

    config: PBLReproduction = field(default_factory=PBLReproduction)

    def run(self) -> None:
        run_robustness(self.config)


@dataclass
class ReproduceRobustTokens:
    """Linear, VPT-deep, VAPT and VP (+ PBL) on the zoo's standard and robust ViT: clean, PGD and AutoAttack."""

    config: RobustTokensReproduction = field(default_factory=RobustTokensReproduction)

    def run(self) -> None:
        run_robustness(self.config)


def run_robustness(config: PBLReproduction) -> None:
    from vprompt.recipes.pbl import run_robustness_reproduction

    run_robustness_reproduction(config)
    print((config.out / "results.md").read_text())
    print(f"results: {config.out / 'results.json'}, plot: {config.out / 'tradeoff.png'}")


@dataclass
class Sweep(Validated):
    """The tuning protocol over tasks × methods: grid (base_lr × weight decay × prompt length) on the
    tuning split, pick on validation, retrain × seeds, last-epoch test mean ± std; locally or on Ray.
    Resumable: rerun the same command after a crash and finished runs are read back."""

    data: Annotated[list[str], NonEmpty()]
    """Tasks: VTAB-layout task folders (or a folder of them), fgvc:[NAME:]PATH, torchvision:NAME:ROOT."""
    out: Annotated[Path, Writable()]
    """Sweep folder: runs/TASK/METHOD/{grid/POINT,seedS}, results.json, results.md."""
    backbone: BackboneArgs
    methods: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: [DEFAULT_METHOD])
    method_arg: list[str] = field(default_factory=list)
    """Options for every method as KEY=VALUE (e.g. prompt_dropout=0.1)."""
    base_lrs: Annotated[list[Annotated[float, above(0)]], NonEmpty()] = field(
        default_factory=lambda: [50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05])
    weight_decays: Annotated[list[Annotated[float, at_least(0)]], NonEmpty()] = field(
        default_factory=lambda: [0.01, 1e-3, 1e-4, 0.0])
    prompt_lens: list[Annotated[int, at_least(1)]] = field(default_factory=list)
    """Prompt lengths searched for prompted methods (VPT: 1 5 10 50 100 200); empty: the method default."""
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, batch_size=64, warmup_epochs=10))
    """Shared training settings (base_lr, weight_decay and seed come from the grid)."""
    ray: str = "local"
    """none: in this process; local: a Ray instance on this machine; auto or HOST:PORT: a Ray cluster."""
    ray_timeout: Annotated[float, above(0)] = 30.0
    """Seconds to wait for a Ray cluster to answer before giving up."""
    cpus_per_run: Annotated[float, above(0)] = 1.0
    gpus_per_run: Annotated[float, at_least(0)] = 0.0
    """GPUs each run reserves on Ray (e.g. 1, or 0.5 to share)."""
    download: bool = False
    """Fetch torchvision sets that are not on disk (once, before the runs start)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        options = parse_key_values(self.method_arg)
        for method in self.methods:
            make_config(method, **options)

    def run(self) -> None:
        from vprompt.sweep import Protocol, make_executor, run_sweep

        refuse_single_seed(self.train)
        protocol = Protocol(self.base_lrs, self.weight_decays, self.prompt_lens or None, self.seeds, self.train)
        options = parse_key_values(self.method_arg)
        executor = make_executor(self.ray, self.cpus_per_run, self.gpus_per_run, ray_timeout=self.ray_timeout)
        run_sweep(self.data, {m: dict(options) for m in self.methods}, self.backbone.spec(), protocol, self.out,
                  executor, download=self.download)
        print((self.out / "results.md").read_text())
        print(f"results: {self.out / 'results.json'}")


@dataclass
class Report(Validated):
    """Our results beside the papers' numbers (both averaging conventions, seed spread), with a plot."""

    results: Positional[list[Annotated[Path, Existing()]]] = field(default_factory=list)
    """Results folders (or results.json files) of sweeps and reproductions."""
    out: Annotated[Path, Writable()] | None = None
    """Where report.md, report.json and report.png go (default: the first results folder)."""
    papers: bool = False
    """Print the quoted paper numbers (the data vprompt compares with) and stop."""

    def run(self) -> None:
        if self.papers:
            from vprompt.reference import paper_numbers
            from vprompt.report import markdown_table

            print(markdown_table(list(paper_numbers()), ["paper", "method", "benchmark", "average", "value"]))
            return
        if not self.results:
            raise ConfigError("name at least one results folder (or pass --papers)")
        from vprompt.compare import write_report

        out = self.out or (self.results[0] if self.results[0].is_dir() else self.results[0].parent)
        print(write_report(self.results, out))
        print(f"report: {out / 'report.md'}, plot: {out / 'report.png'}")


RECIPES = {
    "vapt": "VAPT vs VPT-deep / VPT-shallow / linear, VTAB-1k protocol (offline: synthetic suite)",
    "pbl": "VP and PBL on standard vs robust zoo CNNs: clean, PGD and AutoAttack accuracy (offline)",
    "robust-tokens": "linear, VPT-deep, VAPT, VP (+ PBL) on standard vs robust zoo ViTs: clean, PGD, AutoAttack",
    "hgprompt": "HGPrompt vs six baselines, leave-one-task-out prompt transfer (offline: synthetic suite)",
}


@dataclass
class ReproduceHGPrompt:
    """HGPrompt vs its baselines: leave-one-task-out prompt transfer (offline: the synthetic suite, zoo ViT)."""

    config: HGPromptReproduction = field(default_factory=HGPromptReproduction)
    backbone: OptionalBackboneArgs = field(default_factory=OptionalBackboneArgs)

    def run(self) -> None:
        from vprompt.recipes.hgprompt import run_hgprompt_reproduction

        run_hgprompt_reproduction(self.config, self.backbone.spec_or_none())
        print((self.config.out / "results.md").read_text())
        print(f"results: {self.config.out / 'results.json'}, weights: {self.config.out / 'weights.png'}")


@dataclass
class Transfer(Validated):
    """Multi-source prompt transfer: tune a target task from the bank's prompts (HGPrompt and baselines).
    Resumable: rerun the same command and finished runs are read back."""

    bank: Annotated[Path, Existing()]
    """Prompt bank folder (`vprompt bank add`); its prompts are the sources and fix the backbone."""
    target: str
    """Target task: a VTAB-1k-layout folder, fgvc:[NAME:]PATH or torchvision:NAME:ROOT."""
    out: Annotated[Path, Writable()]
    """Folder for source_scores.json, METHOD/seedS runs and results.json."""
    methods: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: ["hgprompt"])
    """Any of: scratch uniform best-hscore oracle similarity hgprompt-no-gar hgprompt."""
    sources: list[str] = field(default_factory=list)
    """Bank entries to use (default: all); entries trained on the target task itself are always left out."""
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] = field(default_factory=lambda: [0])
    """Seeds of the target runs (--seed does not apply here)."""
    config: TransferConfig = field(default_factory=TransferConfig)
    rank_only: bool = False
    """Only rank the sources by H-score on the target training set (K forward passes) and stop."""
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_methods(self.methods)

    def run(self) -> None:
        from vprompt.bank import list_bank, select_entries
        from vprompt.report import markdown_table, write_rows
        from vprompt.transfer import TargetTransfer, run_transfer

        refuse_single_seed(self.config.tune)
        entries = select_entries(list_bank(self.bank), self.sources or None)
        if self.rank_only:
            job = TargetTransfer(entries, self.target, self.config, self.out, self.progress)
            print(markdown_table(job.scores(), ["source", "h_score", "probe_test_acc"]))
            return
        rows = run_transfer(entries, self.target, self.methods, self.seeds, self.config, self.out, self.progress)
        write_rows(rows, self.out / "results.json")
        print(markdown_table(rows, ["target", "method", "seed", "test_acc", "weights"]))
        print(f"results: {self.out / 'results.json'}")


@dataclass
class BankAdd(Validated):
    """File a trained prompt (a checkpoint folder or a training run's folder) in a prompt bank."""

    bank: Positional[Annotated[Path, Writable()]]
    """Prompt bank folder (created when new)."""
    prompt: Positional[str]
    """A prompt checkpoint folder, the folder of a `vprompt train` run, or hf://ORG/NAME[@REVISION]."""
    name: Annotated[str, NonEmpty()] | None = None
    """Entry name (default: the task, else the name of the folder given)."""
    task: Annotated[str, NonEmpty()] | None = None
    """The task the prompt was trained on (default: the entry name)."""
    accuracy: Annotated[float, at_least(0), at_most(1)] | None = None
    """Its accuracy on that task (default: the run's last evaluated accuracy)."""
    replace: bool = False
    """Overwrite an entry of the same name."""

    def run(self) -> None:
        from vprompt.bank import add_to_bank

        entry = add_to_bank(self.bank, self.prompt, self.name, self.task, self.accuracy, self.replace)
        print(f"added '{entry.name}' to {self.bank}: {json.dumps(entry.card)}")


@dataclass
class BankList(Validated):
    """Print the cards of a prompt bank."""

    bank: Positional[Annotated[Path, Existing()]]
    """Prompt bank folder."""
    json: bool = False
    """Print the cards as JSON."""

    def run(self) -> None:
        from vprompt.bank import list_bank
        from vprompt.report import markdown_table

        cards = [entry.card for entry in list_bank(self.bank)]
        if self.json:
            print(json.dumps(cards, indent=2))
        elif not cards:
            print(f"{self.bank} holds no prompts yet")
        else:
            print(markdown_table(cards, ["name", "task", "method", "prompt_len", "backbone", "num_classes", "accuracy"]))


@dataclass
class Bank(Group):
    """The prompt bank: trained prompts with cards, the sources of `vprompt transfer`."""

    command: Union[Annotated[BankList, subcommand("list")], Annotated[BankAdd, subcommand("add")]]


@dataclass
class ReproduceList:
    """List the paper recipes that `vprompt reproduce` runs."""

    def run(self) -> None:
        for name, what in RECIPES.items():
            print(f"{name:14} {what}")


@dataclass
class Reproduce(Group):
    """Paper recipes: `vprompt reproduce list` shows them."""

    command: Union[Annotated[ReproduceVAPT, subcommand("vapt")], Annotated[ReproducePBL, subcommand("pbl")],
                   Annotated[ReproduceRobustTokens, subcommand("robust-tokens")],
                   Annotated[ReproduceHGPrompt, subcommand("hgprompt")], Annotated[ReproduceList, subcommand("list")]]


@dataclass
class ZooBuild(Validated):
    """Pretrain zoo models on the fractal source task (standard, then its adversarially trained twin)."""

    names: Positional[list[str]] = field(default_factory=list)
    """Recipes to build, in order (default: all): fractal-resnet fractal-resnet-robust fractal-vit fractal-vit-robust."""
    out: Annotated[Path, Writable()] | None = None
    """Folder for weights and cards (default: the package's zoo folder, so they ship)."""
    work: Annotated[Path, Writable()] = Path("zoo-build")
    """Training checkpoints: an interrupted build continues from here."""
    tiny: bool = False
    """Shrink every recipe to seconds (for trying the pipeline, not for use)."""

    def run(self) -> None:
        from vprompt.recipes.zoo_build import RECIPES, build, recipe_named
        from vprompt.zoo import PACKAGE_DIR

        for name in self.names or list(RECIPES):
            recipe = recipe_named(name)
            card = build(recipe.tiny() if self.tiny else recipe, self.out or PACKAGE_DIR, self.work / name)
            print(f"built zoo:{name}: source {card['source_acc']:.3f}, clean {card['clean_acc']:.3f}, "
                  f"PGD-20 robust {card['robust_acc_pgd20']:.3f} at eps {card['eps'] * 255:.0f}/255, "
                  f"{card['build_seconds']:.0f} s")


@dataclass
class ZooList:
    """Print the zoo's model cards."""

    json: bool = False
    """Print the cards as JSON."""

    def run(self) -> None:
        from vprompt.zoo import list_cards

        cards = list_cards()
        if self.json:
            print(json.dumps(cards, indent=2))
            return
        if not cards:
            print("no zoo models yet")
        for card in cards:
            scores = ", ".join(f"{k} {card[k]:.3f}" for k in ("source_acc", "clean_acc", "robust_acc_pgd20") if k in card)
            print(f"zoo:{card['name']:24} {card['arch']} ({card.get('variant', '?')}) {scores}")


@dataclass
class Zoo(Group):
    """The offline source-model zoo: list the cards, or build the models."""

    command: Union[Annotated[ZooList, subcommand("list")], Annotated[ZooBuild, subcommand("build")]]


Command = Union[
    Annotated[Demo, subcommand("demo")],
    Annotated[Train, subcommand("train")],
    Annotated[Eval, subcommand("eval")],
    Annotated[Attack, subcommand("attack")],
    Annotated[Predict, subcommand("predict")],
    Annotated[Export, subcommand("export")],
    Annotated[Params, subcommand("params")],
    Annotated[Models, subcommand("models")],
    Annotated[Data, subcommand("data")],
    Annotated[Sweep, subcommand("sweep")],
    Annotated[Transfer, subcommand("transfer")],
    Annotated[Bank, subcommand("bank")],
    Annotated[Report, subcommand("report")],
    Annotated[Reproduce, subcommand("reproduce")],
    Annotated[Zoo, subcommand("zoo")],
]


def refuse_single_seed(train: TrainConfig) -> None:
    """Commands that run every seed in --seeds share TrainConfig's --seed flag; a value there would
    otherwise be silently ignored, so a user who meant --seeds learns it at once."""
    if train.seed != TrainConfig.seed:
        raise ConfigError(f"--seed does not apply to this command, which runs each seed in --seeds "
                          f"(use --seeds {train.seed})")


def parse_key_values(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are JSON when they parse (numbers, booleans, lists), else strings."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got '{item}'")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def parse(argv: list[str] | None) -> Any:
    """The command the arguments describe. tyro's boxed parse errors are caught and re-raised as
    one line; --help still prints to stdout and exits 0."""
    rendered = io.StringIO()
    try:
        with contextlib.redirect_stderr(rendered):
            command = tyro.cli(
                Command, args=argv, prog="vprompt",
                description="vprompt: visual prompting for frozen vision models.",
                config=(tyro.conf.OmitSubcommandPrefixes, tyro.conf.OmitArgPrefixes, tyro.conf.FlagCreatePairsOff),
            )
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise ConfigError(parse_error_line(rendered.getvalue())) from None
        sys.stderr.write(rendered.getvalue())
        raise
    except BaseException:
        sys.stderr.write(rendered.getvalue())  # warnings printed while the config was built
        raise
    sys.stderr.write(rendered.getvalue())
    return command


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one ``warning:`` line; everyone else's as Python prints them."""
    if issubclass(category, VpromptWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> None:
    """Parse, run, and turn every failure the user can fix into one ``error:`` line and exit 2
    (see ``vprompt.failures``); anything else is a bug and keeps its traceback."""
    warnings.showwarning = show_warning
    try:
        parse(argv).run()
    except KeyboardInterrupt:
        print("\ninterrupted; a training run continues from its last checkpoint with --resume", file=sys.stderr)
        raise SystemExit(130) from None
    except BrokenPipeError:  # `vprompt ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        raise SystemExit(1) from None
    except Exception as exc:  # noqa: BLE001  (the one place that decides what the user reads)
        message = user_message(exc)
        if message is None:
            traceback.print_exc()
            print(f"\n{BUG_REPORT}", file=sys.stderr)
            raise SystemExit(1) from None
        tqdm.write(f"error: {message}", file=sys.stderr)  # on a line of its own, below any progress bar
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
