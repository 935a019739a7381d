"""The files a prompt and a training run leave on disk, below the model and the trainer.

A **prompt checkpoint** is a folder of ``prompt.safetensors`` (the trainable tensors),
``prompt.json`` (what rebuilds the model and refuses another one) and ``README.md`` (the model
card). A **run folder** holds ``checkpoints/epoch-NNNN/`` (a prompt checkpoint plus the optimizer
state), a ``checkpoints/latest`` pointer, ``metrics.json``/``metrics.csv``, and the finished prompt
in ``prompt/``. Every reference a user gives for a prompt (a checkpoint folder, a run folder,
``hf://ORG/NAME[@REVISION]``) is resolved here, and every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialize_tensors

from vprompt.card import CARD_FILE
from vprompt.errors import CheckpointError
from vprompt.hub import is_hub_reference, resolve_hub_prompt

CHECKPOINT_FORMAT = 1
WEIGHTS_FILE = "prompt.safetensors"
META_FILE = "prompt.json"
PROMPT_FILES = [META_FILE, WEIGHTS_FILE, CARD_FILE]
"""Everything a prompt checkpoint holds (what a Hub download fetches)."""

CHECKPOINTS = "checkpoints"
LATEST = "latest"
TRAIN_STATE = "train_state.pt"
FINAL = "prompt"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Write via a temporary sibling and rename, so a crash never leaves a half-written file; a
    failed write (a full disk) leaves no temporary behind either, and its OSError names ``path``
    (the OS reports a failing write() without a file name)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        tmp.replace(path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    finally:
        tmp.unlink(missing_ok=True)  # already renamed away unless the write failed


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_prompt_files(directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any], card: str) -> None:
    """A prompt checkpoint's three files. The tensors are serialised in memory and written like
    every other file, so a full disk raises an OSError naming the file (safetensors' own file
    writer raises a SafetensorError instead)."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = serialize_tensors({k: (v.float() if v.is_floating_point() else v).contiguous().cpu()
                                 for k, v in tensors.items()})
    write_atomic(directory / WEIGHTS_FILE, lambda tmp: tmp.write_bytes(weights))
    write_json(directory / META_FILE, meta)
    write_atomic(directory / CARD_FILE, lambda tmp: tmp.write_text(card))


def read_metadata(directory: Path | str) -> dict[str, Any]:
    """A checkpoint's ``prompt.json``, refused when missing, corrupt or of another format."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"no prompt checkpoint in {directory} ({META_FILE} not found)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a JSON object")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {meta.get('format')}, expected {CHECKPOINT_FORMAT}")
    return meta


def read_tensors(directory: Path | str) -> dict[str, torch.Tensor]:
    """A checkpoint's trainable tensors, or a CheckpointError naming the file."""
    path = Path(directory) / WEIGHTS_FILE
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def resolve_prompt_dir(path: Path | str) -> Path:
    """The checkpoint folder a user means: a checkpoint folder itself, a training run's folder
    (whose final prompt is in ``prompt/``) or a Hub reference ``hf://ORG/NAME[@REVISION]``."""
    path = resolve_hub_prompt(path, PROMPT_FILES) if is_hub_reference(path) else Path(path)
    if (path / META_FILE).is_file() or not (path / FINAL / META_FILE).is_file():
        return path
    return path / FINAL


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The run's last complete epoch checkpoint (what ``--resume`` continues from), if any."""
    pointer = out_dir / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    return out_dir / CHECKPOINTS / pointer.read_text().strip()


def write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.json (a list of rows) and metrics.csv, both rewritten atomically every epoch."""
    write_json(out_dir / METRICS_JSON, history)
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns)
    writer.writeheader()
    writer.writerows(history)
    write_atomic(out_dir / METRICS_CSV, lambda tmp: tmp.write_text(text.getvalue()))


def recorded_accuracy(prompt_dir: Path) -> float | None:
    """The last evaluated accuracy of the training run that wrote ``prompt_dir``, if it left metrics."""
    for folder in (prompt_dir, prompt_dir.parent):
        metrics = folder / METRICS_JSON
        if metrics.is_file():
            rows = json.loads(metrics.read_text())
            scored = [row["eval_acc"] for row in rows if row.get("eval_acc") is not None]
            return scored[-1] if scored else None
    return None
