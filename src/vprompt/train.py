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

from vprompt.errors import CheckpointError, ConfigError, NonFiniteLossError
from vprompt.evaluate import evaluate
from vprompt.heads import update_label_mapping
from vprompt.hub import is_hub_reference, resolve_hub_prompt
from vprompt.model import META_FILE, PromptedModel, load_prompt_into, save_prompt, write_atomic
from vprompt.robust.adversarial import AdversarialConfig, adversarial_examples
from vprompt.validation import Validated, above, at_least, at_most

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
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """auto: bf16 on a GPU that supports it, full precision on the CPU."""
    workers: Annotated[int, at_least(0)] = 0
    """DataLoader worker processes (0 loads in the main process)."""
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
    from accelerate import Accelerator

    if mixed_precision == "auto":
        gpu_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        mixed_precision = "bf16" if gpu_bf16 else "no"
    return Accelerator(mixed_precision=mixed_precision)


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

    Returns:
        The per-epoch metrics (loss, accuracy, learning rate, time; eval loss and accuracy when
        scored) and the folder of the saved prompt.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir, resume)
    accelerator = make_accelerator(config.mixed_precision)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config)
    start_epoch, history = 0, []
    if resume:
        start_epoch, history = restore(model, optimizer, out_dir, config, adversarial)
    sampler = EpochShuffle(len(train_set), config.seed)
    loader = DataLoader(train_set, config.batch_size, sampler=sampler, drop_last=False, num_workers=config.workers)
    prepared_model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = steps_per_epoch * config.warmup_epochs
    peak_lr = config.peak_lr(accelerator.num_processes)
    show = progress and accelerator.is_main_process
    epochs = tqdm(range(start_epoch, config.epochs), desc="epochs", disable=not show,
                  initial=start_epoch, total=config.epochs)
    for epoch in epochs:
        loader.set_epoch(epoch)  # accelerate passes it on to our sampler (and would otherwise count from 0)
        update_label_mapping(accelerator.unwrap_model(prepared_model), train_set, epoch, config.seed)
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
            logits = prepared_model(images)
            loss = F.cross_entropy(logits.float(), labels)
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
               "train_images": int(seen), "seconds": time.perf_counter() - started}
        if eval_set is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == config.epochs):
            scores = evaluate(model, eval_set, config.batch_size, accelerator=accelerator, workers=config.workers)
            row.update({"eval_loss": scores["loss"], "eval_acc": scores["acc"]})
        history.append(row)
        epochs.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("train_loss", "eval_acc")})
        if accelerator.is_main_process:
            save_checkpoint(accelerator.unwrap_model(prepared_model), optimizer, out_dir, epoch + 1, history, config,
                            adversarial)
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
                    adversarial: AdversarialConfig | None = None) -> None:
    """Write epoch ``epoch`` in full and the metrics, then switch the ``latest`` pointer to it
    atomically: the pointer is the last write, so any failed write (a full disk) leaves the previous
    checkpoint in charge; metrics already written for this epoch are rewritten when a resume redoes it."""
    root = out_dir / CHECKPOINTS
    name = f"epoch-{epoch:04d}"
    previous = latest_checkpoint(out_dir)
    target = root / name
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "history": history, "config": asdict(config),
             "adversarial": adversarial_settings(adversarial)}
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


def restore(model: PromptedModel, optimizer: torch.optim.Optimizer, out_dir: Path, config: TrainConfig,
            adversarial: AdversarialConfig | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Load the latest checkpoint into ``model`` and ``optimizer``; returns (next epoch, history)."""
    path = latest_checkpoint(out_dir)
    load_prompt_into(model, path)
    state = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=True)
    if state["config"] != asdict(config):
        changed = sorted(k for k in state["config"] if state["config"][k] != asdict(config).get(k))
        raise ConfigError(f"cannot resume {out_dir} with different settings: {', '.join(changed)} changed")
    if state.get("adversarial") != adversarial_settings(adversarial):
        raise ConfigError(f"cannot resume {out_dir} with a different adversarial-training setting")
    optimizer.load_state_dict(state["optimizer"])
    return state["epoch"], state["history"]


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
