"""Multi-source prompt transfer: HGPrompt and its baselines (docs/methods/transfer.md, a **reconstruction**).

Every method ends the same way: the target's VPT prompt starts from an initial prompt and is
tuned with a fresh head under one [`TrainConfig`][vprompt.TrainConfig]. They differ only in where
that initial prompt comes from:

=================  ====================================================================
scratch            VPT's random init (no transfer)
uniform            the plain average of the K source prompts
best-hscore        the single source whose features have the highest H-score on the target
                   training set
oracle             the single source whose features give the best target *test* accuracy
                   under a linear probe: it peeks at the test set, an upper reference
similarity         SPoT-style: softmax of the cosine between the target's own scratch-tuned
                   prompt and each source
hgprompt           ensemble weights w = softmax(α) that maximise H-score − β·GAR
hgprompt-no-gar    the same search with β = 0 and no conflict term
=================  ====================================================================

The weight search costs one forward and two backward passes per batch whatever K is: a
per-sample copy of P(w) gives every sample's gradient for every source weight at once
([`source_gradients`][vprompt.prompts.ensemble.source_gradients]).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from vprompt.bank import BankEntry, bank_backbone, source_prompts
from vprompt.checkpoint import FINAL, WEIGHTS_FILE, latest_checkpoint, write_json
from vprompt.data.registry import open_task
from vprompt.errors import CheckpointError, ConfigError
from vprompt.model import PromptedModel, create_model
from vprompt.prompts.ensemble import (ensemble_prompt, gradient_alignment, h_score, similarity_weights,
                                      simplex_weights, source_gradients)
from vprompt.report import write_rows
from vprompt.train import TrainConfig, train
from vprompt.validation import Validated, above, at_least

SCORES_FILE = "source_scores.json"
ROW_FILE = "row.json"
START_FILE = "start.json"


@dataclass
class SearchConfig(Validated):
    """HGPrompt's search for the ensemble weights (every choice of the reconstruction is here)."""

    search_epochs: Annotated[int, at_least(1)] = 3
    search_batch_size: Annotated[int, at_least(2)] = 128
    """Samples per H-score estimate: fewer than the feature width over-fits it towards C − 1."""
    search_lr: Annotated[float, above(0)] = 0.05
    """Adam learning rate of the weight logits α."""
    head_lr: Annotated[float, above(0)] = 0.01
    """Adam learning rate of the search head, a linear classifier on standardised features whose
    per-sample losses drive the gradient-alignment term."""
    gar_weight: Annotated[float, at_least(0)] = 1.0
    """β: weight of the gradient-alignment regulariser (0 turns it off)."""
    conflict_weight: Annotated[float, at_least(0)] = 0.0
    """Weight of GAR's pairwise gradient-conflict term (0: Fisher variance matching only)."""
    h_ridge: Annotated[float, above(0)] = 0.1
    """H-score ridge, relative to the mean feature variance: a shrinkage covariance, because batch
    estimates with few samples per feature saturate the score."""
    weight_temperature: Annotated[float, above(0)] = 1.0
    """Softmax temperature of the weights."""


@dataclass
class TransferConfig(Validated):
    tune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, optimizer="adamw", base_lr=0.02,
                                                                  warmup_epochs=1))
    """Target tuning from the initial prompt (the same for every method)."""
    search: SearchConfig = field(default_factory=SearchConfig)
    similarity_temperature: Annotated[float, above(0)] = 0.1
    """Softmax temperature on the prompt cosines of the similarity baseline."""


Start = tuple[torch.Tensor | None, list[dict[str, Any]]]
"""Ensemble weights over the sources (None: VPT's random init) and the search log."""


@dataclass(frozen=True)
class TransferMethod:
    """A registered transfer method: where the target's initial prompt comes from."""

    name: str
    start: Callable[[TargetTransfer, int, PromptedModel], Start]
    """The weights for a seed; HGPrompt searches on the given model, which it leaves untouched."""


_TRANSFER_METHODS: dict[str, TransferMethod] = {}


def register_transfer_method(method: TransferMethod) -> TransferMethod:
    """Make ``method`` known to `vprompt transfer`, the HGPrompt recipe and [`run_transfer`][vprompt.transfer.run_transfer]."""
    if method.name in _TRANSFER_METHODS:
        raise ValueError(f"transfer method '{method.name}' is registered twice")
    _TRANSFER_METHODS[method.name] = method
    return method


