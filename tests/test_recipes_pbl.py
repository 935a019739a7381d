"""`reproduce pbl` end to end on two tiny random-init ViTs as stand-in sources (one epoch, a few images,
a large eps so every attack succeeds at once): rows, files, and a rerun that reads every finished run
back. (Random CNNs predict nearly one class for every input, which no attack can change, and make
AutoAttack run its full budget.)"""

import json
from dataclasses import replace

import pytest

from conftest import tiny_vit_spec
from report_numbers import check_robustness_report
from vprompt.errors import ConfigError
from vprompt.recipes.pbl import ATTACK_FILE, PBLReproduction, run_robustness_reproduction

pytestmark = pytest.mark.slow  # end to end: a whole recipe

REQUIRED = {"source", "method", "task", "seed", "clean_acc", "robust_acc_pgd", "robust_acc_aa"}


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    out = tmp_path_factory.mktemp("pbl")
    sources = {kind: tiny_vit_spec(img_size=32, patch_size=8, num_classes=20) for kind in ("standard", "robust")}
    sources["robust"].init_seed = 1
    config = PBLReproduction(out=out, tasks=["digits"], seeds=[0, 1], methods=["vp", "vp+pbl-output"], epochs=1,
                             output_strength=1.0, attack_images=6, pgd_steps=3, eps="1/2")
    rows = run_robustness_reproduction(config, sources, progress=False)
    return config, sources, rows


def test_rows_cover_every_source_method_task_seed(reproduction):
    config, _, rows = reproduction
    assert len(rows) == 2 * 2 * 1 * 2
    assert {(r["source_kind"], r["method"], r["seed"]) for r in rows} == {
        (k, m, s) for k in ("standard", "robust") for m in config.methods for s in config.seeds}
    for row in rows:
        assert REQUIRED <= row.keys()
        assert 0 <= row["robust_acc_aa"] <= row["clean_acc_attacked"] <= 1
        assert 0 <= row["robust_acc_pgd"] <= row["clean_acc_attacked"]
        assert row["attacked_images"] == 6 and row["eps"] == 0.5
    assert {r["pbl"] for r in rows} == {"none", "output"}


def test_outputs_are_written(reproduction):
    config, _, rows = reproduction
    assert json.loads((config.out / "results.json").read_text()) == rows
    table = (config.out / "results.md").read_text()
    assert "Inherited robustness" in table and "vp+pbl-output" in table and "AutoAttack" in table
    # the figures in the answers, the AutoAttack ≤ PGD line and both tables are what the rows give
    check_robustness_report(table, rows, labels={"vp": "VP"}, comparisons=[("3", "vp", ["vp+pbl-output"])])
    assert (config.out / "tradeoff.png").stat().st_size > 1000
    assert len(list((config.out / "prompts").glob("*.png"))) == 2 * 2  # source × method × task


def test_rerun_reads_finished_runs_back(reproduction):
    config, sources, rows = reproduction
    attack_files = sorted(config.out.glob(f"runs/**/{ATTACK_FILE}"))
    stamps = [p.stat().st_mtime_ns for p in attack_files]
    again = run_robustness_reproduction(config, sources, progress=False)
    assert again == rows
    assert [p.stat().st_mtime_ns for p in attack_files] == stamps


def test_unknown_method_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown: vp\\+pbl-colour"):
        PBLReproduction(out=tmp_path, methods=["vp", "vp+pbl-colour"])


def test_sources_default_to_the_zoo_and_take_local_weights(tmp_path):
    (tmp_path / "resnet50_linf_eps4.0.ckpt").touch()  # read when the backbone is built, not here
    config = PBLReproduction(out=tmp_path, robust="resnet50", robust_weights=tmp_path / "resnet50_linf_eps4.0.ckpt")
    sources = config.sources()
    assert sources["standard"].name == "zoo:fractal-resnet" and sources["standard"].checkpoint is None
    assert (sources["robust"].name, sources["robust"].checkpoint) == ("resnet50", str(tmp_path / "resnet50_linf_eps4.0.ckpt"))


def test_a_rerun_with_another_setting_refuses_to_read_old_runs_back(reproduction):
    config, sources, _ = reproduction
    with pytest.raises(ConfigError, match="holds a run with other settings"):
        run_robustness_reproduction(replace(config, epochs=2), sources, progress=False)
