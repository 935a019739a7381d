"""Robustness: PGD and AutoAttack, clean/robust reports on the same images, and the adversarial-training step."""

from vprompt.robust.adversarial import AdversarialConfig, adversarial_examples, ramped_eps
from vprompt.robust.attacks import ThreatModel, pgd, robust_accuracy
from vprompt.robust.autoattack import AutoAttackPlan, autoattack
from vprompt.robust.evaluation import AttackConfig, attack_report, parse_eps

__all__ = ["AdversarialConfig", "AttackConfig", "AutoAttackPlan", "ThreatModel", "adversarial_examples",
           "attack_report", "autoattack", "parse_eps", "pgd", "ramped_eps", "robust_accuracy"]
