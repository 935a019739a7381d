"""One run on a task: data + model + loop, wired together (training, evaluation, attack).

The library's entry points for "this method on this task"; the sweep and the recipes build on
them, so they live below both.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vprompt.backbones import BackboneSpec
from vprompt.data.registry import open_task
from vprompt.errors import DataError, VpromptWarning
from vprompt.evaluate import evaluate
from vprompt.model import PromptedModel, create_model, load_prompt
from vprompt.presets import get_preset
from vprompt.robust.adversarial import AdversarialConfig
from vprompt.robust.evaluation import AttackConfig, attack_report
from vprompt.train import TrainConfig, train


def train_on_task(
    task_dir: Path | str,
    backbone: BackboneSpec,
    method: str,
    method_options: dict[str, Any],
    config: TrainConfig,
    out_dir: Path | str,
    train_split: str | None = None,
    eval_split: str | None = "test",
    resume: bool = False,
    progress: bool = True,
    eval_every: int = 1,
    adversarial: AdversarialConfig | None = None,
    download: bool = False,
) -> dict[str, Any]:
    """Train ``method`` on one task and evaluate the last epoch; returns a flat result row.
    ``task_dir`` is any ``--data`` spec (a VTAB-1k folder, ``fgvc:…``, ``torchvision:…``); the
    training split defaults to the task's final-training split (train800val200 for VTAB-1k).
    With ``adversarial``, the prompt is trained on adversarial examples of the training images."""
    source = open_task(task_dir, download=download)
    task = source.info
    train_split = train_split or source.protocol.final_train
    if config.preset is not None:
        for note in get_preset(config.preset).mismatches(method, task.name):
            warnings.warn(note, VpromptWarning, stacklevel=2)
    torch.manual_seed(config.seed)  # prompt and head init
    model = create_model(backbone, method, task.num_classes, task.class_names, **method_options)
    size = model.image_size
    train_set = source.dataset(train_split, size, train=True)
    eval_set = source.dataset(eval_split, size) if eval_split else None
    result = train(model, train_set, out_dir, config, eval_set=eval_set, resume=resume, progress=progress,
                   eval_every=eval_every, adversarial=adversarial)
    last = result.metrics[-1]
    return {
        "task": task.name,
        "num_classes": task.num_classes,
        "method": method,
        "seed": config.seed,
        "train_split": train_split,
        "eval_split": eval_split,
        "train_acc": last["train_acc"],
        "eval_acc": last.get("eval_acc"),
        "epochs": config.epochs,
        "precision": last["precision"],
        "image_source": source.image_source,
        "adversarial": None if adversarial is None else adversarial.describe(),
        "preset": config.preset,
        "prompt": str(result.final_dir),
    }


def prompt_and_split(prompt_dir: Path | str, task_dir: Path | str, split: str,
                     weights: Path | str | None = None) -> tuple[PromptedModel, Dataset]:
    """A saved prompt (eval mode; ``weights``: its backbone's local weights) and a split of a task
    (any ``--data`` spec) that it can score."""
    model = load_prompt(prompt_dir, weights=weights)
    source = open_task(task_dir, check_sizes=False)
    if source.info.num_classes != model.num_classes:
        raise DataError(f"{source.info.root} has {source.info.num_classes} classes, the prompt was trained "
                        f"for {model.num_classes}")
    return model, source.dataset(split, model.image_size)


def evaluate_on_task(prompt_dir: Path | str, task_dir: Path | str, split: str = "test",
                     batch_size: int = 128, progress: bool = True,
                     attack: AttackConfig | None = None, weights: Path | str | None = None) -> dict[str, Any]:
    """Accuracy of a saved prompt on one split of a task folder; with an ``attack`` (other than
    none), its report on the first images of the split goes under ``robust``."""
    model, dataset = prompt_and_split(prompt_dir, task_dir, split, weights)
    scores = evaluate(model, dataset, batch_size, progress=progress)
    row = {"task": dataset.task.name, "split": split, "method": model.method.name,
           "backbone": model.backbone_spec.name, "acc": scores["acc"], "loss": scores["loss"], "n": scores["n"]}
    if attack is not None and attack.attack != "none":
        row["robust"] = attack_report(model, dataset, model.num_classes, attack, progress=progress)
    return row


def attack_on_task(prompt_dir: Path | str, task_dir: Path | str, split: str, config: AttackConfig,
                   progress: bool = True, weights: Path | str | None = None) -> dict[str, Any]:
    """Clean and robust accuracy of a saved prompt on the first images of a split; the adversary
    perturbs the target image before the prompt is applied."""
    model, dataset = prompt_and_split(prompt_dir, task_dir, split, weights)
    report = attack_report(model, dataset, model.num_classes, config, progress=progress)
    return {"task": dataset.task.name, "split": split, "method": model.method.name,
            "backbone": model.backbone_spec.name} | report
