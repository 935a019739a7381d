"""`vprompt zoo build`: pretrain the offline source models on the fractal source task.

A standard model is trained from scratch on ``vprompt.data.fractal.FractalSource``; its
robust twin is fine-tuned from it with fast adversarial training (FGSM with a random start and an
eps ramp). Both go through the project's own training loop (so a build is resumable) as a
``full`` PromptedModel, and are exported as a plain timm classifier (safetensors) plus a card.
The ViT learns from the zoo ResNet (distillation, [`vprompt.distill`][]) on augmented views,
with a convolutional stem ([`vprompt.zoo.architectures`][]).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from vprompt.backbones import BackboneSpec, card_architecture, create_backbone
from vprompt.data.fractal import FractalSource
from vprompt.distill import DistillationConfig
from vprompt.errors import ConfigError
from vprompt.evaluate import evaluate
from vprompt.methods import LinearHeadConfig
from vprompt.checkpoint import write_atomic
from vprompt.model import PromptedModel
from vprompt.robust import AdversarialConfig, ThreatModel, robust_accuracy
from vprompt.train import TrainConfig, adversarial_settings, train
from vprompt.zoo import read_card
from vprompt.zoo.architectures import CONVSTEM_VIT

EPS = 8 / 255


@dataclass(frozen=True)
class SourceTask:
    """How much of the fractal source task a recipe trains and tests on."""

    classes: int = 100
    train_per_class: int = 100
    test_per_class: int = 5
    size: int = 64
    colour: str = "mixed"
    seed: int = 0
    augment: bool = False
    """Train on a random resized crop (35-100 % of the area) of each image, flipped half the time."""

    def splits(self, progress: bool = False) -> tuple[Dataset, Dataset]:
        """Train and held-out test images of the same classes (disjoint indices of one source),
        rendered once into memory: every epoch sees the same images, so re-rendering them is waste."""
        source = FractalSource(self.classes, self.train_per_class + self.test_per_class, self.size, self.seed,
                               self.colour)
        cut = self.classes * self.train_per_class
        train = rendered(Subset(source, range(cut)), progress, "render train")
        if self.augment:
            train = AugmentedImages(train.tensors[0], train.tensors[1], self.size)
        return train, rendered(Subset(source, range(cut, len(source))), progress, "render test")


def rendered(dataset: Dataset, progress: bool, desc: str) -> TensorDataset:
    """``dataset`` held in memory as fp16 images: half the memory of fp32, and still finer (about
    1/2000 near 1) than the 8-bit images the models will meet downstream."""
    loader = DataLoader(dataset, batch_size=256)
    batches = list(tqdm(loader, desc=desc, disable=not progress, leave=False))
    images = torch.cat([b[0] for b in batches]).half()
    return HalfImages(images, torch.cat([b[1] for b in batches]))


class HalfImages(TensorDataset):
    """fp16 images in memory, handed out as fp32."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = super().__getitem__(index)
        return image.float(), label


