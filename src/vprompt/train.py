"""The training loop: accelerate, AMP, cosine schedule, per-epoch checkpoints and exact resume.

Resume is exact because nothing random carries over between epochs: the shuffling order and
the RNG used by dropout are re-derived from (seed, epoch) at the start of every epoch, and the
learning rate is a pure function of the global step. A checkpoint therefore only needs the
trainable tensors, the optimizer state and the metrics so far.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import math
import shutil
import time
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from vprompt.data.filelist import TaskDataset
from vprompt.data.memory import DEFAULT_BUDGET_MB, InMemoryDataset, in_memory
from vprompt.distill import Distillation, DistillationConfig
from vprompt.errors import CheckpointError, ConfigError, NonFiniteLossError
from vprompt.evaluate import evaluate
from vprompt.frozen_features import cache_features, cacheable
from vprompt.hardware import MixedPrecision, pin_memory, resolve_precision, resolve_workers, training_attention
from vprompt.checkpoint import (CHECKPOINTS, FINAL, LATEST, TRAIN_STATE, latest_checkpoint, write_atomic,
                                write_metrics)
from vprompt.model import PromptedModel, load_prompt_into, save_prompt
from vprompt.presets import get_preset
from vprompt.robust.adversarial import AdversarialConfig, adversarial_examples
from vprompt.validation import Validated, above, at_least, at_most

SPEED_ONLY = ("workers", "cache_mb", "compile", "grad_checkpointing", "report_to", "preset")
"""TrainConfig fields that change how fast a run goes or where it is reported, not what it computes:
a resume may change them."""
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
"""--report-to choice → (the module it needs, vprompt's extra that installs it)."""
PROJECT = "vprompt"
"""The tracker project (W&B), experiment (MLflow) and event folder under the run (TensorBoard)."""
EPOCH_LOG = logging.getLogger("vprompt.train")
"""A line per finished epoch: ``vprompt train --no-progress`` prints them; a recipe's many runs stay
quiet (a line per run is theirs, on ``vprompt.progress``)."""


@dataclass
class PrecisionChoice:
    """The training precision a run asks for: declared once, for every command and recipe that trains."""

    mixed_precision: MixedPrecision = "auto"
    """auto: bf16 autocast on a bf16 GPU or an AMX-BF16 CPU, else fp32; metrics rows record the choice as precision."""


@dataclass
class TrainConfig(Validated, PrecisionChoice):
    """Optimisation settings; defaults follow VPT's VTAB-1k recipe where it has one."""

    epochs: Annotated[int, at_least(1)] = 100
    """Passes over the training split."""
    batch_size: Annotated[int, at_least(1)] = 64
    """Images per step and process."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """SGD with momentum (VPT's choice) or AdamW."""
    base_lr: Annotated[float, at_least(0)] = 0.1
    """Learning rate for a batch of 256; the applied rate is base_lr × global batch / 256."""
    weight_decay: Annotated[float, at_least(0)] = 1e-4
    """Weight decay of the optimizer (decoupled for AdamW)."""
    momentum: Annotated[float, at_least(0), at_most(1)] = 0.9
    """SGD momentum (ignored by AdamW)."""
    warmup_epochs: Annotated[int, at_least(0)] = 10
    """Linear warm-up before the cosine decay."""
    seed: Annotated[int, at_least(0)] = 0
    """Seeds the prompt/head init, the shuffling order and dropout."""
    workers: Annotated[int, at_least(0)] | Literal["auto"] = "auto"
    """DataLoader workers; auto: one per CPU beyond the first (at most 8) for splits read from image files, else 0."""
    cache_mb: Annotated[float, at_least(0)] = DEFAULT_BUDGET_MB
    """Keep the decoded train and eval splits in memory when they fit in this many MB together (0: off); for a
    method that trains only a head (linear), their backbone features instead, computed once."""
    compile: bool = False
    """torch.compile the prompted model for training (worth it on a GPU; measure it on a CPU)."""
    grad_checkpointing: bool = False
    """Recompute the backbone's activations in the backward pass: less memory, more compute."""
    grad_clip: Annotated[float, above(0)] | None = None
    """Clip the gradient norm to this value (off by default)."""
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = "none"
    """Send each epoch's metrics and the run's settings to a tracker, through accelerate: tensorboard (event files in
    OUT/vprompt), wandb or mlflow (configured as they usually are: WANDB_MODE, MLFLOW_TRACKING_URI)."""
    preset: str | None = None
    """Start from published settings, SOURCE/METHOD/TASK (`vprompt presets` lists them): the method, optimizer,
    base_lr, weight decay, epochs, batch size, warm-up and prompt length; flags given on the command line win.
    Recorded with the run."""

    def __post_init__(self) -> None:
        """Refuse a bad value or an unknown preset name when the settings are built."""
        super().__post_init__()
        if self.preset is not None:
            get_preset(self.preset)
        if self.report_to != "none":
            module, extra = TRACKERS[self.report_to]
            if importlib.util.find_spec(module) is None:
                raise ConfigError(f"--report-to {self.report_to} needs the {module} package: "
                                  f"pip install 'vprompt[{extra}]'")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """The settings of preset ``name`` (its method options are ``get_preset(name).options``)."""
        return cls(**{**get_preset(name).train, "preset": name, **overrides})

    def peak_lr(self, processes: int = 1) -> float:
        """base_lr × global batch / 256; --batch-size is per process under `accelerate launch`."""
        return self.base_lr * self.batch_size * processes / 256


@dataclass
class TrainResult:
    """What a run produced: one metrics row per epoch, and the folder of the saved prompt."""

    metrics: list[dict[str, Any]]
    final_dir: Path


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def epoch_seed(seed: int, epoch: int) -> int:
    return zlib.crc32(f"{seed}:{epoch}".encode())


class EpochShuffle(Sampler[int]):
    """A shuffling order that depends only on (seed, epoch), so a resumed run sees the same batches."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.peak_lr(), momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.peak_lr(), weight_decay=config.weight_decay)
    raise ConfigError(f"unknown optimizer '{config.optimizer}' (sgd or adamw)")


def make_accelerator(mixed_precision: str, report_to: str = "none", out_dir: Path | None = None):
    """An Accelerator at the precision ``auto`` resolves to here, reporting to ``report_to`` from
    ``out_dir``; batches copied to a GPU travel through pinned memory without blocking."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    precision = resolve_precision(mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        # accelerate keeps one precision per process; a later run in the same process (a sweep,
        # a notebook) may ask for another. The process group (PartialState) is kept.
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=precision, dataloader_config=DataLoaderConfiguration(non_blocking=pin_memory()),
                       log_with=None if report_to == "none" else report_to,
                       project_dir=None if out_dir is None else str(out_dir))


def decodes_images(dataset: Dataset | None) -> bool:
    """Whether reading an item of ``dataset`` decodes an image file (a vprompt split not held in
    memory); any other dataset is taken to be cheap to read."""
    return isinstance(dataset, TaskDataset) and not isinstance(dataset, InMemoryDataset)


def cached_splits(train_set: Dataset, eval_set: Dataset | None, config: TrainConfig,
                  progress: bool) -> tuple[Dataset, Dataset | None]:
    """The splits decoded into memory, the training split first, within ``config.cache_mb`` together."""
    decoders = resolve_workers(config.workers, decodes_images=True)
    train_set = in_memory(train_set, config.cache_mb, decoders, progress)
    left = config.cache_mb - (train_set.nbytes / 2**20 if isinstance(train_set, InMemoryDataset) else 0)
    if eval_set is not None:
        eval_set = in_memory(eval_set, left, decoders, progress)
    return train_set, eval_set


@dataclass
class Schedule:
    """The learning rate of every step: linear warm-up, then cosine decay (a pure function of the
    global step, which is what makes a resume exact)."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float

    def lr(self, global_step: int) -> float:
        return lr_at(global_step, self.total_steps, self.warmup_steps, self.peak_lr)


@dataclass
class TrainingRun:
    """What the stages of one run share: the model as accelerate prepared it, its optimizer and
    data, the schedule, and the run's settings."""

    model: PromptedModel
    """The model as the caller gave it (what is saved and evaluated)."""
    prepared: nn.Module
    """The model as accelerate prepared it (what trains)."""
    forward: Callable[[torch.Tensor], torch.Tensor]
    """``prepared``, compiled when the config asks for it."""
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    accelerator: Any
    params: list[nn.Parameter]
    schedule: Schedule
    config: TrainConfig
    out_dir: Path
    train_set: Dataset
    eval_set: Dataset | None
    eval_workers: int
    adversarial: AdversarialConfig | None
    distiller: Distillation | None
    distillation: DistillationConfig | None
    precision: str
    """What ``auto`` resolved to, recorded in every metrics row."""
    show: bool
    """Show progress bars (the main process only)."""
    cached_features: bool
    """The splits are the backbone's features, computed once, and ``prepared`` is the head alone."""


def train(
    model: PromptedModel,
    train_set: Dataset,
    out_dir: Path | str,
    config: TrainConfig,
    eval_set: Dataset | None = None,
    resume: bool = False,
    progress: bool = True,
    eval_every: int = 1,
    adversarial: AdversarialConfig | None = None,
    distillation: DistillationConfig | None = None,
) -> TrainResult:
    """Train ``model``'s trainable parameters; checkpoints every epoch under ``out_dir``.

    Checkpointing every epoch is what makes a killed run resumable exactly; the finished prompt is
    saved with [`save_prompt`][vprompt.save_prompt] in ``out_dir/prompt``. Runs on one process
    or under ``accelerate launch``. Step metrics stay on the device and are read once per epoch,
    so a GPU never waits for the host between steps.

    Args:
        model: The model to train, e.g. from [`create_model`][vprompt.create_model].
        train_set: ``(image in [0, 1], label)`` items at ``model.image_size``.
        out_dir: The run's folder; one that already holds a run is refused unless ``resume``.
        config: Optimisation settings.
        eval_set: Scored every ``eval_every`` epochs and always after the last one.
        resume: Continue from the last checkpoint in ``out_dir``.
        progress: Show progress bars.
        eval_every: Epochs between evaluations of ``eval_set``.
        adversarial: Replace every batch by adversarial examples (eps ramped by global step).
        distillation: Train on a frozen teacher's predictions for each batch (instead of, or beside,
            the labels).

    Returns:
        The per-epoch metrics (loss, accuracy, learning rate, time; eval loss and accuracy when
        scored) and the folder of the saved prompt.

    Raises:
        NonFiniteLossError: The loss became NaN or infinite; the model is put back to the last
            checkpoint, which is kept.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume)
    run, start_epoch, history = start_run(model, train_set, out_dir, config, eval_set, resume, progress,
                                          adversarial, distillation)
    epochs = tqdm(range(start_epoch, config.epochs), desc="epochs", disable=not run.show,
                  initial=start_epoch, total=config.epochs)
    tracking = config.report_to != "none"
    if tracking:
        run.accelerator.init_trackers(PROJECT, config=tracked_settings(run))
    try:
        with speed_settings(model, config, run.accelerator.device.type, run.precision):
            for epoch in epochs:
                row = train_epoch(run, epoch)
                if run.eval_set is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == config.epochs):
                    row |= evaluate_epoch(run)
                history.append(row)
                if run.accelerator.is_main_process:
                    EPOCH_LOG.info(epoch_line(row, config.epochs))
                epochs.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("train_loss", "eval_acc")})
                save_epoch(run, epoch, history)
                if tracking:
                    run.accelerator.log(tracked_metrics(row, run.schedule.steps_per_epoch), step=row["epoch"])
        return TrainResult(history, save_final(run, history))
    finally:
        if tracking:
            run.accelerator.end_training()


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """A finished epoch as one log line: its losses and accuracies, and its time."""
    scores = ", ".join(f"{key} {row[key]:.4f}" for key in ("train_loss", "train_acc", "eval_loss", "eval_acc")
                       if key in row)
    return f"[epoch {row['epoch']}/{epochs}] {scores} ({row['seconds']:.0f} s)"


def tracked_settings(run: TrainingRun) -> dict[str, Any]:
    """The run's settings as a tracker's hyper-parameters (scalars only: the rest as text)."""
    model = run.model
    settings = {**asdict(run.config), "precision": run.precision, "method": model.method.name,
                "backbone": model.backbone_spec.name, "num_classes": model.num_classes,
                **{f"method.{k}": v for k, v in model.method_config.to_dict().items()}}
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()}


def tracked_metrics(row: dict[str, Any], steps_per_epoch: int) -> dict[str, float]:
    """An epoch's metrics row as a tracker logs it: its numbers, and the mean time per step."""
    numbers = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch"}
    return numbers | {"step_seconds": row["seconds"] / max(1, steps_per_epoch)}


def start_run(model: PromptedModel, train_set: Dataset, out_dir: Path, config: TrainConfig, eval_set: Dataset | None,
              resume: bool, progress: bool, adversarial: AdversarialConfig | None,
              distillation: DistillationConfig | None) -> tuple[TrainingRun, int, list[dict[str, Any]]]:
    """The run set up: accelerator, optimizer (restored on resume), cached splits, loader, schedule.
    Returns the run, the epoch to start from and the metrics so far."""
    accelerator = make_accelerator(config.mixed_precision, config.report_to, out_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    start_epoch, history = 0, []
    if resume:
        start_epoch, history = restore(model, optimizer, out_dir, config, adversarial, distillation)
    show = progress and accelerator.is_main_process
    cached = cacheable(model, [train_set, eval_set], config.cache_mb, accelerator.num_processes,
                       per_batch=adversarial is not None or distillation is not None) is None
    if cached:  # the backbone runs over each image once; every epoch trains the head on its features
        model.to(accelerator.device)
        workers = resolve_workers(config.workers, decodes_images=True)
        with training_attention(model, accelerator.device.type, accelerator.mixed_precision):  # as the epochs would
            train_set, eval_set = (None if split is None else cache_features(model, split, config.batch_size, workers,
                                                                             accelerator, show)
                                   for split in (train_set, eval_set))
    else:
        train_set, eval_set = cached_splits(train_set, eval_set, config, show)
    sampler = EpochShuffle(len(train_set), config.seed)
    loader = DataLoader(train_set, config.batch_size, sampler=sampler, drop_last=False, pin_memory=pin_memory(),
                        num_workers=resolve_workers(config.workers, decodes_images(train_set)))
    prepared, optimizer, loader = accelerator.prepare(model.head if cached else model, optimizer, loader)
    steps_per_epoch = len(loader)
    schedule = Schedule(steps_per_epoch, steps_per_epoch * config.epochs, steps_per_epoch * config.warmup_epochs,
                        config.peak_lr(accelerator.num_processes))
    run = TrainingRun(
        model=model, prepared=prepared, forward=torch.compile(prepared) if config.compile else prepared,
        optimizer=optimizer, loader=loader, accelerator=accelerator, params=params, schedule=schedule, config=config,
        out_dir=out_dir, train_set=train_set, eval_set=eval_set,
        eval_workers=resolve_workers(config.workers, decodes_images(eval_set)), adversarial=adversarial,
        distiller=Distillation(distillation).to(accelerator.device) if distillation is not None else None,
        distillation=distillation, precision=accelerator.mixed_precision, show=show, cached_features=cached,
    )
    return run, start_epoch, history


def train_epoch(run: TrainingRun, epoch: int) -> dict[str, Any]:
    """One pass over the training split; its metrics row (summed over every process)."""
    run.loader.set_epoch(epoch)  # accelerate passes it on to our sampler (and would otherwise count from 0)
    run.model.epoch_start(run.train_set, epoch, run.config.seed)
    torch.manual_seed(epoch_seed(run.config.seed, epoch))
    run.prepared.train()
    started = time.perf_counter()
    device = run.accelerator.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # the first step whose loss was not finite
    bad_loss = torch.zeros((), device=device)
    seen, lr = 0, 0.0
    steps = tqdm(run.loader, desc=f"epoch {epoch + 1}", leave=False, disable=not run.show)
    for step, (images, labels) in enumerate(steps):
        global_step = epoch * run.schedule.steps_per_epoch + step
        lr = run.schedule.lr(global_step)
        loss, logits = train_step(run, images, labels, global_step, lr)
        newly_bad = (first_bad < 0) & ~torch.isfinite(loss)
        first_bad = torch.where(newly_bad, step, first_bad)
        bad_loss = torch.where(newly_bad, loss.float(), bad_loss)
        loss_sum += loss.double() * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        steps.set_postfix(lr=f"{lr:.2e}")
    check_finite(run, int(first_bad), float(bad_loss), epoch)
    loss_sum, correct, seen = run.accelerator.reduce(  # every process's shard, summed
        torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)]),
        "sum").tolist()
    return {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
            "train_images": int(seen), "seconds": time.perf_counter() - started, "precision": run.precision,
            "cached_features": run.cached_features}


