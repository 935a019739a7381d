"""`vprompt reproduce`: the paper recipes (imported here, and only by the commands that run them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

from tyro.conf import subcommand

from vprompt.cli.args import Group, OptionalBackboneArgs, Progress, RayArgs
from vprompt.recipes.baselines import BaselinesReproduction
from vprompt.recipes.hgprompt import HGPromptReproduction
from vprompt.recipes.pbl import PBLReproduction
from vprompt.recipes.robust_tokens import RobustTokensReproduction
from vprompt.recipes.vapt import VAPTReproduction

RECIPES = {
    "vapt": "VAPT vs VPT-deep / VPT-shallow / linear, VTAB-1k protocol (offline: synthetic suite)",
    "pbl": "VP and PBL on standard vs robust zoo CNNs: clean, PGD and AutoAttack accuracy (offline)",
    "robust-tokens": "linear, VPT-deep, VAPT, VP (+ PBL) on standard vs robust zoo ViTs: clean, PGD, AutoAttack",
    "hgprompt": "HGPrompt vs six baselines, leave-one-task-out prompt transfer (offline: synthetic suite)",
    "baselines": "linear, VPT-deep, VAPT, key-value, VFPT, LoRA, BitFit: clean, PGD, parameters, step time",
}


@dataclass
class ReproduceVAPT:
    """VAPT vs VPT-deep / VPT-shallow / linear under the VTAB-1k protocol (offline by default)."""

    config: VAPTReproduction = field(default_factory=VAPTReproduction)
    backbone: OptionalBackboneArgs = field(default_factory=OptionalBackboneArgs)
    runner: RayArgs = field(default_factory=lambda: RayArgs(ray="none"))
    progress: Progress = True

    def run(self) -> None:
        from vprompt.recipes.vapt import run_vapt_reproduction

        run_vapt_reproduction(self.config, self.backbone.spec_or_none(), progress=self.progress,
                              executor=self.runner.executor())
        show_results(self.config.out)


@dataclass
class ReproducePBL:
    """VP and PBL on the zoo's standard and robust CNN: clean, PGD and AutoAttack accuracy."""

    config: PBLReproduction = field(default_factory=PBLReproduction)
    progress: Progress = True

    def run(self) -> None:
        run_robustness(self.config, self.progress)


@dataclass
class ReproduceRobustTokens:
    """Linear, VPT-deep, VAPT and VP (+ PBL) on the zoo's standard and robust ViT: clean, PGD and AutoAttack."""

    config: RobustTokensReproduction = field(default_factory=RobustTokensReproduction)
    progress: Progress = True

    def run(self) -> None:
        run_robustness(self.config, self.progress)


def show_results(out: Path, *more: str) -> None:
    """A recipe's table, then where its results (and ``more`` files) are."""
    print((out / "results.md").read_text())
    print(", ".join([f"results: {out / 'results.json'}", *more]))


def run_robustness(config: PBLReproduction, progress: bool) -> None:
    from vprompt.recipes.pbl import run_robustness_reproduction

    run_robustness_reproduction(config, progress=progress)
    show_results(config.out, f"plot: {config.out / 'tradeoff.png'}")


@dataclass
class ReproduceHGPrompt:
    """HGPrompt vs its baselines: leave-one-task-out prompt transfer (offline: the synthetic suite, zoo ViT)."""

    config: HGPromptReproduction = field(default_factory=HGPromptReproduction)
    backbone: OptionalBackboneArgs = field(default_factory=OptionalBackboneArgs)
    progress: Progress = True

    def run(self) -> None:
        from vprompt.recipes.hgprompt import run_hgprompt_reproduction

        run_hgprompt_reproduction(self.config, self.backbone.spec_or_none(), self.progress)
        show_results(self.config.out, f"weights: {self.config.out / 'weights.png'}")


@dataclass
class ReproduceBaselines:
    """The prompts beside LoRA, BitFit and the probe in one protocol: clean and PGD accuracy, parameters, step time."""

    config: BaselinesReproduction = field(default_factory=BaselinesReproduction)
    backbone: OptionalBackboneArgs = field(default_factory=OptionalBackboneArgs)
    progress: Progress = True

    def run(self) -> None:
        from vprompt.recipes.baselines import run_baselines_reproduction

        run_baselines_reproduction(self.config, self.backbone.spec_or_none(), self.progress)
        show_results(self.config.out, f"costs: {self.config.out / 'costs.json'}")


@dataclass
class ReproduceList:
    """List the paper recipes that `vprompt reproduce` runs."""

    def run(self) -> None:
        for name, what in RECIPES.items():
            print(f"{name:14} {what}")


@dataclass
class Reproduce(Group):
    command: Union[Annotated[ReproduceVAPT, subcommand("vapt")], Annotated[ReproducePBL, subcommand("pbl")],
                   Annotated[ReproduceRobustTokens, subcommand("robust-tokens")],
                   Annotated[ReproduceHGPrompt, subcommand("hgprompt")],
                   Annotated[ReproduceBaselines, subcommand("baselines")], Annotated[ReproduceList, subcommand("list")]]