class AugmentedImages(HalfImages):
    """A new random view of each image every time it is read. The draws come from torch's global
    generator, which the training loop seeds per epoch, so a resumed build sees the same views."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        super().__init__(images, labels)
        self.view = v2.Compose([v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True),
                                v2.RandomHorizontalFlip()])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = super().__getitem__(index)
        return self.view(image).clamp(0, 1), label


@dataclass(frozen=True)
class ZooRecipe:
    name: str
    arch: str
    kwargs: dict[str, Any]
    variant: Literal["standard", "robust"]
    train: TrainConfig
    source: SourceTask = field(default_factory=SourceTask)
    parent: str | None = None
    """A robust recipe fine-tunes the standard model of this name."""
    adversarial: AdversarialConfig | None = None
    teacher: str | None = None
    """Distil from the model of this name, built into the same folder first."""
    distill_weight: float = 1.0
    """Share of the loss that matches the teacher (the rest: cross-entropy on the labels)."""
    attack_images: int = 500
    """Held-out images scored under PGD-20 for the card."""
    twin: str = "the same architecture at timm's random init, seed 0"
    """What the random-init baseline of this model is, for the card."""

    def tiny(self) -> ZooRecipe:
        """The same recipe shrunk to seconds, for tests; named ``NAME-tiny`` so it never replaces a real model."""
        source = replace(self.source, classes=4, train_per_class=8, test_per_class=4, size=16)
        kwargs = dict(self.kwargs)
        if "embed_dim" in kwargs:
            kwargs |= {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
        parent = f"{self.parent}-tiny" if self.parent else None
        teacher = f"{self.teacher}-tiny" if self.teacher else None
        return replace(self, name=f"{self.name}-tiny", parent=parent, teacher=teacher, kwargs=kwargs, source=source,
                       attack_images=16, train=replace(self.train, epochs=1, batch_size=16, warmup_epochs=0))


RESNET = {"layers": [1, 1, 1, 1], "channels": [32, 64, 128, 256]}  # 1.3M parameters: 2.5 MB in fp16
VIT = {"img_size": 64, "patch_size": 8, "embed_dim": 192, "depth": 4, "num_heads": 3}  # 1.9M: 3.9 MB
SOURCE = SourceTask(train_per_class=300)  # 100 images per class overfit (47 % source accuracy, 81 % with 300)
VIT_SOURCE = replace(SOURCE, augment=True)
STANDARD_TRAIN = TrainConfig(epochs=5, batch_size=128, optimizer="sgd", base_lr=0.4, weight_decay=5e-4,
                             warmup_epochs=1)
ROBUST_TRAIN = replace(STANDARD_TRAIN, epochs=3, base_lr=0.2, warmup_epochs=0)
VIT_TRAIN = replace(STANDARD_TRAIN, epochs=40, optimizer="adamw", base_lr=2e-3, weight_decay=0.05, warmup_epochs=2)
VIT_ROBUST_TRAIN = replace(VIT_TRAIN, epochs=8, base_lr=1e-3, warmup_epochs=0)
CONVSTEM_TWIN = ("the same convolutional-stem ViT at timm's random init (trunc-normal 0.02 transformer, "
                 "Kaiming-uniform stem convolutions), seed 0; it is what zoo_transfer's 'random' rows use")
FAST_AT = AdversarialConfig(threat=ThreatModel("linf", EPS), method="fgsm-rs", step_size=10 / 255, ramp_steps=150)

RECIPES: dict[str, ZooRecipe] = {r.name: r for r in [
    ZooRecipe("fractal-resnet", "resnet18", RESNET, "standard", STANDARD_TRAIN, SOURCE),
    ZooRecipe("fractal-resnet-robust", "resnet18", RESNET, "robust", ROBUST_TRAIN, SOURCE, parent="fractal-resnet",
              adversarial=FAST_AT),
    ZooRecipe("fractal-vit", CONVSTEM_VIT, VIT, "standard", VIT_TRAIN, VIT_SOURCE, teacher="fractal-resnet",
              twin=CONVSTEM_TWIN),
    ZooRecipe("fractal-vit-robust", CONVSTEM_VIT, VIT, "robust", VIT_ROBUST_TRAIN, VIT_SOURCE,
              parent="fractal-vit", adversarial=FAST_AT, twin=CONVSTEM_TWIN),
]}


def recipe_named(name: str) -> ZooRecipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown zoo recipe '{name}'; choose from {', '.join(RECIPES)}")
    return RECIPES[name]


def source_model(recipe: ZooRecipe, out_dir: Path) -> PromptedModel:
    """A ``full`` PromptedModel for the source task: fresh, or the parent's weights and classifier."""
    kwargs = {**recipe.kwargs, "num_classes": recipe.source.classes}
    size = [recipe.source.size, recipe.source.size]
    if recipe.parent is None:
        spec = BackboneSpec(recipe.arch, kwargs=kwargs, init_seed=recipe.source.seed, input_size=size)
    else:
        spec = built_model(recipe.parent, out_dir, f"{recipe.name} fine-tunes {recipe.parent}")
    backbone = create_backbone(spec)
    classifier = {k: v.clone() for k, v in backbone.get_classifier().state_dict().items()}
    # a plain linear head: it goes back into the backbone as its source classifier
    model = PromptedModel(backbone, spec, "full", LinearHeadConfig(head_norm=False), recipe.source.classes)
    if recipe.parent is not None:
        model.head.fc.load_state_dict(classifier)
    return model