def train_step(run: TrainingRun, images: torch.Tensor, labels: torch.Tensor, global_step: int,
               lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step at ``lr``; returns the (detached) loss and the logits, left on the device."""
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if run.adversarial is not None:  # attack the unwrapped model: no DDP reducer inside the attack
        images = adversarial_examples(run.accelerator.unwrap_model(run.prepared), images, labels, run.adversarial,
                                      step=global_step)
    logits = run.forward(images)
    if run.distiller is None:
        loss = F.cross_entropy(logits.float(), labels)
    else:
        with run.accelerator.autocast():
            teacher_logits = run.distiller.teacher(images)
        loss = run.distiller.loss(logits.float(), teacher_logits, labels)
    run.optimizer.zero_grad(set_to_none=True)
    run.accelerator.backward(loss)
    if run.config.grad_clip:
        run.accelerator.clip_grad_norm_(run.params, run.config.grad_clip)
    run.optimizer.step()
    return loss.detach(), logits.detach()


def check_finite(run: TrainingRun, first_bad: int, loss: float, epoch: int) -> None:
    """Stop when a step's loss was not finite: the model goes back to the last checkpoint (the
    steps since may have spread the NaN), which stays in charge for a resume."""
    if first_bad < 0:
        return
    latest = latest_checkpoint(run.out_dir)
    if latest is not None:
        load_prompt_into(run.model, latest)
    raise NonFiniteLossError(nonfinite_message(loss, epoch, first_bad, run.out_dir))


def evaluate_epoch(run: TrainingRun) -> dict[str, float]:
    """Loss and accuracy on the evaluation split."""
    scores = evaluate(run.model.head if run.cached_features else run.model, run.eval_set, run.config.batch_size,
                      accelerator=run.accelerator, workers=run.eval_workers)
    return {"eval_loss": scores["loss"], "eval_acc": scores["acc"]}


def save_epoch(run: TrainingRun, epoch: int, history: list[dict[str, Any]]) -> None:
    """The epoch's checkpoint, written by the main process while the others wait."""
    if run.accelerator.is_main_process:
        save_checkpoint(run.model, run.optimizer, run.out_dir, epoch + 1, history,
                        run.config, run.adversarial, run.distillation)
    run.accelerator.wait_for_everyone()


