"""Standalone exports of a trained prompt: one TorchScript or ONNX file holding the whole
PromptedModel (normalisation, input prompt, backbone with its token prompts, head) that runs with
torch alone or onnxruntime alone, [0, 1] images in and logits out, any batch size; beside it a
JSON sidecar with the class names, input size and the checkpoint's fingerprints.

The token prompts' hooks run while the model is traced, so the exported graph holds exactly the
operations they perform. Every export is checked against the PromptedModel at two batch sizes
before it is kept: an export that disagrees is refused, never written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vprompt.errors import ConfigError
from vprompt.checkpoint import WEIGHTS_FILE, write_atomic, write_json
from vprompt.version import VERSION
from vprompt.model import PromptedModel
from vprompt.tuners import merged_copy

FORMATS = ("onnx", "torchscript")
TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3)


def export_model(model: PromptedModel, out: Path | str, fmt: str, prompt_dir: Path | None = None) -> Path:
    """Write ``model`` to ``out`` as ``fmt`` and its sidecar to ``out`` + ``.json``; returns the sidecar."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    model = (merged_copy(model) or model).eval()  # a tuner's layers folded into the weights they adapt
    example = torch.rand(2, 3, *model.image_size, generator=torch.Generator().manual_seed(0))
    what = f"{model.method.name} on {model.backbone_spec.name}"
    try:
        write_atomic(out, lambda tmp: WRITERS[fmt](model, example, tmp))
    except ConfigError:
        raise
    except Exception as exc:  # the exporter's own message says what it could not trace
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ConfigError(f"cannot export {what} to {fmt}: {reason}") from exc
    disagreement = max_difference(model, RUNNERS[fmt](out))
    if disagreement > TOLERANCE:
        out.unlink()
        raise ConfigError(f"cannot export {what} to {fmt}: the exported model's logits differ from the "
                          f"PromptedModel's by {disagreement:.2e} (more than {TOLERANCE})")
    sidecar = out.with_name(out.name + ".json")
    meta = sidecar_metadata(model, out, fmt, prompt_dir)
    write_json(sidecar, meta)
    return sidecar


def write_torchscript(model: PromptedModel, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # Shape checks that hold at the traced size are kept as constants; the check at two batch
        # sizes below is what proves the trace general.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))


def write_onnx(model: PromptedModel, example: torch.Tensor, path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as exc:
        raise ConfigError("ONNX export needs the optional extra: pip install 'vprompt[export]'") from exc
    batch = torch.export.Dim("batch", min=1, max=65536)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporter narrates every step
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},),
                                    input_names=["images"], output_names=["logits"])
    program.save(str(path))


def run_torchscript(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.10+ deprecates TorchScript; it still runs
        module = torch.jit.load(str(path))
    return lambda images: module(torch.from_numpy(images)).detach().numpy()


def run_onnx(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("checking an ONNX export needs onnxruntime: pip install 'vprompt[export]'") from exc
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {"images": images})[0]


WRITERS: dict[str, Callable[[PromptedModel, torch.Tensor, Path], None]] = {
    "onnx": write_onnx, "torchscript": write_torchscript}
RUNNERS: dict[str, Callable[[Path], Callable[[np.ndarray], np.ndarray]]] = {
    "onnx": run_onnx, "torchscript": run_torchscript}


def max_difference(model: PromptedModel, run: Callable[[np.ndarray], np.ndarray]) -> float:
    """The largest logit difference between the export and the model, over batches of several sizes."""
    worst = 0.0
    for batch in CHECK_BATCHES:
        images = torch.rand(batch, 3, *model.image_size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(images).numpy()
        worst = max(worst, float(np.abs(run(images.numpy()) - expected).max()))
    return worst


def sidecar_metadata(model: PromptedModel, out: Path, fmt: str, prompt_dir: Path | None) -> dict[str, Any]:
    weights = prompt_dir / WEIGHTS_FILE if prompt_dir else None
    return {
        "format": fmt,
        "file": out.name,
        "input": {"name": "images", "shape": ["batch", 3, *model.image_size], "dtype": "float32",
                  "range": [0.0, 1.0], "layout": "RGB, not normalised (the model normalises)"},
        "output": {"name": "logits", "shape": ["batch", model.num_classes]},
        "class_names": model.class_names,
        "input_size": list(model.image_size),
        "method": model.method.name,
        "method_config": model.method_config.to_dict(),
        "backbone": model.backbone_spec.to_dict(),
        "backbone_fingerprint": model.backbone_fingerprint,
        "prompt_sha256": hashlib.sha256(weights.read_bytes()).hexdigest() if weights and weights.is_file() else None,
        "checked": {"max_abs_logit_difference_limit": TOLERANCE, "batches": list(CHECK_BATCHES)},
        "vprompt_version": VERSION,
        "torch_version": torch.__version__,
    }
