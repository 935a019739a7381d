"""PGD: the eps-ball and [0, 1] hold, it is strong, restarts only help, the model is left untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_vit_spec
from vprompt.errors import ConfigError
from vprompt.model import create_model
from vprompt.robust import ThreatModel, pgd, robust_accuracy
from vprompt.robust.attacks import perturb

PATTERN = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(123)).sign()


def toy_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes with a weak-but-clean pattern over all pixels (non-robust: ±0.03 per pixel) and
    a strong-but-noisy one in a 2×2 corner (robust: ±0.3), so standard training relies on the
    pattern, which a small eps flips, while adversarial training must learn the corner."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    sign = (2 * labels - 1).float().view(-1, 1, 1, 1)
    images = 0.5 + 0.03 * sign * PATTERN + 0.02 * torch.randn(n, 3, 8, 8, generator=g)
    images[:, 0, :2, :2] += 0.3 * sign[:, :, 0] + 0.1 * torch.randn(n, 2, 2, generator=g)
    return images.clamp(0, 1), labels


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int = 100, attack=None) -> nn.Module:
    """A few Adam steps on random mini-batches; ``attack(model, x, y, step)`` makes training inputs."""
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(labels), (64,), generator=g)
        x, y = images[idx], labels[idx]
        if attack is not None:
            x = attack(model, x, y, step, g)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def standard() -> nn.Module:
    return train(linear_model(), *toy_task(256, 0))


@pytest.fixture
def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    return toy_task(128, 1)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def assert_in_ball(adv: torch.Tensor, images: torch.Tensor, threat: ThreatModel) -> None:
    delta = adv - images
    if threat.norm == "linf":
        assert delta.abs().max() <= threat.eps + 1e-6
    else:
        assert delta.flatten(1).norm(dim=1).max() <= threat.eps + 1e-5
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("threat", [ThreatModel("linf", 0.25), ThreatModel("l2", 3.0)])
def test_large_eps_pgd_breaks_undefended_model(standard, held_out, threat):
    images, labels = held_out
    assert accuracy(standard, images, labels) > 0.95
    adv = pgd(standard, images, labels, threat, steps=10, generator=torch.Generator().manual_seed(0))
    assert accuracy(standard, adv, labels) < 0.02
    assert_in_ball(adv, images, threat)


@pytest.mark.parametrize("threat", [ThreatModel("linf", 0.1), ThreatModel("l2", 0.5), ThreatModel("l2", 50.0)])
def test_perturbation_stays_in_ball_and_box(threat):
    """Images at the box edges make the [0, 1] clip bite; a huge ℓ2 eps makes only the box bind."""
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)).round()
    labels = torch.arange(8) % 2
    adv = pgd(linear_model(), images, labels, threat, steps=5, restarts=2, generator=torch.Generator().manual_seed(1))
    assert_in_ball(adv, images, threat)


def test_pgd_at_least_as_strong_as_fgsm_and_noise():
    """On an untrained ViT the loss is not linear in the input, so PGD has room to beat one step."""
    model = create_model(tiny_vit_spec(), "linear", 2).eval()
    images = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = model(images).argmax(1).detach()
    threat = ThreatModel("linf", 2 / 255)
    g = torch.Generator().manual_seed(0)
    noise = pgd(model, images, labels, threat, steps=0, generator=g)
    fgsm = perturb(model, images, labels, threat, steps=1, step_size=threat.eps, random_start=False)
    strong = pgd(model, images, labels, threat, steps=10, generator=g)

    def loss(x: torch.Tensor) -> float:
        with torch.no_grad():
            return F.cross_entropy(model(x), labels).item()

    assert loss(strong) >= loss(fgsm) - 1e-6 and loss(strong) > loss(noise)
    assert accuracy(model, strong, labels) <= min(accuracy(model, fgsm, labels), accuracy(model, noise, labels))


def test_eps_zero_returns_clean_images(standard, held_out):
    images, labels = held_out
    assert torch.equal(pgd(standard, images, labels, ThreatModel("linf", 0.0)), images)
    assert torch.equal(pgd(standard, images, labels, ThreatModel("l2", 0.0)), images)


@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.3)])
def test_restarts_never_weaken(standard, held_out, norm, eps):
    images, labels = held_out
    threat = ThreatModel(norm, eps)
    one = pgd(standard, images, labels, threat, steps=3, generator=torch.Generator().manual_seed(0))
    many = pgd(standard, images, labels, threat, steps=3, restarts=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        wrong_one, wrong_many = standard(one).argmax(1) != labels, standard(many).argmax(1) != labels
        loss_one = F.cross_entropy(standard(one), labels, reduction="none")
        loss_many = F.cross_entropy(standard(many), labels, reduction="none")
    assert (wrong_many | ~wrong_one).all()  # no sample broken by one restart survives four
    same = wrong_one == wrong_many
    assert (loss_many[same] >= loss_one[same] - 1e-6).all()


def test_no_parameter_gradients_and_modes_restored(images):
    """A prompted ViT: frozen backbone (kept in eval by PromptedModel.train) and a trainable head."""
    model = create_model(tiny_vit_spec(), "linear", 3).train()
    modes = {name: m.training for name, m in model.named_modules()}
    labels = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():  # the attack turns grad mode back on for itself
        adv = pgd(model, images, labels, ThreatModel("l2", 0.5), steps=2)
    assert all(p.grad is None for p in model.parameters())
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert model.training and not model.backbone.training
    assert not adv.requires_grad


def test_targeted_attack_reaches_target(standard, held_out):
    images, labels = held_out
    target = 1 - labels
    g = torch.Generator().manual_seed(0)
    adv = pgd(standard, images, target, ThreatModel("linf", 0.25), targeted=True, generator=g)
    assert accuracy(standard, adv, target) > 0.98


def test_robust_accuracy_report(standard, held_out):
    images, labels = held_out
    batches = [(images[:64], labels[:64]), (images[64:], labels[64:])]
    report = robust_accuracy(standard, batches, ThreatModel("linf", 0.25), steps=5)
    assert report["n"] == 128 and report["clean_acc"] > 0.95 and report["robust_acc"] < 0.02
    assert (report["eps"], report["norm"], report["attack"]) == (0.25, "linf", "pgd-5")


def test_user_errors_are_config_errors(standard):
    with pytest.raises(ConfigError, match="norm"):
        ThreatModel("linf2")
    with pytest.raises(ConfigError, match="eps"):
        ThreatModel("linf", -0.1)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        pgd(standard, torch.full((2, 3, 8, 8), 2.0), torch.zeros(2, dtype=torch.long), ThreatModel())
    with pytest.raises(ConfigError, match="empty"):
        robust_accuracy(standard, [], ThreatModel())