def save_final(run: TrainingRun, history: list[dict[str, Any]]) -> Path:
    """The finished prompt in ``out_dir/prompt``, with what the run knows for its model card."""
    final_dir = run.out_dir / FINAL
    if run.accelerator.is_main_process:
        task = getattr(getattr(run.train_set, "task", None), "name", None)
        with saving(run.out_dir, final_dir):
            save_prompt(run.model, final_dir,
                        training={"config": asdict(run.config), "metrics": history[-1] if history else {}, "task": task,
                                  "eval_split": getattr(run.eval_set, "split", None),
                                  "adversarial": run.adversarial.describe() if run.adversarial else None})
    return final_dir


@contextmanager
def speed_settings(model: PromptedModel, config: TrainConfig, device_type: str, precision: str) -> Iterator[None]:
    """The model set up for the run's speed settings (gradient checkpointing, the attention path that
    is faster here), and handed back as it came, also when training fails."""
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    try:
        with training_attention(model, device_type, precision):
            yield
    finally:
        if config.grad_checkpointing:
            model.set_grad_checkpointing(False)


def nonfinite_message(loss: float, epoch: int, step: int, out_dir: Path) -> str:
    latest = latest_checkpoint(out_dir)
    kept = f"the last good checkpoint is kept at {latest}" if latest else "no checkpoint was written yet"
    return (f"loss became {loss} at epoch {epoch + 1}, step {step + 1}; stopped, {kept}. "
            "Try a lower --base-lr or --grad-clip.")


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """Never overwrite a run by accident, and never 'resume' from nothing."""
    exists = latest_checkpoint(out_dir) is not None
    if resume and not exists:
        raise ConfigError(f"nothing to resume: {out_dir} holds no checkpoint")
    if not resume and exists:
        raise ConfigError(f"{out_dir} already holds a run; pass --resume to continue it or choose another output folder")