def transfer_method_names() -> list[str]:
    """Every transfer method, in the order runs go (a method may read an earlier one's run)."""
    return list(_TRANSFER_METHODS)


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` in run order; an unknown one is refused, naming the known ones."""
    unknown = sorted(set(methods) - set(_TRANSFER_METHODS))
    if unknown:
        raise ConfigError(f"unknown transfer method {', '.join(unknown)}; choose from {', '.join(_TRANSFER_METHODS)}")
    return [m for m in _TRANSFER_METHODS if m in methods]


def per_sample(prompt: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``prompt`` (*S) as a per-sample batch (B, *S)."""
    return prompt.expand(batch_size, *prompt.shape)


@torch.no_grad()
def prompt_features(model: PromptedModel, prompt: torch.Tensor, dataset: Dataset,
                    batch_size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, D) and labels of ``dataset`` with ``prompt`` in place of the model's own."""
    model.eval()
    device = prompt.device
    features, labels = [], []
    for images, targets in DataLoader(dataset, batch_size):
        with model.shared_prompt().per_sample(per_sample(prompt, len(images))):
            features.append(model.features(images.to(device)).float().cpu())
        labels.append(targets)
    return torch.cat(features), torch.cat(labels)


def probe_accuracy(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Test accuracy of a logistic-regression probe fitted on standardised training features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train[0].numpy(), train[1].numpy())
    return float(probe.score(test[0].numpy(), test[1].numpy()))


def score_sources(model: PromptedModel, sources: torch.Tensor, names: list[str], train_set: Dataset,
                  test_set: Dataset | None, ridge: float, progress: bool = False) -> list[dict[str, Any]]:
    """Per source: the H-score of its features on the target training set (K forward passes), and
    with ``test_set`` the oracle's linear-probe test accuracy. Sorted by H-score, best first."""
    rows = []
    for name, prompt in tqdm(list(zip(names, sources)), desc="score sources", disable=not progress, leave=False):
        train_features = prompt_features(model, prompt, train_set)
        row = {"source": name, "h_score": float(h_score(*train_features, ridge=ridge))}
        if test_set is not None:
            row["probe_test_acc"] = probe_accuracy(train_features, prompt_features(model, prompt, test_set))
        rows.append(row)
    return sorted(rows, key=lambda r: -r["h_score"])


@dataclass
class SearchPass:
    """One forward pass of the weight search: the ensemble prompt (in α's graph), the per-sample
    leaf it was copied into, and what the batch produced through it."""

    ensemble: torch.Tensor
    leaf: torch.Tensor
    features: torch.Tensor
    losses: torch.Tensor


def standardised(features: torch.Tensor) -> torch.Tensor:
    """Features standardised with *detached* batch statistics, so sample i's loss depends on
    sample i's prompt alone and the leaf gradient of the summed loss is per-sample exact."""
    mean, std = features.mean(0).detach(), features.std(0).detach()
    return (features - mean) / (std + 1e-6)


def search_forward(model: PromptedModel, head: nn.Module, weights: torch.Tensor, sources: torch.Tensor,
                   images: torch.Tensor, labels: torch.Tensor) -> SearchPass:
    ensemble = ensemble_prompt(weights, sources)
    leaf = per_sample(ensemble.detach(), len(images)).clone().requires_grad_(True)
    with model.shared_prompt().per_sample(leaf):
        features = model.features(images)
    losses = F.cross_entropy(head(standardised(features)).float(), labels, reduction="none")
    return SearchPass(ensemble, leaf, features, losses)


def per_sample_source_gradients(step: SearchPass, sources: torch.Tensor,
                                extra: Sequence[torch.Tensor] = ()) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """g (B, K) with g_ik = ∂ℓ_i/∂w_k, from one backward pass of Σ_i ℓ_i to the per-sample leaf;
    also the gradients of the same sum for ``extra`` tensors (the search head)."""
    grads = torch.autograd.grad(step.losses.sum(), [step.leaf, *extra], retain_graph=True)
    return source_gradients(grads[0], sources), grads[1:]


def search_weights(model: PromptedModel, sources: torch.Tensor, dataset: Dataset, config: SearchConfig,
                   seed: int = 0, progress: bool = False) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """HGPrompt's ensemble weights: maximise H(P(w)) − β·GAR(w) over w = softmax(α), α₀ = 0.

    Per batch: one forward pass with a per-sample copy of P(w); one backward pass of the search
    head's losses gives g_ik for GAR (and trains that head); one backward pass of the H-score gives
    ∂H/∂P, chained to α through P(w) = Σ w_k P_k. Returns the weights and one row per epoch.
    """
    model.eval()  # frozen backbone, no prompt dropout: every sample's loss is a function of its prompt only
    device = sources.device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    logits = torch.zeros(len(sources), device=device, requires_grad=True)
    head = nn.Linear(int(model.backbone.num_features), model.num_classes).to(device)
    weight_optimizer = torch.optim.Adam([logits], lr=config.search_lr)
    head_optimizer = torch.optim.Adam(head.parameters(), lr=config.head_lr)
    loader = DataLoader(dataset, config.search_batch_size, shuffle=True, generator=generator, drop_last=len(dataset) > config.search_batch_size)
    history = []
    for epoch in tqdm(range(config.search_epochs), desc="weight search", disable=not progress, leave=False):
        sums = {"h_score": 0.0, "gar": 0.0, "loss": 0.0}
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            weights = simplex_weights(logits, config.weight_temperature)
            step = search_forward(model, head, weights, sources, images, labels)
            grads, head_grads = per_sample_source_gradients(step, sources, list(head.parameters()))
            score = h_score(step.features, labels, config.h_ridge)
            (score_grad,) = torch.autograd.grad(score, step.leaf)
            gar = gradient_alignment(weights, grads, config.conflict_weight)
            # −⟨∂H/∂P, P(w)⟩ has the same α-gradient as −H(P(w)); it spares a second pass through the backbone
            objective = -(step.ensemble * score_grad.sum(0)).sum() + config.gar_weight * gar
            weight_optimizer.zero_grad()
            objective.backward()
            weight_optimizer.step()
            for param, grad in zip(head.parameters(), head_grads):
                param.grad = grad / len(labels)
            head_optimizer.step()
            sums["h_score"] += score.item()
            sums["gar"] += gar.item()
            sums["loss"] += step.losses.mean().item()
        history.append({"epoch": epoch + 1, **{k: v / len(loader) for k, v in sums.items()},
                        "weights": simplex_weights(logits, config.weight_temperature).detach().cpu().tolist()})
    return simplex_weights(logits, config.weight_temperature).detach(), history


def one_hot(index: int, size: int, device: torch.device) -> torch.Tensor:
    weights = torch.zeros(size, device=device)
    weights[index] = 1.0
    return weights


class TargetTransfer:
    """Everything one target task shares across methods and seeds: data, sources, source scores.

    Bank entries trained on the target task itself are left out of the sources. Runs live in
    ``out/METHOD/seedS``; a finished run is read back from its ``row.json``, an interrupted one
    resumes from its last checkpoint with the weights its ``start.json`` recorded.
    """

    def __init__(self, entries: list[BankEntry], target: str, config: TransferConfig, out: Path | str,
                 progress: bool = True, weights: Path | str | None = None) -> None:
        self.config, self.out, self.progress = config, Path(out), progress
        self.source = open_task(target)
        self.entries = [entry for entry in entries if entry.task != self.source.info.name]
        if not self.entries:
            raise CheckpointError(f"no source prompts left to transfer from: every one was trained on "
                                  f"{self.source.info.name}, the target")
        self.spec, self.method, self.options = bank_backbone(self.entries, weights)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.reference = self.model(seed=0)  # scores the sources: only its frozen backbone is used
        self.sources = source_prompts(self.entries, self.reference)
        split, size = self.source.protocol.final_train, self.reference.image_size
        self.train_set = self.source.dataset(split, size, train=True)
        self.search_set = self.source.dataset(split, size)  # no augmentation while scoring
        self.test_set = self.source.dataset("test", size)
        self._scores: list[dict[str, Any]] | None = None

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def model(self, seed: int) -> PromptedModel:
        torch.manual_seed(seed)  # prompt and head init, as in every training run
        task = self.source.info
        model = create_model(self.spec, self.method, task.num_classes, task.class_names, **self.options)
        return model.to(self.device)

    def scores(self) -> list[dict[str, Any]]:
        """The sources ranked by H-score, with the oracle's probe accuracy (computed once, cached)."""
        path = self.out / SCORES_FILE
        if self._scores is None and path.is_file():
            self._scores = json.loads(path.read_text())
        if self._scores is None:
            self._scores = score_sources(self.reference, self.sources, self.names, self.search_set, self.test_set,
                                         self.config.search.h_ridge, self.progress)
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(path, self._scores)
        return self._scores

    def starting_point(self, method: str, seed: int, model: PromptedModel,
                       run_dir: Path) -> tuple[torch.Tensor | None, list[dict[str, Any]]]:
        """The method's starting weights, worked out once per run and kept in ``start.json``, so an
        interrupted run resumes its tuning without searching for its weights again."""
        path = run_dir / START_FILE
        if path.is_file():
            saved = json.loads(path.read_text())
            weights = None if saved["weights"] is None else torch.tensor(saved["weights"], device=self.sources.device)
            return weights, saved["search"]
        weights, search_log = _TRANSFER_METHODS[method].start(self, seed, model)
        start = {"weights": None if weights is None else weights.cpu().tolist(), "search": search_log}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, start)
        return weights, search_log

    def run(self, method: str, seed: int) -> dict[str, Any]:
        """Tune the target from ``method``'s initial prompt; returns its result row."""
        run_dir = self.out / method / f"seed{seed}"
        if (run_dir / ROW_FILE).is_file():
            return json.loads((run_dir / ROW_FILE).read_text())
        model = self.model(seed)
        weights, search_log = self.starting_point(method, seed, model, run_dir)
        if weights is not None:
            with torch.no_grad():
                model.shared_prompt().shared_prompts().copy_(ensemble_prompt(weights, self.sources))
        config = replace(self.config.tune, seed=seed)
        result = train(model, self.train_set, run_dir, config, eval_set=self.test_set,
                       resume=latest_checkpoint(run_dir) is not None, progress=self.progress, eval_every=config.epochs)
        last = result.metrics[-1]
        row = {"target": self.source.info.name, "group": self.source.info.group, "method": method, "seed": seed, "test_acc": last["eval_acc"],
               "train_acc": last["train_acc"], "epochs": config.epochs, "sources": self.names,
               "weights": None if weights is None else [round(w, 6) for w in weights.cpu().tolist()],
               "search": search_log, "prompt": str(run_dir / FINAL)}
        write_json(run_dir / ROW_FILE, row)
        return row


def run_transfer(entries: list[BankEntry], target: str, methods: Sequence[str], seeds: Sequence[int],
                 config: TransferConfig, out: Path | str, progress: bool = True,
                 weights: Path | str | None = None) -> list[dict[str, Any]]:
    """Every method × seed on one target task, from the bank ``entries`` as sources (``weights``: the
    backbone's local weights, for a bank trained on a file)."""
    job = TargetTransfer(entries, target, config, out, progress, weights)
    return [job.run(method, seed) for seed in seeds for method in check_methods(methods)]


def transfer_to(entries: list[BankEntry], target: str, methods: Sequence[str], seeds: Sequence[int],
                config: TransferConfig, out: Path | str, progress: bool = True,
                weights: Path | str | None = None) -> list[dict[str, Any]]:
    """[`run_transfer`][vprompt.transfer.run_transfer], its rows also written to ``out/results.json``."""
    rows = run_transfer(entries, target, methods, seeds, config, out, progress, weights)
    write_rows(rows, Path(out) / "results.json")
    return rows


def rank_sources(entries: list[BankEntry], target: str, config: TransferConfig, out: Path | str,
                 progress: bool = True, weights: Path | str | None = None) -> list[dict[str, Any]]:
    """The sources ranked by H-score on the target's training set (cached in ``out``), nothing tuned."""
    return TargetTransfer(entries, target, config, out, progress, weights).scores()


def from_scratch(job: TargetTransfer, seed: int, model: PromptedModel) -> Start:
    return None, []


def uniform(job: TargetTransfer, seed: int, model: PromptedModel) -> Start:
    return torch.full((len(job.sources),), 1 / len(job.sources), device=job.sources.device), []


def one_source(key: str, job: TargetTransfer, seed: int, model: PromptedModel) -> Start:
    """The single source that scores best by ``key`` of the source scores."""
    best = max(job.scores(), key=lambda r: r[key])["source"]
    return one_hot(job.names.index(best), len(job.sources), job.sources.device), []


def similarity(job: TargetTransfer, seed: int, model: PromptedModel) -> Start:
    """SPoT-style weights from the target's own scratch-tuned prompt (so scratch runs first)."""
    reference = Path(job.run("scratch", seed)["prompt"]) / WEIGHTS_FILE
    tuned = load_file(str(reference))[model.shared_prompt_key()].to(job.sources.device)
    return similarity_weights(tuned, job.sources, job.config.similarity_temperature), []


def hgprompt(job: TargetTransfer, seed: int, model: PromptedModel, gar: bool = True) -> Start:
    search = job.config.search if gar else replace(job.config.search, gar_weight=0.0, conflict_weight=0.0)
    return search_weights(model, job.sources, job.search_set, search, seed, job.progress)


register_transfer_method(TransferMethod("scratch", from_scratch))
register_transfer_method(TransferMethod("uniform", uniform))
register_transfer_method(TransferMethod("best-hscore", partial(one_source, "h_score")))
register_transfer_method(TransferMethod("oracle", partial(one_source, "probe_test_acc")))
register_transfer_method(TransferMethod("similarity", similarity))
register_transfer_method(TransferMethod("hgprompt-no-gar", partial(hgprompt, gar=False)))
register_transfer_method(TransferMethod("hgprompt", hgprompt))
