"""Heads that turn backbone features into target-task logits: a linear classifier, or the frozen
source classifier read through a label mapping (docs/methods/pixel-vp.md).

Label mapping rules (target class ``j`` reads source logit ``mapping[j]`` when one-to-one; with
``k`` source classes per target, the mean or max of its ``k`` logits):

* ``first-n``: source classes ``0..N-1`` (Bahng et al. 2022);
* ``rlm``: a random one-to-one choice, fixed by the training seed;
* ``flm``: before training, the source class most often predicted for each target class,
  assigned greedily by frequency so no source class is used twice;
* ``ilm``: FLM recomputed every N epochs (default 1) with the current prompt (ILM-VP);
* ``linear``: no fixed mapping but a trainable linear layer on all source logits (not pure VP:
  it learns S·N + N weights; the common baseline beside the mappings).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from vprompt.errors import ConfigError

MAPPING_RULES = ("flm", "ilm", "rlm", "first-n", "linear")


class FeatureStandardizer(nn.BatchNorm1d):
    """Per-dimension standardisation of features, learned as running statistics (no parameters).

    Frozen features can vary far less between images than their shared offsets (on the zoo ViT
    10×), which leaves a plain linear head badly conditioned: it underfits even its training set.
    Standardising first is the usual cure (MAE's linear probe uses the same parameter-free
    BatchNorm). A training batch of one image, or one with a non-finite feature, is normalised
    with the running statistics and leaves them untouched: a NaN batch stops training without
    corrupting the statistics the last good checkpoint agrees with.
    """

    def __init__(self, feature_dim: int) -> None:
        super().__init__(feature_dim, affine=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training and (features.shape[0] == 1 or not torch.isfinite(features).all()):
            return F.batch_norm(features, self.running_mean, self.running_var, eps=self.eps)
        return super().forward(features)


class LinearHead(nn.Module):
    """A linear classifier on pooled features (VPT's head), optionally on standardised features."""

    def __init__(self, feature_dim: int, num_classes: int, standardize: bool = True) -> None:
        super().__init__()
        self.norm: nn.Module = FeatureStandardizer(feature_dim) if standardize else nn.Identity()
        self.fc = nn.Linear(feature_dim, num_classes)

    @property
    def out_features(self) -> int:
        return self.fc.out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(features))


@dataclass(frozen=True)
class LabelMapping:
    """How target classes read the source logits: the rule, k source classes per target class
    (many-to-one when k > 1) and how their logits are combined, and for ILM how often to remap."""

    rule: str = "flm"
    k: int = 1
    reduce: Literal["mean", "max"] = "mean"
    every: int = 1
    """ILM: recompute the mapping before every ``every``-th epoch."""

    def __post_init__(self) -> None:
        if self.rule not in MAPPING_RULES:
            raise ConfigError(f"label mapping must be one of {', '.join(MAPPING_RULES)}, got {self.rule!r}")
        if self.reduce not in ("mean", "max"):
            raise ConfigError(f"a many-to-one mapping reduces by 'mean' or 'max', got {self.reduce!r}")
        if self.k < 1 or self.every < 1:
            raise ConfigError(f"source classes per target ({self.k}) and the remap interval ({self.every}) "
                              "must be at least 1")
        if self.rule == "linear" and self.k != 1:
            raise ConfigError("the linear head reads every source logit; it takes no k source classes per class")


class SourceHead(nn.Module):
    """A frozen copy of the source classifier, read by a subclass's own rule."""

    def __init__(self, source_classifier: nn.Module, num_source: int, num_classes: int) -> None:
        super().__init__()
        self.source = copy.deepcopy(source_classifier).requires_grad_(False)
        self.num_source, self.out_features = num_source, num_classes

    def source_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.source(features)


class SourceLinearHead(SourceHead):
    """A trainable linear layer on the frozen source logits (the ``linear`` mapping rule)."""

    def __init__(self, source_classifier: nn.Module, num_source: int, num_classes: int) -> None:
        super().__init__(source_classifier, num_source, num_classes)
        self.fc = nn.Linear(num_source, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.source_logits(features))


