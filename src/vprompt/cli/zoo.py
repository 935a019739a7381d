"""`vprompt zoo`: the offline source-model zoo's cards, and building its models."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

from tyro.conf import Positional, subcommand

from vprompt.cli.args import Group, Progress
from vprompt.validation import Validated, Writable


@dataclass
class ZooBuild(Validated):
    """Pretrain zoo models on the fractal source task (standard, then its adversarially trained twin)."""

    names: Positional[list[str]] = field(default_factory=list)
    """Recipes to build, in order (default: all): fractal-resnet fractal-resnet-robust fractal-vit fractal-vit-robust."""
    out: Annotated[Path, Writable()] | None = None
    """Folder for weights and cards (default: the package's zoo folder, so they ship)."""
    work: Annotated[Path, Writable()] = Path("zoo-build")
    """Training checkpoints: an interrupted build continues from here."""
    tiny: bool = False
    """Shrink every recipe to seconds (for trying the pipeline, not for use)."""
    progress: Progress = True

    def run(self) -> None:
        from vprompt.recipes.zoo_build import RECIPES, build, recipe_named
        from vprompt.zoo import PACKAGE_DIR

        for name in self.names or list(RECIPES):
            recipe = recipe_named(name)
            card = build(recipe.tiny() if self.tiny else recipe, self.out or PACKAGE_DIR, self.work / name, self.progress)
            print(f"built zoo:{name}: source {card['source_acc']:.3f}, clean {card['clean_acc']:.3f}, "
                  f"PGD-20 robust {card['robust_acc_pgd20']:.3f} at eps {card['eps'] * 255:.0f}/255, "
                  f"{card['build_seconds']:.0f} s")


@dataclass
class ZooList:
    """Print the zoo's model cards."""

    json: bool = False
    """Print the cards as JSON."""

    def run(self) -> None:
        from vprompt.report import zoo_lines
        from vprompt.zoo import list_cards

        cards = list_cards()
        print(json.dumps(cards, indent=2) if self.json else "\n".join(zoo_lines(cards)))


@dataclass
class Zoo(Group):
    command: Union[Annotated[ZooList, subcommand("list")], Annotated[ZooBuild, subcommand("build")]]