def save_checkpoint(model: PromptedModel, optimizer: torch.optim.Optimizer, out_dir: Path, epoch: int,
                    history: list[dict[str, Any]], config: TrainConfig,
                    adversarial: AdversarialConfig | None = None,
                    distillation: DistillationConfig | None = None) -> None:
    """Write epoch ``epoch`` in full and the metrics, then switch the ``latest`` pointer to it
    atomically: the pointer is the last write, so any failed write (a full disk) leaves the previous
    checkpoint in charge; metrics already written for this epoch are rewritten when a resume redoes it."""
    root = out_dir / CHECKPOINTS
    name = f"epoch-{epoch:04d}"
    previous = latest_checkpoint(out_dir)
    target = root / name
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "history": history, "config": asdict(config),
             "adversarial": adversarial_settings(adversarial),
             "distillation": distillation_settings(distillation)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with saving(out_dir, target):
        save_prompt(model, target)
        write_atomic(target / TRAIN_STATE, lambda tmp: tmp.write_bytes(buffer.getvalue()))
        write_metrics(out_dir, history)
        write_atomic(root / LATEST, lambda tmp: tmp.write_text(name))
    if previous is not None and previous != target:
        shutil.rmtree(previous, ignore_errors=True)


@contextmanager
def saving(out_dir: Path, folder: Path) -> Iterator[None]:
    """Writing ``folder`` of the run in ``out_dir``: an OSError (a full disk, an I/O error) removes
    the half-written folder and becomes one line saying which checkpoint survived and how to go on."""
    try:
        yield
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise CheckpointError(write_failure(exc, out_dir)) from exc


