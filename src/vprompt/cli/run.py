"""Commands on one task or one prompt: train, eval, attack, predict, export, params."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from tyro.conf import Positional

from vprompt.cli.args import AdversarialArgs, BackboneArgs, ColumnArgs, ConfigFile, MethodArgs, Progress, PromptWeights, Task
from vprompt.robust.evaluation import AttackConfig
from vprompt.train import TrainConfig
from vprompt.validation import Validated, Writable, at_least


@dataclass
class Train(Validated):
    data: Task
    out: Annotated[Path, Writable()]
    """Run folder: checkpoints every epoch, metrics.json/csv, and the final prompt in OUT/prompt."""
    backbone: BackboneArgs
    config_file: ConfigFile = None
    """A config.yaml written by an earlier run (or by hand): its settings, then the flags given here, which win."""
    method: MethodArgs = field(default_factory=MethodArgs)
    train: TrainConfig = field(default_factory=TrainConfig)
    adversarial: AdversarialArgs = field(default_factory=AdversarialArgs)
    train_split: str | None = None
    """Split to train on (default: the final-training split, train800val200 for VTAB-1k and trainval
    for FGVC and torchvision sets; train800 or train while tuning on val200 / val)."""
    download: bool = False
    """Let a torchvision or Hugging Face dataset download itself when it is not on disk or in the cache."""
    columns: ColumnArgs = field(default_factory=ColumnArgs)
    eval_split: str | None = "test"
    """Split scored after every epoch (None: no evaluation)."""
    resume: bool = False
    """Continue the run in OUT from its last checkpoint."""
    progress: Progress = True

    def run(self) -> None:
        from accelerate import PartialState

        from vprompt.cli.config_file import write_config
        from vprompt.progress import print_progress_lines
        from vprompt.runs import train_on_task
        from vprompt.train import EPOCH_LOG

        if not self.progress:  # for logs: a line per epoch instead of the bars, on stderr like them
            print_progress_lines(EPOCH_LOG, "stderr")
        row = train_on_task(self.columns.on(self.data), self.backbone.spec(), self.method.method, self.method.options,
                            self.train, self.out, self.train_split, self.eval_split, self.resume, self.progress,
                            adversarial=self.adversarial.config(), download=self.download)
        if PartialState().is_main_process:  # once, also under `accelerate launch`
            write_config(self, self.out)
            print(json.dumps(row, indent=2))


@dataclass
class Eval(Validated):
    prompt: str
    """A prompt checkpoint folder, a run folder from `vprompt train`, or hf://ORG/NAME[@REVISION]."""
    data: Task
    split: str = "test"
    """Split to score (train800, val200, train800val200, test; train, val, trainval for FGVC and torchvision)."""
    attack: AttackConfig = field(default_factory=lambda: AttackConfig(attack="none"))
    columns: ColumnArgs = field(default_factory=ColumnArgs)
    backbone_weights: PromptWeights = field(default_factory=PromptWeights)
    json: bool = False
    """Print the result as JSON."""

    def run(self) -> None:
        from vprompt.report import attack_lines
        from vprompt.runs import evaluate_on_task

        row = evaluate_on_task(self.prompt, self.columns.on(self.data), self.split, self.attack.batch_size,
                               progress=not self.json, attack=self.attack, weights=self.backbone_weights.weights)
        if self.json:
            print(json.dumps(row))
            return
        if "robust" in row:
            print("\n".join(attack_lines(row["task"], self.split, row["robust"], self.attack.eps)))
        print(f"{row['task']} [{row['split']}, {row['n']} images]: accuracy {row['acc']:.4f} "
              f"({row['method']} on {row['backbone']})")


@dataclass
class Predict(Validated):
    prompt: str
    """A prompt checkpoint folder, a run folder from `vprompt train`, or hf://ORG/NAME[@REVISION]."""
    images: Positional[list[str]] = field(default_factory=list)
    """Image files, folders (searched recursively for image files) or glob patterns."""
    data: str | None = None
    """Instead of IMAGES: a task (any --data spec) whose --split is predicted."""
    split: str = "test"
    """The split of --data to predict."""
    columns: ColumnArgs = field(default_factory=ColumnArgs)
    backbone_weights: PromptWeights = field(default_factory=PromptWeights)
    top_k: Annotated[int, at_least(1)] = 5
    """Classes per image, most probable first."""
    out: Annotated[Path, Writable()] | None = None
    """Write the rows to a .csv or .json file (default: a line per image on stdout)."""
    batch_size: Annotated[int, at_least(1)] = 64
    device: str = "cpu"
    """cpu, cuda, cuda:N, or auto (cuda when available)."""
    strict: bool = False
    """Stop at the first unreadable file (exit 2) instead of giving it an error row."""
    progress: Progress = True

    def run(self) -> None:
        from vprompt.recipes.predict import predict_to

        data = self.data and self.columns.on(self.data)
        predict_to(self.prompt, self.images, data, self.split, self.top_k, self.out, self.batch_size, self.device,
                   self.strict, self.progress, self.backbone_weights.weights)


@dataclass
class Export(Validated):
    prompt: str
    """A prompt checkpoint folder, a run folder from `vprompt train`, or hf://ORG/NAME[@REVISION]."""
    out: Annotated[Path, Writable()]
    """The file to write (e.g. model.onnx or model.pt); the sidecar is OUT.json."""
    format: Literal["onnx", "torchscript"] = "onnx"
    """onnx (runs with onnxruntime; needs the export extra) or torchscript (runs with torch.jit.load)."""
    backbone_weights: PromptWeights = field(default_factory=PromptWeights)

    def run(self) -> None:
        from vprompt.checkpoint import resolve_prompt_dir
        from vprompt.export import export_model
        from vprompt.model import load_prompt

        prompt_dir = resolve_prompt_dir(self.prompt)
        model = load_prompt(prompt_dir, weights=self.backbone_weights.weights)
        sidecar = export_model(model, self.out, self.format, prompt_dir)
        print(f"exported {self.out} ({self.format}, checked against the PromptedModel) and {sidecar}")


@dataclass
class Attack(Validated):
    prompt: str
    """A prompt checkpoint folder, a run folder from `vprompt train`, or hf://ORG/NAME[@REVISION]."""
    data: Task
    split: str = "test"
    attack: AttackConfig = field(default_factory=AttackConfig)
    columns: ColumnArgs = field(default_factory=ColumnArgs)
    backbone_weights: PromptWeights = field(default_factory=PromptWeights)
    json: bool = False
    """Print the result as JSON."""

    def run(self) -> None:
        from vprompt.report import attack_lines
        from vprompt.runs import attack_on_task

        row = attack_on_task(self.prompt, self.columns.on(self.data), self.split, self.attack, progress=not self.json,
                             weights=self.backbone_weights.weights)
        print(json.dumps(row) if self.json else "\n".join(attack_lines(row["task"], self.split, row, self.attack.eps)))


@dataclass
class Params(Validated):
    backbone: BackboneArgs
    method: MethodArgs = field(default_factory=MethodArgs)
    num_classes: Annotated[int, at_least(1)] = 100
    """Target classes (sets the head size)."""
    json: bool = False

    def run(self) -> None:
        from vprompt.model import count_parameters
        from vprompt.report import parameter_lines

        report = count_parameters(self.backbone.spec(), self.method.method, self.num_classes,
                                  **self.method.options).to_dict()
        print(json.dumps(report) if self.json else "\n".join(parameter_lines(report)))
