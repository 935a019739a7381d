"""`vprompt reproduce robust-tokens`: the robust-prompting seed's questions asked of token prompts.

The grid of `vprompt reproduce pbl` ([`vprompt.recipes.pbl`][]) on the zoo's standard and
adversarially fine-tuned ViTs, with the token methods beside VP: {standard, robust source} ×
{linear, VPT-deep, VAPT, VP, VP + PBL} × tasks × seeds, each scored clean, under PGD and under
AutoAttack (the image perturbed before any prompt). Answers:

1. *Inherited robustness*: does each method keep more robust accuracy on the robust source?
2. *Trade-off*: what does each method lose in clean accuracy there?
3. *Input-adaptive prompts*: VAPT against the static VPT-deep, on each source.

Seed 000 asks the first two of pixel prompts only; no peer measures them for token prompts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from vprompt.recipes.pbl import METHODS as VP_METHODS
from vprompt.recipes.pbl import PBLReproduction, Variant
from vprompt.recipes.pbl_report import change_lines, inherited_lines, method_means
from vprompt.train import TrainConfig
from vprompt.validation import NonEmpty, Writable, above, at_least

TOKEN_METHODS = ("linear", "vpt-deep", "vapt")
METHODS = TOKEN_METHODS + VP_METHODS
LABELS = {"linear": "the linear head", "vpt-deep": "VPT-deep", "vapt": "VAPT", "vp": "VP"}


@dataclass
class RobustTokensReproduction(PBLReproduction):
    out: Annotated[Path, Writable()] = Path("reproduce-robust-tokens")
    """Folder for the data, one folder per run, results.json / results.md, the plot and prompt images."""
    methods: Annotated[list[str], NonEmpty()] = field(
        default_factory=lambda: ["linear", "vpt-deep", "vapt", "vp", "vp+pbl-output"])
    """Which of linear, vpt-deep, vapt, vp, vp+pbl-value, vp+pbl-spatial, vp+pbl-output to run."""
    standard: str = "zoo:fractal-vit"
    """The standard source ViT: zoo:NAME, or a timm name (with --standard-weights)."""
    robust: str = "zoo:fractal-vit-robust"
    """The robust source ViT, named like --standard."""
    prompt_len: Annotated[int, at_least(1)] = 8
    """Prompt tokens of VPT-deep (per block) and VAPT."""
    token_lr: Annotated[float, above(0)] = 0.1
    """AdamW base rate of linear and VPT-deep (the demo's; weight decay 1e-4, one warm-up epoch)."""
    vapt_lr: Annotated[float, above(0)] = 0.02
    """AdamW base rate of VAPT, whose prompts come from a small network (reproduce vapt's table rate)."""

    allowed_methods: ClassVar[tuple[str, ...]] = METHODS
    plot_title: ClassVar[str] = "Token and pixel prompts: clean vs robust"

    def every_variant(self) -> dict[str, Variant]:
        """The token methods, then VP and its PBL variants."""
        tokens = {"linear": Variant("linear", {})} | {
            name: Variant(name, {"prompt_len": self.prompt_len}) for name in ("vpt-deep", "vapt")}
        return tokens | super().every_variant()

    def train_config(self, variant: str, seed: int) -> TrainConfig:
        """The token methods train with the demo's schedule; VP as in `reproduce pbl`."""
        if variant not in TOKEN_METHODS:
            return super().train_config(variant, seed)
        return TrainConfig(epochs=self.epochs, batch_size=64, optimizer="adamw",
                           base_lr=self.vapt_lr if variant == "vapt" else self.token_lr, weight_decay=1e-4,
                           warmup_epochs=1, seed=seed, mixed_precision=self.mixed_precision)

    def answer_lines(self) -> Callable[[list[dict[str, Any]]], list[str]]:
        return token_answers


def token_answers(rows: list[dict[str, Any]]) -> list[str]:
    """Questions 1 and 2 for every method, 3 for VAPT against VPT-deep, then each PBL boundary against VP."""
    means = method_means(rows)
    methods = list(dict.fromkeys(method for _, method in means))
    lines = [line for method in methods if method in LABELS for line in inherited_lines(means, method, LABELS[method])]
    lines += change_lines(rows, "vpt-deep", "3", lambda method: method == "vapt")
    return lines + change_lines(rows, "vp", "PBL", lambda method: method.startswith("vp+pbl"))
