"""A method is one registration: everything else (the matrix, the sweep's prompt-length search,
the CLI, the trainer's epoch hook, the model builder's checks) reads what the method declares."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import vprompt
from conftest import TINY_VIT, tiny_vit_spec
from vprompt import methods
from vprompt.backbones import create_backbone
from vprompt.cli_reference import help_text
from vprompt.errors import ConfigError
from vprompt.families import TokenLayout
from vprompt.families.matrix import ROWS, check, matrix
from vprompt.methods import LinearHeadConfig, Method, make_config, method_names, register_method
from vprompt.model import PromptedModel, create_model, parameter_report
from vprompt.prompts import TokenPrompt
from vprompt.sweep import Protocol, grid_points
from vprompt.train import TrainConfig, train

TOY = "toy-tokens"


@dataclass
class ToyConfig(LinearHeadConfig):
    prompt_len: int = 1


class ToyPrompt(TokenPrompt):
    """Free tokens at block 0 only: the least a token method can be."""

    def __init__(self, layout: TokenLayout, config: ToyConfig) -> None:
        super().__init__(config.prompt_len, layout)
        self.tokens = nn.Parameter(torch.zeros(config.prompt_len, layout.block_dims[0]))

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        return self.tokens.expand(batch_size, -1, -1)


def build_toy(config: ToyConfig, layout: TokenLayout) -> ToyPrompt:
    return ToyPrompt(layout, config)


def one_grid_only(layout: TokenLayout) -> str | None:
    return None if layout.fixed_grid else "the toy wants one patch grid"


EPOCHS_STARTED: list[int] = []


def record_epoch(model: nn.Module, dataset, epoch: int, seed: int) -> None:
    EPOCHS_STARTED.append(epoch)


@pytest.fixture
def toy():
    method = register_method(Method(TOY, ToyConfig, build_toy, layout_refusal=one_grid_only, epoch_start=record_epoch,
                                    summary="a toy token method"))
    EPOCHS_STARTED.clear()
    yield method
    del methods._REGISTRY[TOY]


def test_a_registered_method_gets_a_column_of_the_matrix_where_its_layout_allows(toy):
    rows = {row["family"]: row["methods"] for row in matrix()}
    assert TOY in rows["ViT (AugReg, original)"] and TOY in rows["EVA-02"] and TOY in rows["BEiT"]
    assert TOY not in rows["Swin"]  # its layout refusal: stages merge patches
    assert TOY not in rows["ResNet"]  # no token family
    vit = next(row for row in ROWS if row.family == "ViT (AugReg, original)")
    swin = next(row for row in ROWS if row.family == "Swin")
    assert check(vit, rows[vit.family])[TOY] == "ok"
    assert check(swin, rows[swin.family])[TOY] == "refused: method 'toy-tokens' does not run on SwinTransformer: " \
                                                  "the toy wants one patch grid"


def test_a_registered_method_with_a_prompt_length_gets_the_sweeps_length_search(toy):
    protocol = Protocol(base_lrs=[0.1], weight_decays=[0.0], prompt_lens=[1, 4])
    assert [point[2] for point in grid_points(TOY, {}, protocol)] == [{"prompt_len": 1}, {"prompt_len": 4}]
    assert [point[2] for point in grid_points("linear", {}, protocol)] == [{}]


def test_a_registered_method_is_listed_and_accepted_by_the_command_line(toy, capsys):
    from test_cli import MODEL, run_cli

    assert f"{TOY}." in " ".join(help_text(("train",), columns=400).split())
    code, out, err = run_cli(capsys, "params", *MODEL, "--method", TOY, "--prompt-len", "3", "--json")
    assert code == 0, err
    assert '"prompt": 96' in out  # 3 tokens × width 32


def test_the_trainer_calls_the_methods_epoch_hook(toy, tmp_path):
    model = create_model(tiny_vit_spec(), TOY, num_classes=2)
    data = [(torch.rand(3, 16, 16), i % 2) for i in range(4)]
    train(model, data, tmp_path / "run", TrainConfig(epochs=2, warmup_epochs=0, batch_size=4), progress=False)
    assert EPOCHS_STARTED == [0, 1]


def test_method_names_are_named_only_by_the_methods_and_the_recipes():
    """Any module but those that register methods (prompts/, methods.py, tuners.py) and recipes/
    asks the method what it is instead of comparing its name; a string equal to a method name
    elsewhere is a list kept by hand."""
    package = Path(vprompt.__file__).parent
    allowed = {package / "methods.py", package / "tuners.py"}
    # Same words, other things: a label-mapping rule, and the `reproduce vapt` recipe's command name.
    other_meaning = {(package / "heads.py", "linear"), (package / "cli" / "reproduce.py", "vapt")}
    names = set(method_names())
    found = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).parts
        if path in allowed or relative[0] in ("prompts", "recipes"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names and (path, node.value) not in other_meaning:
                found.append(f"{path.relative_to(package)}:{node.lineno} {node.value!r}")
    assert found == []


def test_a_config_of_another_method_is_refused_by_the_model():
    backbone = create_backbone(tiny_vit_spec())
    with pytest.raises(ConfigError, match="method 'vpt-deep' takes a VPTConfig, not a VAPTConfig"):
        PromptedModel(backbone, tiny_vit_spec(), "vpt-deep", make_config("vapt"), num_classes=3)
    with pytest.raises(ConfigError, match="takes a LinearHeadConfig, not a VPTConfig"):
        PromptedModel(backbone, tiny_vit_spec(), "linear", make_config("vpt-shallow"), num_classes=3)


def test_a_wrong_number_of_class_names_is_a_config_error():
    with pytest.raises(ConfigError, match="2 class names for 3 classes"):
        create_model(tiny_vit_spec(), "linear", num_classes=3, class_names=["a", "b"])


def test_the_toy_prompt_is_counted_as_a_prompt(toy):
    model = create_model(tiny_vit_spec(), TOY, num_classes=2, prompt_len=5)
    assert parameter_report(model).prompt == 5 * TINY_VIT["embed_dim"]


def test_transfer_asks_the_shared_prompt_protocol_what_to_mix():
    from vprompt.prompts import SharedPrompt
    from test_families import FAMILY_SPECS

    vpt = create_model(tiny_vit_spec(), "vpt-deep", num_classes=2, prompt_len=2)
    assert isinstance(vpt.token_prompt, SharedPrompt)
    assert vpt.shared_prompt_key() == "token_prompt.prompts" and "token_prompt.prompts" in vpt.trainable_state()
    assert vpt.shared_prompt().shared_prompts() is vpt.token_prompt.prompts
    for refused in (create_model(tiny_vit_spec(), "vapt", num_classes=2),
                    create_model(FAMILY_SPECS["swin"], "vpt-deep", num_classes=2, prompt_len=2)):
        with pytest.raises(ConfigError, match="multi-source transfer needs a prompt of one shared tensor"):
            refused.shared_prompt()
