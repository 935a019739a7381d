"""What the machine offers a training run: which precision ``auto`` means, how many loader workers
``auto`` means, and whether batches travel through pinned memory.

``auto`` precision is bf16 autocast where bf16 matrix products are faster than fp32 ones: a CUDA
GPU that supports bf16, or a CPU with AMX-BF16 tile units (Sapphire Rapids and later), which
oneDNN uses for bf16 matmuls (on such a 2-core VM a ViT-B/16 VPT-deep step took 0.28 of the fp32
step, ``docs/results/precision.md``). A CPU with only the AVX512-BF16 dot-product instructions
stays fp32: on one such VM (torch 2.14, oneDNN 3.12) a bf16-autocast ViT-B VPT-deep step took
about 1.5× the fp32 step, because MKL's fp32 GEMM beats oneDNN's AVX512-BF16 kernel there. The
capability is read from the CPU's feature flags (through torch's cpuinfo), never guessed from
its name. ``VPROMPT_AUTO_PRECISION`` (``no``, ``bf16`` or ``fp16``) pins what ``auto`` means on
every device, for a cluster whose machines differ, or a test suite that must be deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Literal, get_args

import torch
from torch import nn

from vprompt.errors import ConfigError

Precision = Literal["no", "bf16", "fp16"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
"""What a run asks for: a precision, or ``auto`` (see ``resolve_precision``)."""
PRECISIONS: tuple[str, ...] = get_args(Precision)
AUTO_PRECISION_ENV = "VPROMPT_AUTO_PRECISION"


def cpu_flag(probe_name: str) -> bool:
    """One of the CPU feature flags torch reads through cpuinfo. torch exposes them as private
    helpers; a torch without the helper counts as a CPU without the feature, so ``auto`` falls back
    to full precision rather than failing."""
    probe = getattr(torch.cpu, probe_name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX tile units, the hardware that makes oneDNN's bf16 matmuls fast."""
    return cpu_flag("_is_amx_tile_supported")


def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has the AVX512-BF16 instructions (recorded, not used by ``auto``)."""
    return cpu_flag("_is_avx512_bf16_supported")


def resolve_precision(mixed_precision: str, device: torch.device | str | None = None) -> Precision:
    """The precision a run uses: ``auto`` becomes ``bf16`` on a bf16-capable GPU or an AMX-BF16
    CPU and ``no`` elsewhere (or what ``VPROMPT_AUTO_PRECISION`` says); any other value is
    returned as it is.

    Args:
        mixed_precision: ``auto``, ``no``, ``bf16`` or ``fp16``.
        device: The device the run computes on (default: CUDA when available, else the CPU).

    Returns:
        ``no``, ``bf16`` or ``fp16``.

    Raises:
        ConfigError: ``VPROMPT_AUTO_PRECISION`` holds something else.
    """
    if mixed_precision != "auto":
        return mixed_precision  # type: ignore[return-value]
    pinned = os.environ.get(AUTO_PRECISION_ENV)
    if pinned:
        if pinned not in PRECISIONS:
            raise ConfigError(f"{AUTO_PRECISION_ENV}={pinned!r} is not one of {', '.join(PRECISIONS)}")
        return pinned  # type: ignore[return-value]
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    if kind == "cpu":
        return "bf16" if cpu_has_amx_bf16() else "no"
    return "no"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_workers(workers: int | str, decodes_images: bool) -> int:
    """Loader worker processes: ``auto`` is one per CPU beyond the one that trains (at most 8) for a
    dataset that reads and decodes image files, and 0 for one already in memory, where a worker
    would only copy tensors.

    Args:
        workers: A count, or ``auto``.
        decodes_images: Whether reading an item decodes an image file.

    Returns:
        The number of DataLoader worker processes.
    """
    if workers != "auto":
        return int(workers)
    return min(8, max(0, available_cpus() - 1)) if decodes_images else 0


def pin_memory() -> bool:
    """Pinned host memory (and non-blocking copies) only pay off when batches go to a GPU."""
    return torch.cuda.is_available()


def fused_attention_pays(device_type: str, precision: str) -> bool:
    """Whether torch's fused attention kernel (``scaled_dot_product_attention``) is the faster path
    for training. Not on a CPU under bf16 autocast: the CPU flash-attention kernel's bf16 backward
    is slower there than timm's explicit matmul-softmax path, whose matmuls run on AMX (a VPT-deep
    step took 0.47 of the fused one on the demo's ViT and 0.78 on ViT-B/16, ``docs/results/precision.md``).

    Args:
        device_type: ``cpu`` or ``cuda``.
        precision: The resolved precision (``no``, ``bf16`` or ``fp16``).

    Returns:
        False where the explicit path is faster.
    """
    return not (device_type == "cpu" and precision == "bf16")


@contextmanager
def attention_path(model: nn.Module, fused: bool) -> Iterator[None]:
    """Every timm attention module in ``model`` on the fused kernel or on the explicit path (their
    ``fused_attn`` switch) for the duration, then each back to its own setting.

    Args:
        model: Any module; those without the switch are left alone.
        fused: The path to take.
    """
    switches = {m: m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)}
    for module in switches:
        module.fused_attn = fused
    try:
        yield
    finally:
        for module, value in switches.items():
            module.fused_attn = value


def training_attention(model: nn.Module, device_type: str, precision: str) -> ContextManager[None]:
    """The attention path ``vprompt.train`` trains on: the explicit one where the fused kernel does
    not pay (see ``fused_attention_pays``), else each
    module's own setting, untouched.

    Args:
        model: The model being trained.
        device_type: ``cpu`` or ``cuda``.
        precision: The resolved precision.

    Returns:
        A context manager to train inside (forward and backward: a checkpointed block is
        recomputed in the backward pass).
    """
    return nullcontext() if fused_attention_pays(device_type, precision) else attention_path(model, fused=False)