def write_failure(exc: OSError, out_dir: Path) -> str:
    """Which file could not be written and why, and what a ``--resume`` continues from."""
    latest = latest_checkpoint(out_dir)
    if latest is None:
        kept = "no checkpoint was saved yet; free some space and start the run again"
    else:
        kept = (f"the last complete checkpoint, epoch {int(latest.name.removeprefix('epoch-'))} ({latest}), "
                "is intact; free some space and rerun with --resume to continue from it")
    return f"could not write {exc.filename or out_dir}: {exc.strerror or exc}; {kept}"


def adversarial_settings(adversarial: AdversarialConfig | None) -> dict[str, Any] | None:
    """Plain data for the checkpoint, so a resume can refuse a different threat model."""
    return None if adversarial is None else json.loads(json.dumps(asdict(adversarial)))


def distillation_settings(distillation: DistillationConfig | None) -> dict[str, Any] | None:
    """Plain data for the checkpoint, so a resume can refuse another teacher or weighting."""
    return None if distillation is None else distillation.settings()


def restore(model: PromptedModel, optimizer: torch.optim.Optimizer, out_dir: Path, config: TrainConfig,
            adversarial: AdversarialConfig | None = None,
            distillation: DistillationConfig | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Load the latest checkpoint into ``model`` and ``optimizer``; returns (next epoch, history)."""
    path = latest_checkpoint(out_dir)
    load_prompt_into(model, path)
    state = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=True)
    changed = resume_conflicts(state["config"], config)
    if changed:
        raise ConfigError(f"cannot resume {out_dir} with different settings: {', '.join(changed)} changed")
    if state.get("adversarial") != adversarial_settings(adversarial):
        raise ConfigError(f"cannot resume {out_dir} with a different adversarial-training setting")
    if state.get("distillation") != distillation_settings(distillation):
        raise ConfigError(f"cannot resume {out_dir} with a different distillation setting")
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], state["history"]


def resume_conflicts(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The settings that differ from the checkpoint's and would change what the run computes;
    a setting the checkpoint predates counts as its default, and precisions are compared as they
    resolve here (``auto`` and ``no`` agree on a CPU without AMX)."""
    def same(key: str, old: Any, new: Any) -> bool:
        if key == "mixed_precision":
            return resolve_precision(old) == resolve_precision(new)
        return old == new

    current = asdict(config)
    return sorted(key for key, value in current.items()
                  if key not in SPEED_ONLY and not same(key, saved.get(key, getattr(TrainConfig, key)), value))


