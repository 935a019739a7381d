"""Robustness: PGD attacks and robust accuracy, and the adversarial-training step."""

from vprompt.robust.adversarial import AdversarialConfig, adversarial_examples, ramped_eps
from vprompt.robust.attacks import ThreatModel, pgd, robust_accuracy

__all__ = ["AdversarialConfig", "ThreatModel", "adversarial_examples", "pgd", "ramped_eps", "robust_accuracy"]
