"""A FractalDB-style procedural source task for pretraining the offline model zoo.

Formula-driven pretraining (Kataoka et al., 2020): each class is an iterated function system (IFS)
of 2 to 4 random contractive affine maps, and its images are renders of the IFS attractor under
random rotation, scale, shift, flip, background and noise. The zoo's source models learn shape
and self-similarity here, which is a different kind of task from the downstream synthetic suite
(``vprompt.data.synthetic``: objects, textures, digits, cells, sprites, counting), so transfer
to that suite measures transfer and not a rerun of the source task.

Nothing is stored: item ``i`` of ``FractalSource`` is rendered from a generator seeded by
``(seed, i)``, so it is the same image in every process, DataLoader worker and run, and a dataset
of any size costs no disk. Classes are sampled from their own stream of ``seed``.

Colour (``colour=``): a random palette in every image ("random") teaches features to ignore
colour, which later failed downstream colour tasks; a fixed hue per class ("class") makes colour a
shortcut that hurts the shape features. The default "mixed" paints half the images in the class
hue and the rest in random colours, so colour is informative but never sufficient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from vprompt.errors import ConfigError

COLOUR_MODES = ("random", "class", "mixed")
CLASS_COLOUR_FRACTION = 0.5  # share of "mixed" images painted in their class hue
MIN_SIZE = 16
MIN_COVERAGE = 0.08  # attractors filling less of their test render are lines, points or dust

_MAPS_PER_CLASS = (2, 4)
_SINGULAR_VALUES = (0.2, 0.85)  # < 1: every map contracts, so the attractor exists and is bounded
_TEST_SIZE, _TEST_POINTS = 32, 2048
_CHAINS, _BURN_IN = 128, 4
_MARGIN = 1.1  # the test points may miss the attractor's farthest tips
_HUE_JITTER = 0.02
_CLASS_STREAM, _ITEM_STREAM = 0, 1
_GOLDEN = (5**0.5 - 1) / 2


@dataclass(frozen=True)
class FractalClass:
    """One class: an IFS normalised so that its attractor fits the unit disk, and its hue.

    ``maps`` is (n_maps, 2, 3): map ``k`` sends ``p`` to ``maps[k, :, :2] @ p + maps[k, :, 2]``.
    ``probs`` (n_maps,) are the chaos-game probabilities, proportional to ``|det|`` so every part
    of the attractor gets points in proportion to its area. ``hue`` in [0, 1) is the class colour.
    """

    maps: np.ndarray
    probs: np.ndarray
    hue: float


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int of at least {minimum}, got {value!r}")
    return value


def _check_colour(colour: object) -> str:
    if colour not in COLOUR_MODES:
        raise ConfigError(f"colour must be one of {', '.join(COLOUR_MODES)}; got {colour!r}")
    return str(colour)


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _random_ifs(rng: np.random.Generator) -> np.ndarray:
    """Random maps with linear part ``R(a) diag(s1, ±s2) R(b)``: choosing the singular values
    (instead of raw entries, as FractalDB does, then filtering) makes every map contractive and
    none so thin that its part of the attractor vanishes."""
    n = int(rng.integers(_MAPS_PER_CLASS[0], _MAPS_PER_CLASS[1] + 1))
    maps = np.empty((n, 2, 3))
    for k in range(n):
        s1, s2 = rng.uniform(*_SINGULAR_VALUES, 2)
        scale = np.diag([s1, s2 * rng.choice([-1.0, 1.0])])
        maps[k, :, :2] = _rotation(rng.uniform(0, 2 * np.pi)) @ scale @ _rotation(rng.uniform(0, 2 * np.pi))
        maps[k, :, 2] = rng.uniform(-1, 1, 2)
    return maps


def _probs(maps: np.ndarray) -> np.ndarray:
    area = np.abs(np.linalg.det(maps[:, :, :2]))
    return area / area.sum()


def _chaos_game(
    maps: np.ndarray, probs: np.ndarray, rng: np.random.Generator, points: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``points`` points ``(x, y)`` of the attractor and the map that placed each one.

    Vectorised over ``_CHAINS`` chains. Each chain starts at the fixed point of a map, which lies
    on the attractor, so every point is exact and the short burn-in only spreads the chains apart.
    """
    steps = -(-points // _CHAINS) + _BURN_IN
    which = rng.choice(len(probs), size=(steps, _CHAINS), p=probs)
    fixed = np.linalg.solve(np.eye(2) - maps[:, :, :2], maps[:, :, 2:])[:, :, 0]
    x, y = fixed[which[0]].T
    (a, b, e), (c, d, f) = maps[:, 0].T, maps[:, 1].T
    xs, ys = np.empty((steps, _CHAINS)), np.empty((steps, _CHAINS))
    for k, i in enumerate(which):
        x, y = a[i] * x + b[i] * y + e[i], c[i] * x + d[i] * y + f[i]
        xs[k], ys[k] = x, y
    keep = slice(_BURN_IN * _CHAINS, _BURN_IN * _CHAINS + points)
    return xs.ravel()[keep], ys.ravel()[keep], which.ravel()[keep]


def _pixels(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices of points in the [-1, 1]² frame, and which points fall inside it."""
    col = np.floor((x + 1) * (size / 2)).astype(np.int64)
    row = np.floor((1 - y) * (size / 2)).astype(np.int64)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    return (row * size + col)[inside], inside


def _normalised(maps: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """The IFS conjugated by ``p -> (p - c) / r`` so its attractor fits the unit disk (and so any
    rotation keeps it in frame), or None for a degenerate attractor: one collapsing to a point,
    a line or sparse dust covers less than ``MIN_COVERAGE`` of its frame."""
    x, y, _ = _chaos_game(maps, probs, rng, _TEST_POINTS)
    centre = np.array([x.min() + x.max(), y.min() + y.max()]) / 2
    radius = np.hypot(x - centre[0], y - centre[1]).max() * _MARGIN
    if radius < 1e-9:
        return None
    out = maps.copy()  # conjugation keeps the linear parts and moves only the offsets
    out[:, :, 2] = (maps[:, :, :2] @ centre + maps[:, :, 2] - centre) / radius
    flat, _ = _pixels((x - centre[0]) / radius, (y - centre[1]) / radius, _TEST_SIZE)
    coverage = len(np.unique(flat)) / _TEST_SIZE**2
    return out if coverage >= MIN_COVERAGE else None


def sample_classes(num_classes: int, seed: int) -> list[FractalClass]:
    """``num_classes`` non-degenerate IFS classes, the same for the same ``seed``.

    Degenerate draws are rejected and redrawn. Class hues step by the golden ratio from a random
    start, so any number of classes gets hues as far apart as possible.
    """
    _check_int("num_classes", num_classes, 1)
    _check_int("seed", seed, 0)
    rng = np.random.default_rng([seed, _CLASS_STREAM])
    start = rng.random()
    classes: list[FractalClass] = []
    while len(classes) < num_classes:
        maps = _random_ifs(rng)
        probs = _probs(maps)
        normalised = _normalised(maps, probs, rng)
        if normalised is not None:
            classes.append(FractalClass(normalised, probs, float((start + len(classes) * _GOLDEN) % 1)))
    return classes


def _hsv(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV to RGB: arrays (n,) to (n, 3)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v[:, None] * (1 - s[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1))


def _colours(cls: FractalClass, rng: np.random.Generator, colour: str) -> tuple[np.ndarray, np.ndarray]:
    """A background colour and one colour per map (so self-similar parts are told apart by colour).

    The background is greyish and the figure saturated, at a contrasting brightness, so the
    figure's hue is the image's dominant hue.
    """
    n = len(cls.probs)
    in_class = colour == "class" or (colour == "mixed" and rng.random() < CLASS_COLOUR_FRACTION)
    hue = cls.hue + rng.normal(0, _HUE_JITTER, n) if in_class else rng.random(n)
    light = rng.uniform(0, 1)
    background = _hsv(rng.random(1), rng.uniform(0, 0.3, 1), np.array([light]))[0]
    value = rng.uniform(0.1, 0.4, n) if light > 0.5 else rng.uniform(0.65, 1, n)
    return background, _hsv(hue, rng.uniform(0.6, 1, n), value)


def render(
    cls: FractalClass, rng: np.random.Generator, size: int = 64, points: int = 4096, colour: str = "mixed"
) -> np.ndarray:
    """One augmented image of ``cls``: (size, size, 3) float32 in [0, 1].

    The attractor is drawn by the chaos game, randomly rotated, flipped, scaled and shifted
    (always staying in frame), and shaded by point density over a flat background, plus a little
    pixel noise so no class is identifiable from exact pixel values.
    """
    _check_int("size", size, MIN_SIZE)
    _check_int("points", points, 1)
    colour = _check_colour(colour)
    x, y, which = _chaos_game(cls.maps, cls.probs, rng, points)
    scale = rng.uniform(0.55, 0.95)
    linear = scale * _rotation(rng.uniform(0, 2 * np.pi)) @ np.diag([rng.choice([-1.0, 1.0]), 1.0])
    shift = rng.uniform(-1, 1, 2) * (1 - scale)
    flat, inside = _pixels(
        linear[0, 0] * x + linear[0, 1] * y + shift[0], linear[1, 0] * x + linear[1, 1] * y + shift[1], size
    )
    background, palette = _colours(cls, rng, colour)
    count = np.bincount(flat, minlength=size * size)
    paint = palette[which[inside]]
    total = np.stack([np.bincount(flat, paint[:, ch], size * size) for ch in range(3)], axis=1)
    occupied = count > 0
    alpha = 1 - np.exp(-2 * count / count[occupied].mean())
    figure = total / np.maximum(count, 1)[:, None]
    image = background + (figure - background) * alpha[:, None]
    image += rng.normal(0, rng.uniform(0, 0.04), image.shape)
    return np.clip(image, 0, 1).astype(np.float32).reshape(size, size, 3)


class FractalSource(Dataset):
    """The fractal source task as a map-style dataset of ``(image (3, size, size) in [0, 1], label)``.

    Item ``i`` has label ``i % num_classes`` (so every prefix is class-balanced) and is rendered
    from ``(seed, i)`` alone: identical in every worker and run, regenerated instead of stored.
    The default 1,000 images per class follows FractalDB-1k.
    """

    def __init__(
        self,
        num_classes: int = 100,
        images_per_class: int = 1000,
        size: int = 64,
        seed: int = 0,
        colour: str = "mixed",
    ) -> None:
        self.images_per_class = _check_int("images_per_class", images_per_class, 1)
        self.size = _check_int("size", size, MIN_SIZE)
        self.seed = _check_int("seed", seed, 0)
        self.colour = _check_colour(colour)
        self.classes = sample_classes(num_classes, seed)
        self.class_names = [f"fractal {k}" for k in range(num_classes)]

    def __len__(self) -> int:
        return len(self.classes) * self.images_per_class

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        label = index % len(self.classes)
        rng = np.random.default_rng([self.seed, _ITEM_STREAM, index])
        image = render(self.classes[label], rng, self.size, colour=self.colour)
        return torch.from_numpy(image.transpose(2, 0, 1).copy()), label