def built_model(name: str, out_dir: Path, needed_by: str) -> BackboneSpec:
    """Zoo model ``name``, built earlier into ``out_dir``: its card's architecture and its weights."""
    card, weights = out_dir / f"{name}.json", out_dir / f"{name}.safetensors"
    for path in (card, weights):
        if not path.is_file():
            raise ConfigError(f"{needed_by}: build that first ({path} is missing)")
    return replace(card_architecture(read_card(card)), checkpoint=str(weights))


def distillation(recipe: ZooRecipe, out_dir: Path) -> DistillationConfig | None:
    if recipe.teacher is None:
        return None
    teacher = built_model(recipe.teacher, out_dir, f"{recipe.name} learns from {recipe.teacher}")
    return DistillationConfig(teacher, weight=recipe.distill_weight)


def build(recipe: ZooRecipe, out_dir: Path | str, work_dir: Path | str, progress: bool = True) -> dict[str, Any]:
    """Train (checkpoints under ``work_dir``), score and export one zoo model into ``out_dir``; returns its card."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(recipe.source.seed)
    model = source_model(recipe, out_dir)
    train_set, test_set = recipe.source.splits(progress)
    run_dir = Path(work_dir)
    resume = (run_dir / "checkpoints").is_dir()
    teacher = distillation(recipe, out_dir)
    train(model, train_set, run_dir, recipe.train, eval_set=test_set, resume=resume, progress=progress,
          eval_every=recipe.train.epochs, adversarial=recipe.adversarial, distillation=teacher)
    model.eval()
    round_to_half(model)  # score exactly the weights that ship
    clean = evaluate(model, test_set, batch_size=256)
    attacked = Subset(test_set, range(min(recipe.attack_images, len(test_set))))
    robust = robust_accuracy(model, DataLoader(attacked, batch_size=100), ThreatModel("linf", EPS), steps=20,
                             generator=torch.Generator().manual_seed(0))
    card = {
        "name": recipe.name, "arch": recipe.arch, "kwargs": recipe.kwargs, "num_classes": recipe.source.classes,
        "input_size": [recipe.source.size, recipe.source.size], "variant": recipe.variant, "parent": recipe.parent,
        "source_task": asdict(recipe.source) | {"generator": "vprompt.data.fractal.FractalSource"},
        "train": asdict(recipe.train),
        "adversarial": adversarial_settings(recipe.adversarial),
        "distillation": None if teacher is None else {"teacher": recipe.teacher, "weight": teacher.weight,
                                                      "temperature": teacher.temperature},
        "random_twin": recipe.twin,
        "source_acc": clean["acc"], "clean_acc": robust["clean_acc"], "robust_acc_pgd20": robust["robust_acc"],
        "eps": EPS, "norm": "linf", "attack_images": robust["n"],
        "build_seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__,
    }
    export(model, out_dir / f"{recipe.name}.safetensors")
    write_atomic(out_dir / f"{recipe.name}.json", lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))
    return card


def round_to_half(model: PromptedModel) -> None:
    """Round every floating tensor to fp16 precision: the zoo ships fp16 (half the package size)."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def export(model: PromptedModel, path: Path) -> None:
    """Save the backbone as a plain fp16 timm classifier: the trained head goes back into its classifier."""
    backbone = model.backbone
    backbone.reset_classifier(model.num_classes)
    backbone.get_classifier().load_state_dict(model.head.fc.state_dict())
    state = {k: (v.half() if v.is_floating_point() else v).detach().contiguous().cpu()
             for k, v in backbone.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, str(tmp)))
