"""Training-step cost of linear probing, VPT-shallow, VPT-deep, VAPT, BitFit, LoRA (peft, r = 8) and
full fine-tuning on a ViT (and with ``--families`` on an Eva and a Swin: one row set per backbone family).

Ratios per method, all measured in one run with all variants interleaved:

* ``step_ratio_vs_backbone``: the method's training step (forward + backward + SGD step) over
  the frozen backbone's forward + backward with *input gradients only* at the same token count.
  The reference is the method's own model object with every parameter frozen and the images
  requiring grad, so for VPT it carries the same p prompt tokens and the same hooks, and the
  ratio isolates what training the method's parameters adds to backpropagating through the
  backbone, which any prompt method must do (the reference also backpropagates through the patch
  embedding to the pixels, which VPT does not need, so VPT may come out slightly below 1);
* ``step_ratio_vs_full_ft`` and ``mem_ratio_vs_full_ft``: the method over full fine-tuning;
* ``step_ratio_vs_vpt_deep`` and ``flops_ratio_vs_vpt_deep``: the method over VPT-deep at the same
  p (VAPT's cost, which the paper reports as +0.6 % FLOPs). FLOPs are one forward pass as
  ``torch.utils.flop_counter`` counts them: matmuls, convolutions and attention, not norms.

Memory on CUDA is the allocator's peak during one step above what was allocated before it, plus
the model's own resident tensors. On CPU there is no allocator peak, so it is counted instead:
parameters and buffers + gradients + optimizer state + the unique storages autograd saves for
backward (parameters excluded): the memory held at the end of the forward pass of a step in
which the previous step's gradients are still alive (``vprompt.train`` zeroes them after the
forward pass).

    python benchmarks/step_cost.py --quick
    python benchmarks/step_cost.py --out results/step_cost.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from _common import (Column, Row, available_cores, base_parser, interleaved_timings, markdown_table, paired_ratios,
                     quartiles, setup, write_outputs)
from vprompt.backbones import BackboneSpec
from vprompt.model import PromptedModel, create_model
from vprompt.train import TrainConfig, make_optimizer

METHODS = ("linear", "vpt-shallow", "vpt-deep", "vapt", "bitfit", "lora", "full")
PROMPTED = ("vpt-shallow", "vpt-deep", "vapt")  # the methods that take a prompt length
NUM_CLASSES = 100


@dataclass(frozen=True)
class Size:
    """One backbone size: a row label, the timm model and the kwargs that shrink it, the batch."""

    label: str
    timm_name: str
    batch: int
    kwargs: dict[str, Any] = field(default_factory=dict)


FULL_SIZES = (
    Size("vit_tiny_patch16_224", "vit_tiny_patch16_224", batch=32),
    Size("vit_small_patch16_224", "vit_small_patch16_224", batch=32),
)
# Opt-in (--with-base): the width VPT is usually run at; slow on a CPU.
BASE_SIZE = Size("vit_base_patch16_224", "vit_base_patch16_224", batch=16)
# --families: VPT-deep beside the other methods on one Eva (DINOv3, rotary embeddings, 4 registers)
# and one Swin (window attention; VAPT does not run on it).
FAMILY_SIZES = (
    Size("dinov3-S/16 (Eva)", "vit_small_patch16_dinov3", batch=16),
    Size("swin-T (Swin)", "swin_tiny_patch4_window7_224", batch=16),
)
QUICK_FAMILY_SIZES = (
    Size("dinov3-q64-d6-w192 (Eva)", "vit_small_patch16_dinov3", batch=16,
         kwargs=dict(img_size=64, patch_size=8, depth=6, embed_dim=192, num_heads=3)),
    Size("swin-q64 (Swin)", "swin_tiny_patch4_window7_224", batch=16,
         kwargs=dict(img_size=64, patch_size=2, window_size=4, embed_dim=48, depths=(2, 2, 2), num_heads=(2, 4, 8))),
)
# Quick: tiny's and small's widths at 64×64 pixels in 8×8 patches (64 patch tokens), 6 blocks.
QUICK_SIZES = (
    Size("vit-q64-d6-w192", "vit_tiny_patch16_224", batch=16,
         kwargs=dict(img_size=64, patch_size=8, depth=6, embed_dim=192, num_heads=3)),
    Size("vit-q64-d6-w384", "vit_small_patch16_224", batch=16,
         kwargs=dict(img_size=64, patch_size=8, depth=6, embed_dim=384, num_heads=6)),
)


@dataclass
class Bench:
    """One method's model, optimizer and batch; steps as a trainer and as the backbone reference."""

    model: PromptedModel
    optimizer: torch.optim.Optimizer
    trainable: list[nn.Parameter]
    images: torch.Tensor
    labels: torch.Tensor
    amp: bool

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(images)
        return F.cross_entropy(logits.float(), self.labels)

    def train_step(self, loss_of: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """One step as ``vprompt.train`` takes it: forward, zero grads, backward, SGD step."""
        loss = (loss_of or self.loss)(self.images)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def reference_step(self, loss_of: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Forward + backward through the same model with no parameter trained, only image grads."""
        with frozen(self.trainable):
            (loss_of or self.loss)(self.images.detach().requires_grad_(True)).backward()

    def tokens(self) -> int:
        """Tokens per attention: the whole sequence, or for Swin one window (its prompts included)."""
        backbone, prompt = self.model.backbone, self.model.token_prompt
        prompts = prompt.num_tokens if prompt else 0
        if hasattr(backbone, "layers"):  # Swin: window attention
            return backbone.layers[0].blocks[0].window_area + prompts
        return backbone.patch_embed.num_patches + backbone.num_prefix_tokens + prompts


@contextlib.contextmanager
def frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """Temporarily turn the trainable parameters into frozen ones (toggling flags costs microseconds)."""
    for param in params:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param in params:
            param.requires_grad_(True)


def build(size: Size, method: str, prompt_len: int, device: torch.device, amp: bool, seed: int) -> Bench:
    """The model exactly as ``vprompt`` builds it for training, in train mode, with its SGD optimizer."""
    torch.manual_seed(seed)  # prompt and head init; backbone weights come from the spec's init_seed
    options = {"prompt_len": prompt_len} if method in PROMPTED else {}
    model = create_model(BackboneSpec(size.timm_name, kwargs=size.kwargs), method, NUM_CLASSES, **options)
    model = model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, TrainConfig(batch_size=size.batch))
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(size.batch, 3, *model.data_config.input_size, generator=generator).to(device)
    labels = torch.randint(0, NUM_CLASSES, (size.batch,), generator=generator).to(device)
    return Bench(model, optimizer, trainable, images, labels, amp)


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and aliases counted once)."""
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(seen.values())


def resident_tensors(bench: Bench, reference: bool) -> Iterator[torch.Tensor]:
    """What a variant keeps between steps: weights and buffers, plus grads and SGD state if it trains."""
    yield from bench.model.parameters()
    yield from bench.model.buffers()
    if not reference:
        yield from (p.grad for p in bench.trainable if p.grad is not None)
        yield from (t for state in bench.optimizer.state.values() for t in state.values()
                    if isinstance(t, torch.Tensor))


def counted_memory(bench: Bench, reference: bool) -> int:
    """CPU: resident tensors + the storages autograd saves in the forward pass (weights excluded).

    The reference also holds its input gradient; the input batch itself is counted for no variant.
    """
    weights = {t.untyped_storage().data_ptr() for t in resident_tensors(bench, reference=True)}
    saved: list[torch.Tensor] = []
    inputs: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.untyped_storage().data_ptr() not in weights:
            saved.append(tensor)
        return tensor

    def hooked_loss(images: torch.Tensor) -> torch.Tensor:
        inputs.append(images)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            return bench.loss(images)

    (bench.reference_step if reference else bench.train_step)(hooked_loss)
    input_grads = [x.grad for x in inputs if x.grad is not None]
    return storage_bytes(resident_tensors(bench, reference)) + storage_bytes(saved + input_grads)


def cuda_peak_memory(bench: Bench, reference: bool) -> int:
    """CUDA: the step's allocator peak above what was allocated before, plus its own resident tensors."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    (bench.reference_step if reference else bench.train_step)()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before + storage_bytes(resident_tensors(bench, reference))


def measure_size(size: Size, args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Time all methods and their references for one backbone size in interleaved rounds."""
    benches: dict[str, Bench] = {}
    for method in METHODS:  # linear first: its backbone says whether a method runs on this family
        if method == "linear" or runs_on(method, benches["linear"].model.backbone):
            benches[method] = build(size, method, args.prompt_len, device, args.amp, args.seed)
    steps: dict[str, Callable[[], None]] = {m: b.train_step for m, b in benches.items()}
    steps |= {f"ref:{m}": b.reference_step for m, b in benches.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = interleaved_timings(steps, rounds=args.rounds, warmup=args.warmup, sync=sync)
    measure_memory = cuda_peak_memory if device.type == "cuda" else counted_memory
    memory = {name: measure_memory(benches[name.removeprefix("ref:")], name.startswith("ref:")) for name in steps}
    flops = {method: forward_flops(bench) for method, bench in benches.items()}
    load = round(os.getloadavg()[0], 2)
    # Full FT minus its weight gradients and optimizer step is its own backbone reference, so this
    # is the least any method that backpropagates through the frozen backbone can cost, ÷ full FT.
    _, floor, _ = quartiles(paired_ratios(times["ref:full"], times["full"]))
    rows = []
    for method, bench in benches.items():
        b1, vs_backbone, b3 = quartiles(paired_ratios(times[method], times[f"ref:{method}"]))
        f1, vs_full, f3 = quartiles(paired_ratios(times[method], times["full"]))
        d1, vs_deep, d3 = quartiles(paired_ratios(times[method], times["vpt-deep"]))
        rows.append({
            "model": size.label,
            "method": method,
            "step_ratio_vs_backbone": round(vs_backbone, 3),
            "step_ratio_vs_full_ft": round(vs_full, 3),
            "mem_ratio_vs_full_ft": round(memory[method] / memory["full"], 3),
            "step_ratio_vs_backbone_q1": round(b1, 3),
            "step_ratio_vs_backbone_q3": round(b3, 3),
            "step_ratio_vs_full_ft_q1": round(f1, 3),
            "step_ratio_vs_full_ft_q3": round(f3, 3),
            "step_ratio_vs_vpt_deep": round(vs_deep, 3),
            "step_ratio_vs_vpt_deep_q1": round(d1, 3),
            "step_ratio_vs_vpt_deep_q3": round(d3, 3),
            "no_weight_grad_floor_vs_full_ft": round(floor, 3),
            "forward_flops": flops[method],
            "flops_ratio_vs_vpt_deep": round(flops[method] / flops["vpt-deep"], 4),
            "tokens": bench.tokens(),
            "prompt_len": args.prompt_len if method in PROMPTED else 0,
            "batch": size.batch,
            "image_size": "x".join(map(str, bench.model.data_config.input_size)),
            "timm_name": size.timm_name,
            "timm_kwargs": str(size.kwargs),
            "trainable_params": sum(p.numel() for p in bench.trainable),
            "step_ms": round(quartiles(times[method])[1] * 1e3, 2),
            "backbone_ref_ms": round(quartiles(times[f"ref:{method}"])[1] * 1e3, 2),
            "peak_bytes": memory[method],
            "backbone_ref_peak_bytes": memory[f"ref:{method}"],
            "memory_source": "cuda max_memory_allocated" if device.type == "cuda" else "saved-tensors accounting (CPU)",
            "device_type": device.type,
            "device": device_name(device),
            "threads": args.threads,
            "cores": available_cores(),
            "amp": "bf16" if args.amp else "no",
            "optimizer": f"{type(bench.optimizer).__name__} momentum {bench.optimizer.defaults['momentum']}",
            "warmup_rounds": args.warmup,
            "rounds": args.rounds,
            "torch": torch.__version__,
            "load_avg_1m": load,
        })
    return rows


def runs_on(method: str, backbone: nn.Module) -> bool:
    """Whether the registry's ``method`` runs on this backbone, as its own refusal says (VAPT not on
    Swin: its stages merge patches; full fine-tuning on any backbone, of a known family or not)."""
    from vprompt.families import find_family
    from vprompt.methods import get_method

    family = find_family(backbone)
    return get_method(method).refusal(family.layout(backbone) if family else None) is None


def forward_flops(bench: Bench) -> int:
    """FLOPs of one forward pass as torch's FlopCounterMode counts them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:  # not under no_grad: the counter's module tracker hooks into autograd
        bench.model(bench.images)
    return counter.get_total_flops()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()})"


def with_iqr(key: str) -> Callable[[Row], str]:
    """A cell formatter: the median ratio, then its interquartile range over rounds."""
    return lambda row: f"{row[key]:.2f} ({row[key + '_q1']:.2f}–{row[key + '_q3']:.2f})"


def table(rows: list[Row]) -> str:
    """Ratios always; absolute step times only on a GPU (DESIGN.md, "Numbers")."""
    columns: list[Column] = [
        ("model", lambda r: r["model"]),
        ("method", lambda r: r["method"]),
        ("tokens", lambda r: str(r["tokens"])),
        ("step ÷ backbone fwd+bwd (IQR)", with_iqr("step_ratio_vs_backbone")),
        ("step ÷ full FT (IQR)", with_iqr("step_ratio_vs_full_ft")),
        ("step ÷ VPT-deep (IQR)", with_iqr("step_ratio_vs_vpt_deep")),
        ("fwd FLOPs ÷ VPT-deep", lambda r: f"{r['flops_ratio_vs_vpt_deep']:.4f}"),
        ("memory MiB", lambda r: f"{r['peak_bytes'] / 2**20:.0f}"),
        ("memory ÷ full FT", lambda r: f"{r['mem_ratio_vs_full_ft']:.2f}"),
    ]
    if rows[0]["device_type"] == "cuda":
        columns.insert(3, ("step ms", lambda r: f"{r['step_ms']:.1f}"))
    first = rows[0]
    loads = {r["model"]: r["load_avg_1m"] for r in rows}
    floors = ", ".join(f"{model} {floor:.2f}" for model, floor in
                       {r["model"]: r["no_weight_grad_floor_vs_full_ft"] for r in rows}.items())
    caption = (
        f"Step cost on {first['device']}, {first['threads']} threads, amp {first['amp']}, SGD; "
        f"batch {', '.join(sorted({str(r['batch']) for r in rows}))}. Ratios are medians over "
        f"{first['rounds']} interleaved rounds (after {first['warmup_rounds']} warm-up) of per-round "
        f"paired ratios; the backbone reference is the same model with nothing trainable, "
        f"backpropagating to the images at the same token count. Full FT's own backbone reference "
        f"÷ full FT, the least any method that backpropagates through the frozen backbone can cost "
        f"(no weight gradients, no optimizer step; at full FT's token count, p below the prompted ones): {floors}. Memory: {first['memory_source']}. "
        f"1-minute load average after each model: {', '.join(map(str, loads.values()))} on "
        f"{first['cores']} cores, about {first['threads']} of it this run's own. Tokens: per attention, "
        f"the whole sequence, or for Swin one window with its prompts."
    )
    return caption + "\n\n" + markdown_table(rows, columns)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Training-step time, memory and FLOPs of linear / VPT-shallow / VPT-deep / VAPT / BitFit / LoRA / full FT")
    parser.add_argument("--prompt-len", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds (default: 8)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--with-base", action="store_true", help="also ViT-B/16 (batch 16) in the full run")
    parser.add_argument("--families", action="store_true",
                        help="instead of the ViT sizes: DINOv3-S/16 (Eva) and Swin-T at 224², batch 16")
    args = parser.parse_args(argv)
    setup(args)
    device = torch.device(args.device)
    rows: list[Row] = []
    if args.families:
        sizes = QUICK_FAMILY_SIZES if args.quick else FAMILY_SIZES
    else:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES + ((BASE_SIZE,) if args.with_base else ())
    for size in sizes:
        rows += measure_size(size, args, device)
        print(f"[step_cost] {size.label} done, load average {rows[-1]['load_avg_1m']}", file=sys.stderr)
    write_outputs(rows, table(rows), args.out, args.quick)


if __name__ == "__main__":
    main()
