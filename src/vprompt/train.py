"""The training loop: accelerate, AMP, cosine schedule, per-epoch checkpoints and exact resume.

Resume is exact because nothing random carries over between epochs: the shuffling order and
the RNG used by dropout are re-derived from (seed, epoch) at the start of every epoch, and the
learning rate is a pure function of the global step. A checkpoint therefore only needs the
trainable tensors, the optimizer state and the metrics so far.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import time
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from vprompt.data.filelist import TaskDataset
from vprompt.data.memory import DEFAULT_BUDGET_MB, InMemoryDataset, in_memory
from vprompt.distill import Distillation, DistillationConfig
from vprompt.errors import CheckpointError, ConfigError, NonFiniteLossError
from vprompt.evaluate import evaluate
from vprompt.hardware import MixedPrecision, pin_memory, resolve_precision, resolve_workers, training_attention
from vprompt.hub import is_hub_reference, resolve_hub_prompt
from vprompt.model import META_FILE, PromptedModel, load_prompt_into, save_prompt, write_atomic
from vprompt.robust.adversarial import AdversarialConfig, adversarial_examples
from vprompt.validation import Validated, above, at_least, at_most

SPEED_ONLY = ("workers", "cache_mb", "compile", "grad_checkpointing")
"""TrainConfig fields that change how fast a run goes, not what it computes: a resume may change them."""
CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAIN_STATE = "train_state.pt"
FINAL = "prompt"


@dataclass
class TrainConfig(Validated):
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
    mixed_precision: MixedPrecision = "auto"
    """auto: bf16 autocast on a bf16 GPU or an AMX-BF16 CPU, else fp32; metrics rows record the choice as precision."""
    workers: Annotated[int, at_least(0)] | Literal["auto"] = "auto"
    """DataLoader workers; auto: one per CPU beyond the first (at most 8) for splits read from image files, else 0."""
    cache_mb: Annotated[float, at_least(0)] = DEFAULT_BUDGET_MB
    """Keep the decoded train and eval splits in memory when they fit in this many MB together (0: off)."""
    compile: bool = False
    """torch.compile the prompted model for training (worth it on a GPU; measure it on a CPU)."""
    grad_checkpointing: bool = False
    """Recompute the backbone's activations in the backward pass: less memory, more compute."""
    grad_clip: Annotated[float, above(0)] | None = None
    """Clip the gradient norm to this value (off by default)."""

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


