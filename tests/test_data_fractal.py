"""The fractal source task: determinism, shapes, non-degenerate and distinguishable classes, colour modes."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from vprompt.data.fractal import (
    MIN_COVERAGE,
    FractalClass,
    FractalSource,
    _chaos_game,
    _pixels,
    render,
    sample_classes,
)
from vprompt.errors import ConfigError


@pytest.fixture(scope="module")
def classes() -> list[FractalClass]:
    return sample_classes(50, seed=0)


def test_items_are_deterministic_per_seed_and_index() -> None:
    a, b = FractalSource(num_classes=5, images_per_class=2, size=32), FractalSource(5, 2, 32)
    assert torch.equal(a[7][0], b[7][0]) and a[7][1] == b[7][1] == 2
    assert not torch.equal(a[7][0], a[2][0])  # same class, another image
    other = FractalSource(5, 2, 32, seed=1)
    pairs = zip(a.classes, other.classes, strict=True)
    assert not any(x.maps.shape == y.maps.shape and np.allclose(x.maps, y.maps) for x, y in pairs)


def test_sample_classes_is_deterministic(classes: list[FractalClass]) -> None:
    again = sample_classes(50, seed=0)
    assert all(np.array_equal(x.maps, y.maps) and x.hue == y.hue for x, y in zip(classes, again, strict=True))


def test_shapes_ranges_and_dtypes(classes: list[FractalClass]) -> None:
    ds = FractalSource(num_classes=3, images_per_class=4, size=24)
    image, label = ds[5]
    assert (image.shape, image.dtype, type(label)) == ((3, 24, 24), torch.float32, int)
    assert 0 <= image.min() and image.max() <= 1
    assert len(ds) == 12 and ds.class_names == ["fractal 0", "fractal 1", "fractal 2"]
    with pytest.raises(IndexError):
        ds[12]
    for cls in classes:
        assert cls.maps.shape[1:] == (2, 3) and 2 <= len(cls.maps) <= 4
        assert cls.probs.shape == (len(cls.maps),) and np.isclose(cls.probs.sum(), 1)
        assert np.all(np.linalg.svd(cls.maps[:, :, :2], compute_uv=False) < 1)  # contractive
    out = render(classes[0], np.random.default_rng(0), size=40, points=500)
    assert out.shape == (40, 40, 3) and out.dtype == np.float32


def test_no_class_is_degenerate(classes: list[FractalClass]) -> None:
    for cls in classes:
        x, y, _ = _chaos_game(cls.maps, cls.probs, np.random.default_rng(1), 4096)
        assert np.hypot(x, y).max() <= 1  # normalised to the unit disk
        flat, _ = _pixels(x, y, 32)
        assert len(np.unique(flat)) / 32**2 >= MIN_COVERAGE * 0.9


def _shape_features(image: np.ndarray) -> np.ndarray:
    """Features invariant to the augmentations (shift, scale, rotation, flip, colours): the
    histogram of figure-pixel distances from the figure's centroid in units of their RMS radius,
    the figure's elongation and its density."""
    background = np.median(image.reshape(-1, 3), axis=0)
    rows, cols = np.nonzero(np.abs(image - background).max(axis=2) > 0.15)
    dy, dx = rows - rows.mean(), cols - cols.mean()
    rms = np.sqrt((dx**2 + dy**2).mean())
    radial = np.histogram(np.hypot(dx, dy) / rms, bins=8, range=(0, 2.4))[0] / len(rows)
    eig = np.linalg.eigvalsh(np.cov(np.stack([dx, dy])))
    return np.concatenate([radial, [eig[0] / eig[1], len(rows) / rms**2 / 10]])


def test_classes_are_distinguishable(classes: list[FractalClass]) -> None:
    """A nearest-class-mean classifier on shape features alone (random colours) beats chance."""
    num, shots, rng = 10, 6, np.random.default_rng(0)
    feats = np.array(
        [
            [_shape_features(render(classes[c], rng, 48, colour="random")) for _ in range(2 * shots)]
            for c in range(num)
        ]
    )
    means = feats[:, :shots].mean(axis=1)
    test = feats[:, shots:].reshape(-1, feats.shape[-1])
    predicted = np.linalg.norm(test[:, None] - means[None], axis=2).argmin(axis=1)
    accuracy = (predicted == np.repeat(np.arange(num), shots)).mean()
    assert accuracy >= 0.6  # chance is 0.1


def _figure_hue(image: np.ndarray) -> float:
    """Hue of the mean colour of the pixels farthest from the (median) background colour."""
    pixels = image.reshape(-1, 3)
    far = np.abs(pixels - np.median(pixels, axis=0)).max(axis=1)
    return colorsys.rgb_to_hsv(*pixels[far >= np.quantile(far, 0.95)].mean(axis=0))[0]


def _hue_spread(hues: list[float]) -> float:
    """One minus the mean resultant length of hues on the colour circle: 0 when all agree."""
    return 1 - abs(np.exp(2j * np.pi * np.asarray(hues)).mean())


def test_colour_modes(classes: list[FractalClass]) -> None:
    rng = np.random.default_rng(0)
    for cls in classes[:3]:
        hues = [_figure_hue(render(cls, rng, 32, colour="class")) for _ in range(12)]
        assert _hue_spread(hues) < 0.05
        hues = [_figure_hue(render(cls, rng, 32, colour="random")) for _ in range(12)]
        assert _hue_spread(hues) > 0.3
    hues = np.array([_figure_hue(render(classes[0], rng, 32, colour="mixed")) for _ in range(40)])
    in_class = np.abs((hues - classes[0].hue + 0.5) % 1 - 0.5) < 0.05
    assert 0.25 < in_class.mean() < 0.75  # about CLASS_COLOUR_FRACTION, plus random hues that land close


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0},
        {"images_per_class": -1},
        {"size": 8},
        {"seed": -1},
        {"seed": 1.5},
        {"colour": "rainbow"},
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        FractalSource(**kwargs)


def test_render_rejects_bad_arguments(classes: list[FractalClass]) -> None:
    with pytest.raises(ConfigError, match="points"):
        render(classes[0], np.random.default_rng(0), points=0)
    with pytest.raises(ConfigError, match="colour"):
        render(classes[0], np.random.default_rng(0), colour="grey")
