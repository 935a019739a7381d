"""AutoAttack through pyautoattack: adapted to few classes, strong, inside the ball, and reported
beside clean and PGD accuracy on the same images."""

from __future__ import annotations

import pytest
from torch.utils.data import TensorDataset

from test_robust_attacks import linear_model, toy_task, train
from vprompt.errors import ConfigError
from vprompt.robust import ThreatModel
from vprompt.robust.autoattack import AutoAttackPlan, autoattack
from vprompt.robust.evaluation import AttackConfig, attack_report, parse_eps


@pytest.fixture(scope="module")
def standard():
    return train(linear_model(), *toy_task(256, 0))


def test_the_plan_adapts_the_standard_attacks_to_few_classes():
    assert AutoAttackPlan.for_classes(100) == AutoAttackPlan(("apgd-ce", "apgd-t", "fab-t", "square"), 9)
    assert AutoAttackPlan.for_classes(5).target_classes == 4
    assert AutoAttackPlan.for_classes(3) == AutoAttackPlan(("apgd-ce", "fab-t", "square"), 2)
    assert "1 target" in AutoAttackPlan.for_classes(2).describe()
    with pytest.raises(ConfigError, match="at least 2 classes"):
        AutoAttackPlan.for_classes(1)


@pytest.mark.parametrize("norm, eps", [("linf", 0.25), ("l2", 3.0)])
def test_autoattack_breaks_an_undefended_model_inside_the_ball(standard, norm, eps):
    images, labels = toy_task(64, 1)
    assert (standard(images).argmax(1) == labels).float().mean() > 0.95
    adversarial, plan = autoattack(standard, images, labels, ThreatModel(norm, eps), num_classes=2)
    assert plan.attacks == ("apgd-ce", "fab-t", "square")
    assert (standard(adversarial).argmax(1) == labels).float().mean() < 0.05
    delta = (adversarial - images).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-5
    assert adversarial.min() >= 0 and adversarial.max() <= 1


@pytest.mark.slow  # end to end: AutoAttack on a trained prompt
def test_report_gives_clean_pgd_and_autoattack_on_the_same_images(standard):
    images, labels = toy_task(80, 1)
    config = AttackConfig(attack="both", eps="1/20", steps=10, images=50)
    report = attack_report(standard, TensorDataset(images, labels), 2, config)
    assert report["n"] == 50 and report["eps"] == 0.05 and report["norm"] == "linf"
    assert 0 < report["robust_acc_aa"] <= report["robust_acc_pgd"] < report["clean_acc"]
    assert report["attack_pgd"] == "pgd-10, 1 restart(s)" and report["attack_aa"].startswith("autoattack-standard")
    only_pgd = attack_report(standard, TensorDataset(images, labels), 2, AttackConfig(attack="pgd", eps="0.01"))
    assert "robust_acc_aa" not in only_pgd and only_pgd["n"] == 80


def test_eps_reads_fractions_and_refuses_nonsense():
    assert parse_eps("8/255") == 8 / 255 and parse_eps("0.5") == 0.5
    with pytest.raises(ConfigError, match="fraction"):
        parse_eps("eight")
    with pytest.raises(ConfigError, match="attack must be"):
        AttackConfig(attack="cw")