def make_accelerator(mixed_precision: str):
    """An Accelerator at the precision ``auto`` resolves to here; batches copied to a GPU travel
    through pinned memory without blocking."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DataLoaderConfiguration

    precision = resolve_precision(mixed_precision)
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != precision:
        # accelerate keeps one precision per process; a later run in the same process (a sweep,
        # a notebook) may ask for another. The process group (PartialState) is kept.
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=precision, dataloader_config=DataLoaderConfiguration(non_blocking=pin_memory()))


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
    or under ``accelerate launch``.

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
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume)
    accelerator = make_accelerator(config.mixed_precision)
    precision = accelerator.mixed_precision  # what auto resolved to
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    start_epoch, history = 0, []
    if resume:
        start_epoch, history = restore(model, optimizer, out_dir, config, adversarial, distillation)
    train_set, eval_set = cached_splits(train_set, eval_set, config, progress and accelerator.is_main_process)
    workers = resolve_workers(config.workers, decodes_images(train_set))
    eval_workers = resolve_workers(config.workers, decodes_images(eval_set))
    sampler = EpochShuffle(len(train_set), config.seed)
    loader = DataLoader(train_set, config.batch_size, sampler=sampler, drop_last=False, num_workers=workers,
                        pin_memory=pin_memory())
    prepared_model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    distiller = Distillation(distillation).to(accelerator.device) if distillation is not None else None
    forward = torch.compile(prepared_model) if config.compile else prepared_model
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = steps_per_epoch * config.warmup_epochs
    peak_lr = config.peak_lr(accelerator.num_processes)
    show = progress and accelerator.is_main_process
    epochs = tqdm(range(start_epoch, config.epochs), desc="epochs", disable=not show,
                  initial=start_epoch, total=config.epochs)
    with speed_settings(model, config, accelerator.device.type, precision):
        for epoch in epochs:
            loader.set_epoch(epoch)  # accelerate passes it on to our sampler (and would otherwise count from 0)
            accelerator.unwrap_model(prepared_model).epoch_start(train_set, epoch, config.seed)
            torch.manual_seed(epoch_seed(config.seed, epoch))
            prepared_model.train()
            started = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            steps = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not show)
            for step, (images, labels) in enumerate(steps):
                global_step = epoch * steps_per_epoch + step
                lr = lr_at(global_step, total_steps, warmup_steps, peak_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if adversarial is not None:  # attack the unwrapped model: no DDP reducer inside the attack
                    images = adversarial_examples(accelerator.unwrap_model(prepared_model), images, labels,
                                                  adversarial, step=global_step)
                logits = forward(images)
                if distiller is None:
                    loss = F.cross_entropy(logits.float(), labels)
                else:
                    with accelerator.autocast():
                        teacher_logits = distiller.teacher(images)
                    loss = distiller.loss(logits.float(), teacher_logits, labels)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    raise NonFiniteLossError(nonfinite_message(loss_value, epoch, step, out_dir))
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if config.grad_clip:
                    accelerator.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                loss_sum += loss_value * len(labels)
                correct += (logits.argmax(1) == labels).sum().item()
                seen += len(labels)
                steps.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
            loss_sum, correct, seen = accelerator.reduce(  # every process's shard, summed
                torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=accelerator.device), "sum").tolist()
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "train_images": int(seen), "seconds": time.perf_counter() - started, "precision": precision}
            if eval_set is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == config.epochs):
                scores = evaluate(model, eval_set, config.batch_size, accelerator=accelerator, workers=eval_workers)
                row.update({"eval_loss": scores["loss"], "eval_acc": scores["acc"]})
            history.append(row)
            epochs.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("train_loss", "eval_acc")})
            if accelerator.is_main_process:
                save_checkpoint(accelerator.unwrap_model(prepared_model), optimizer, out_dir, epoch + 1, history,
                                config, adversarial, distillation)
            accelerator.wait_for_everyone()
    final_dir = out_dir / FINAL
    if accelerator.is_main_process:
        task = getattr(getattr(train_set, "task", None), "name", None)
        with saving(out_dir, final_dir):
            save_prompt(accelerator.unwrap_model(prepared_model), final_dir,
                        training={"config": asdict(config), "metrics": history[-1] if history else {}, "task": task,
                                  "eval_split": getattr(eval_set, "split", None),
                                  "adversarial": adversarial.describe() if adversarial else None})
    return TrainResult(history, final_dir)


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


def latest_checkpoint(out_dir: Path) -> Path | None:
    pointer = out_dir / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    return out_dir / CHECKPOINTS / pointer.read_text().strip()


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
    a setting the checkpoint predates counts as its default."""
    current = asdict(config)
    return sorted(key for key, value in current.items()
                  if key not in SPEED_ONLY and saved.get(key, getattr(TrainConfig, key)) != value)


def write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.json (a list of rows) and metrics.csv, both rewritten atomically every epoch."""
    write_atomic(out_dir / "metrics.json", lambda tmp: tmp.write_text(json.dumps(history, indent=2)))
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(history)
    write_atomic(out_dir / "metrics.csv", lambda tmp: tmp.write_text(text.getvalue()))


def resolve_prompt_dir(path: Path | str) -> Path:
    """Accept a checkpoint folder, a training run's folder (whose final prompt is in ``prompt/``) or
    a Hub reference ``hf://ORG/NAME[@REVISION]``."""
    path = resolve_hub_prompt(path) if is_hub_reference(path) else Path(path)
    if (path / META_FILE).is_file() or not (path / FINAL / META_FILE).is_file():
        return path
    return path / FINAL