class LabelMappedHead(SourceHead):
    """The frozen source classifier followed by a label mapping: target class ``j`` reads the source
    logits ``mapping[j·k : (j+1)·k]``, combined by mean or max.

    The mapping is a persistent buffer, so it is saved with the prompt and a resumed run or a
    reloaded checkpoint reads the same source logits.
    """

    def __init__(self, source_classifier: nn.Module, num_source: int, num_classes: int,
                 mapping: LabelMapping) -> None:
        if num_classes * mapping.k > num_source:
            raise ConfigError(f"{num_classes} target classes × {mapping.k} source classes each need "
                              f"{num_classes * mapping.k} distinct source classes; the source classifier has {num_source}")
        super().__init__(source_classifier, num_source, num_classes)
        self.scheme = mapping
        self.register_buffer("mapping", first_n_mapping(num_classes, mapping.k))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        picked = self.source_logits(features)[:, self.mapping].unflatten(1, (self.out_features, self.scheme.k))
        return picked.mean(2) if self.scheme.reduce == "mean" else picked.amax(2)  # exact when k = 1

    def set_mapping(self, mapping: torch.Tensor) -> None:
        self.mapping.copy_(mapping.to(self.mapping.device))


def source_head(source_classifier: nn.Module, num_source: int, num_classes: int,
                mapping: LabelMapping) -> SourceHead:
    """The head a label-mapped method reads the source classifier through."""
    if mapping.rule == "linear":
        return SourceLinearHead(source_classifier, num_source, num_classes)
    return LabelMappedHead(source_classifier, num_source, num_classes, mapping)


def first_n_mapping(num_classes: int, k: int = 1) -> torch.Tensor:
    """Source classes 0..N·k−1; target j reads j, j+N, j+2N, ... (first-N when k = 1)."""
    return torch.arange(num_classes * k).view(k, num_classes).T.flatten()


def random_mapping(num_classes: int, num_source: int, seed: int, k: int = 1) -> torch.Tensor:
    return torch.randperm(num_source, generator=torch.Generator().manual_seed(seed))[:num_classes * k]


def frequency_mapping(source_predictions: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      num_source: int, k: int = 1) -> torch.Tensor:
    """FLM: count (target label, predicted source class) pairs, then take the most frequent pair
    whose target still lacks source classes and whose source class is still free, until every
    target class has ``k`` (flat, target-major: target j owns entries j·k .. j·k+k−1)."""
    counts = torch.zeros(num_classes, num_source, dtype=torch.long)
    counts.index_put_((labels.long().cpu(), source_predictions.long().cpu()),
                      torch.ones(len(labels), dtype=torch.long), accumulate=True)
    mapping = torch.full((num_classes, k), -1, dtype=torch.long)
    owned = torch.zeros(num_classes, dtype=torch.long)
    used = torch.zeros(num_source, dtype=torch.bool)
    assigned = 0
    for flat in torch.argsort(counts.flatten(), descending=True, stable=True).tolist():
        target, source = divmod(flat, num_source)
        if owned[target] < k and not used[source]:
            mapping[target, owned[target]], used[source] = source, True
            owned[target] += 1
            assigned += 1
            if assigned == num_classes * k:
                break
    return mapping.flatten()


@torch.no_grad()
def source_predictions(model: nn.Module, dataset: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The source classifier's argmax on every image of ``dataset`` (through the current prompt)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    predictions, labels = [], []
    for images, targets in DataLoader(dataset, batch_size):
        predictions.append(model.head.source_logits(model.features(images.to(device))).argmax(1).cpu())
        labels.append(torch.as_tensor(targets))
    model.train(was_training)
    return torch.cat(predictions), torch.cat(labels)


def update_label_mapping(model: nn.Module, dataset: Dataset, epoch: int, seed: int) -> None:
    """Set a label-mapped head's mapping before ``epoch`` as its rule says (no-op for other heads).

    Every process of a multi-GPU run computes the same mapping from the whole training set.
    """
    head = model.head
    if not isinstance(head, LabelMappedHead):
        return
    scheme = head.scheme
    if epoch > 0 and (scheme.rule != "ilm" or epoch % scheme.every):
        return
    if scheme.rule == "rlm":
        head.set_mapping(random_mapping(head.out_features, head.num_source, seed, scheme.k))
    elif scheme.rule in ("flm", "ilm"):
        predictions, labels = source_predictions(model, dataset)
        head.set_mapping(frequency_mapping(predictions, labels, head.out_features, head.num_source, scheme.k))
