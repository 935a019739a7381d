"""`vprompt predict`: a saved prompt's top-k classes for image files or a task split, streamed to a
file or the terminal, ending with one summary line."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from vprompt.data.registry import open_task
from vprompt.errors import ConfigError, DataError
from vprompt.model import load_prompt
from vprompt.predict import ImageFiles, RowWriter, iter_predictions, output_format, scan_images


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is not a device (cpu, cuda, cuda:N or auto)") from exc


def predict_to(prompt: str | Path, images: list[str], data: str | None, split: str, top_k: int, out: Path | None,
               batch_size: int, device: str, strict: bool, progress: bool,
               weights: Path | None = None) -> dict[str, int]:
    """Predict and write every row; returns (and prints to stderr) the counts (``weights``: the
    backbone's local weights, for a prompt trained on a file)."""
    if bool(images) == bool(data):
        raise ConfigError("give either IMAGES (files, folders or globs) or --data TASK, not both or neither")
    fmt = output_format(out)
    model = load_prompt(prompt, weights=weights).to(resolve_device(device))
    skipped = 0
    if data:
        source = open_task(data, check_sizes=False)
        dataset = source.dataset(split, model.image_size)
        samples = getattr(dataset, "samples", None)
        names = (lambda i: str(samples[i][0])) if samples else (lambda i: f"{source.info.name}:{split}#{i}")
    else:
        scan = scan_images(images)
        if not scan.files:
            raise DataError(f"no image files in {', '.join(images)} ({scan.skipped} other files skipped)")
        dataset, skipped = ImageFiles(scan.files, model.image_size), scan.skipped
        names = lambda i: str(scan.files[i])  # noqa: E731
    counts = {"predicted": 0, "unreadable": 0, "skipped": skipped}
    target = out.with_name(out.name + ".tmp") if out else None
    stream = target.open("w", newline="") if target else sys.stdout
    try:
        writer = RowWriter(stream, fmt, min(top_k, model.num_classes), with_label=bool(data))
        for row in iter_predictions(model, dataset, names, top_k, batch_size, strict, progress=progress):
            writer.write(row)
            counts["unreadable" if row["error"] else "predicted"] += 1
        writer.close()
    except BaseException:
        if target:
            stream.close()
            target.unlink(missing_ok=True)  # a failed run leaves no half-written file behind
        raise
    if target:
        stream.close()
        target.replace(out)
    summary = f"{counts['predicted']} predicted, {counts['unreadable']} unreadable"
    if skipped:
        summary += f", {skipped} files skipped (not image files by their extension)"
    if counts["predicted"] == 0:  # a run that predicted nothing must not look like a success
        raise DataError(f"nothing predicted: {summary}" + (f" (their error rows are in {out})" if out else ""))
    print(summary + (f"; rows in {out}" if out else ""), file=sys.stderr)
    return counts
