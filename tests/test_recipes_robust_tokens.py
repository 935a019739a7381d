"""`reproduce robust-tokens` end to end on two tiny random-init ViTs as stand-in sources: every token
method and VP in one grid, the answers stated per method, and the same resumable run folders as
`reproduce pbl`."""

import dataclasses
import json

import pytest

from conftest import tiny_vit_spec
from report_numbers import check_robustness_report
from vprompt.errors import ConfigError
from vprompt.model import load_prompt
from vprompt.recipes.robust_tokens import RobustTokensReproduction
from vprompt.recipes.pbl import run_robustness_reproduction

pytestmark = pytest.mark.slow  # end to end: a whole recipe

METHODS = ["linear", "vpt-deep", "vapt", "vp"]


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust-tokens")
    sources = {kind: tiny_vit_spec(img_size=32, patch_size=8, num_classes=20) for kind in ("standard", "robust")}
    sources["robust"].init_seed = 1
    config = RobustTokensReproduction(out=out, tasks=["digits"], seeds=[0, 1], methods=METHODS, epochs=1,
                                      prompt_len=2, attack_images=6, pgd_steps=3, eps="1/2", records=out / "records")
    rows = run_robustness_reproduction(config, sources, progress=False)
    return config, sources, rows


def test_every_token_method_is_trained_and_attacked(reproduction):
    config, _, rows = reproduction
    assert len(rows) == 2 * len(METHODS) * 2
    assert {(r["source_kind"], r["method"]) for r in rows} == {(k, m) for k in ("standard", "robust") for m in METHODS}
    for row in rows:
        assert 0 <= row["robust_acc_aa"] <= row["clean_acc_attacked"] <= 1
        assert 0 <= row["robust_acc_pgd"] <= row["clean_acc_attacked"]
        assert row["attacked_images"] == 6
    for method in METHODS:  # each row's run trained the method it is named after
        run = next(r for r in rows if r["method"] == method)
        assert load_prompt(config.out / run["prompt"]).method.name == method


def test_the_answers_name_each_method_and_vapt_against_vpt_deep(reproduction):
    config, _, rows = reproduction
    table = (config.out / "results.md").read_text()
    for label in ("the linear head", "VPT-deep", "VAPT", "VP"):
        assert f"Inherited robustness: {label}'s AutoAttack" in table
    assert "(3) vapt on the robust source" in table and "against vpt-deep" in table
    assert "base_lr 0.1 for linear, vpt-deep; base_lr 0.02 for vapt; base_lr 0.2 for vp" in table
    # each answer's figures, the AutoAttack ≤ PGD line and both tables are what the rows give
    check_robustness_report(table, rows, labels={"linear": "the linear head", "vpt-deep": "VPT-deep", "vapt": "VAPT",
                                                 "vp": "VP"},
                            comparisons=[("3", "vpt-deep", ["vapt"]), ("PBL", "vp", [])])
    assert json.loads((config.out / "results.json").read_text()) == rows
    assert (config.out / "tradeoff.png").stat().st_size > 1000
    assert sorted(p.name for p in (config.out / "prompts").glob("*.png")) == [
        "robust_vp_digits.png", "standard_vp_digits.png"]  # pictures of pixel prompts only


def test_a_rerun_elsewhere_given_every_record_trains_nothing_and_writes_the_same_table(reproduction, tmp_path):
    config, sources, rows = reproduction  # as on another machine: the records, not the run folders
    again = dataclasses.replace(config, out=tmp_path / "again")
    assert run_robustness_reproduction(again, sources, progress=False) == rows
    assert (again.out / "results.md").read_text() == (config.out / "results.md").read_text()
    assert not list(again.out.rglob("metrics.json"))


def test_defaults_are_the_zoo_vits_and_token_methods_are_refused_by_pbl(tmp_path):
    from vprompt.recipes.pbl import PBLReproduction

    sources = RobustTokensReproduction(out=tmp_path).sources()
    assert (sources["standard"].name, sources["robust"].name) == ("zoo:fractal-vit", "zoo:fractal-vit-robust")
    with pytest.raises(ConfigError, match="unknown: vapt"):
        PBLReproduction(out=tmp_path, methods=["vp", "vapt"])
