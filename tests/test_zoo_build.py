"""Zoo builds, shrunk to seconds: cards, exported classifiers, robust twins, `zoo:NAME` loading."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from vprompt.backbones import BackboneSpec, create_backbone, data_config
from vprompt.errors import ConfigError
from vprompt.recipes.zoo_build import RECIPES, build
from vprompt.zoo import find_card

pytestmark = pytest.mark.slow  # end to end: zoo builds


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "not-yet-there"
    cards = {name: build(RECIPES[name].tiny(), out, out / "work" / name, progress=False)  # saved as NAME-tiny
             for name in ("fractal-resnet", "fractal-resnet-robust", "fractal-vit")}
    return out, cards


def test_cards_record_recipe_scores_and_build_time(zoo):
    _, cards = zoo
    robust = cards["fractal-resnet-robust"]
    assert robust["name"] == "fractal-resnet-robust-tiny" and robust["parent"] == "fractal-resnet-tiny"
    assert robust["variant"] == "robust"
    assert robust["adversarial"]["threat"] == {"norm": "linf", "eps": pytest.approx(8 / 255)}
    for card in cards.values():
        assert 0 <= card["robust_acc_pgd20"] <= card["clean_acc"] <= 1
        assert card["num_classes"] == 4 and card["input_size"] == [16, 16] and card["build_seconds"] > 0
        assert card["source_task"]["generator"] == "vprompt.data.fractal.FractalSource"


def test_exported_classifier_scores_the_cards_source_accuracy(zoo, monkeypatch):
    out, cards = zoo
    monkeypatch.setenv("VPROMPT_ZOO_PATH", str(out))
    from vprompt.recipes.zoo_build import RECIPES as recipes

    for name in ("fractal-resnet", "fractal-vit"):
        backbone = create_backbone(BackboneSpec(f"zoo:{name}-tiny")).eval()
        config = data_config(backbone)
        assert config.input_size == (16, 16)
        _, test_set = recipes[name].tiny().source.splits()
        images = torch.stack([test_set[i][0] for i in range(len(test_set))])
        labels = torch.tensor([test_set[i][1] for i in range(len(test_set))])
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (config.mean, config.std))
        with torch.no_grad():
            accuracy = (backbone((images - mean) / std).argmax(1) == labels).float().mean().item()
        assert accuracy == pytest.approx(cards[name]["source_acc"])
        assert find_card(f"{name}-tiny")["arch"] == recipes[name].arch
        assert all(t.dtype == torch.float16 for t in load_file(find_card(f"{name}-tiny")["weights"]).values()
                   if t.is_floating_point())


def test_a_robust_recipe_needs_its_parent(tmp_path):
    with pytest.raises(ConfigError, match="fine-tunes fractal-vit-tiny: build that first"):
        build(RECIPES["fractal-vit-robust"].tiny(), tmp_path, tmp_path / "work", progress=False)
