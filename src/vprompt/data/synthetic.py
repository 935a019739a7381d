"""The offline synthetic suite: small VTAB-like tasks written in the exact VTAB-1k file-list layout.

Tests, the demo and the default benchmarks need data without the network, so this module renders
tasks of the three VTAB groups with numpy and PIL (plus scikit-learn's bundled handwritten digits)
and writes them exactly as a prepared VTAB-1k folder: ``images/<split>/<n>.jpg``, ``train800.txt``
(800), ``val200.txt`` (200), ``train800val200.txt`` (their union), ``test.txt``, ``classes.txt`` and
``task.json``, with ``suite.json`` beside the task folders.

Every task draws from its own ``numpy`` generator seeded by ``(seed, crc32(task name))``, so one
task's files do not depend on which other tasks are written, and the same seed writes
byte-identical files. Geometry is in image-relative units and edges are anti-aliased through
signed distances, so any ``image_size`` renders the same scenes.
"""

from __future__ import annotations

import colorsys
import json
import shutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from vprompt.errors import ConfigError, DataError

from .filelist import CLASSES_FILE, SPLIT_SIZES, SUITE_FILE, TASK_FILE

FORMAT = "vprompt-synthetic"
MIN_IMAGE_SIZE = 16

Render = Callable[[np.random.Generator, int, int], np.ndarray]
Drawn = Iterator[tuple[str, np.ndarray, int]]


# --- drawing primitives: coordinates in [0, 1], anti-aliased through signed distances ---------------


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` in [0, 1], shape (size, size), cached per size."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(centres, centres)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _coverage(distance: np.ndarray, size: int) -> np.ndarray:
    """Pixel coverage of a shape from its signed distance (negative inside): a one-pixel soft edge."""
    return np.clip(0.5 - distance * size, 0.0, 1.0)


def _paint(image: np.ndarray, coverage: np.ndarray, colour: Sequence[float]) -> None:
    """Blend ``colour`` into ``image`` in place, weighted by ``coverage``."""
    image += (np.asarray(colour, dtype=np.float32) - image) * coverage[..., None]


def _local(size: int, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in a frame centred at ``(cx, cy)`` and rotated by ``angle`` (radians)."""
    x, y = _grid(size)
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = x - cx, y - cy
    return c * dx + s * dy, -s * dx + c * dy


def _polygon(u: np.ndarray, v: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Signed distance to a convex polygon (exact inside and along edges, which is all AA needs)."""
    pts = np.asarray(vertices, dtype=np.float32)
    centre = pts.mean(axis=0)
    distance = np.full(u.shape, -np.inf, dtype=np.float32)
    for a, b in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        normal = np.array([b[1] - a[1], a[0] - b[0]], dtype=np.float32)
        normal /= np.linalg.norm(normal)
        if normal @ (centre - a) > 0:
            normal = -normal
        distance = np.maximum(distance, (u - a[0]) * normal[0] + (v - a[1]) * normal[1])
    return distance


def _ellipse(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse with semi-axes ``a``, ``b``."""
    return (np.hypot(u / a, v / b) - 1.0) * min(a, b)


# Unit shapes (radius about 1) in local coordinates, each a union of convex polygons.
_POLYGONS: dict[str, list[list[tuple[float, float]]]] = {
    "square": [[(-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78)]],
    "triangle": [[(0.0, -1.0), (0.87, 0.5), (-0.87, 0.5)]],
    "wedge": [[(1.0, 0.0), (-0.7, -0.5), (-0.7, 0.5)]],
    "arrow": [
        [(1.0, 0.0), (0.15, -0.55), (0.15, 0.55)],
        [(0.2, -0.17), (0.2, 0.17), (-1.0, 0.17), (-1.0, -0.17)],
    ],
    "ell": [
        [(-0.9, -0.9), (-0.4, -0.9), (-0.4, 0.9), (-0.9, 0.9)],
        [(-0.9, 0.4), (0.9, 0.4), (0.9, 0.9), (-0.9, 0.9)],
    ],
}
_ASYMMETRIC = ("wedge", "arrow", "ell")  # no rotational symmetry: orientation is defined over a full turn


def _shape(size: int, kind: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Signed distance to a disk or to one of the polygon shapes, placed and rotated."""
    u, v = _local(size, cx, cy, angle)
    u, v = u / radius, v / radius
    if kind == "disk":
        unit = np.hypot(u, v) - 1.0
    else:
        unit = np.minimum.reduce([_polygon(u, v, part) for part in _POLYGONS[kind]])
    return unit * radius


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field in [0, 1] with about ``cells`` blobs across the image."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    return np.clip(field, 0.0, 1.0)


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, s, v)


def _canvas(size: int, colour: Sequence[float]) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, dtype=np.float32), (size, size, 3)).copy()


def _grain(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Sensor-like pixel noise, so no class is identifiable from exact pixel values."""
    return image + rng.normal(0.0, sigma, image.shape).astype(np.float32)


# --- the tasks ---------------------------------------------------------------------------------------

_COLOURS = {"red": 0.0, "green": 1 / 3, "blue": 2 / 3}
_OBJECTS = ("disk", "square", "triangle")


def _render_objects(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """A coloured object on a cluttered background; class = shape × colour.

    The clutter uses the same shapes in washed-out colours, so neither shape nor colour alone
    finds the object.
    """
    kind, hue = _OBJECTS[label // len(_COLOURS)], list(_COLOURS.values())[label % len(_COLOURS)]
    low, high = (_hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.3, 0.9)) for _ in range(2))
    mix = _smooth_noise(rng, size, 3)[..., None]
    image = np.asarray(low, np.float32) * (1 - mix) + np.asarray(high, np.float32) * mix
    for _ in range(rng.integers(3, 7)):
        clutter = _shape(
            size, str(rng.choice(_OBJECTS)), *rng.random(2), rng.uniform(0.08, 0.2), rng.uniform(0, 2 * np.pi)
        )
        _paint(image, _coverage(clutter, size), _hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.2, 1)))
    radius = rng.uniform(0.18, 0.3)
    cx, cy = rng.uniform(radius, 1 - radius, 2)
    colour = _hsv(hue + rng.normal(0, 0.025), rng.uniform(0.6, 1), rng.uniform(0.5, 1))
    _paint(image, _coverage(_shape(size, kind, cx, cy, radius, rng.uniform(0, 2 * np.pi)), size), colour)
    return _grain(rng, image, 0.03)


_TEXTURES = ("stripes", "checks", "dots", "rings", "waves", "grid", "blotches")


def _render_texture(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """A two-colour texture at a random scale, orientation, phase, sharpness and palette."""
    kind = _TEXTURES[label]
    period = rng.uniform(0.15, 0.3)
    k = 2 * np.pi / period
    u, v = _local(size, *rng.random(2), rng.uniform(0, np.pi))
    if kind == "stripes":
        field = np.sin(k * u)
    elif kind == "checks":
        field = np.sin(k * u) * np.sin(k * v) * 2
    elif kind == "dots":
        field = 1 - np.hypot((u / period) % 1 - 0.5, (v / period) % 1 - 0.5) / rng.uniform(0.18, 0.3)
    elif kind == "rings":
        field = np.sin(k * np.hypot(u, v))
    elif kind == "waves":
        field = np.sin(k * u + rng.uniform(1.5, 3) * np.sin(2 * np.pi * v / rng.uniform(0.3, 0.6)))
    elif kind == "grid":
        gap = np.minimum(np.abs((u / period) % 1 - 0.5), np.abs((v / period) % 1 - 0.5))
        field = 1 - gap / rng.uniform(0.08, 0.16)
    else:  # blotches
        field = (_smooth_noise(rng, size, int(rng.integers(3, 6))) - 0.5) * 6
    mask = np.clip(0.5 + field * rng.uniform(0.7, 3), 0, 1)[..., None]
    hue, value = rng.random(), rng.uniform(0.1, 0.45)
    dark = np.asarray(_hsv(hue, rng.uniform(0, 1), value), np.float32)
    light = np.asarray(
        _hsv(hue + rng.uniform(-0.3, 0.3), rng.uniform(0, 1), value + rng.uniform(0.3, 0.55)), np.float32
    )
    if rng.random() < 0.5:  # either colour may be the figure
        dark, light = light, dark
    image = dark * mask + light * (1 - mask)
    return _grain(rng, image, 0.04)


_CELLS = ("round", "elongated", "lobed", "crenated", "binucleate", "signet")


def _render_cells(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """Stained cells of one morphology on a tissue-like background (microscopy-like)."""
    kind = _CELLS[label]
    stain = rng.uniform(0.8, 0.95)  # pink-to-purple hue of the stain
    image = _canvas(size, _hsv(stain, rng.uniform(0.05, 0.2), rng.uniform(0.85, 1)))
    _paint(image, _smooth_noise(rng, size, 6) * 0.5, _hsv(stain, 0.3, 0.8))
    cytoplasm = _hsv(stain + rng.normal(0, 0.02), rng.uniform(0.25, 0.45), rng.uniform(0.75, 0.95))
    nucleus = _hsv(stain - rng.uniform(0.05, 0.12), rng.uniform(0.5, 0.8), rng.uniform(0.3, 0.5))
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(0.15, 0.22)
        cx, cy = rng.uniform(0.1, 0.9, 2)
        angle = rng.uniform(0, 2 * np.pi)
        u, v = _local(size, cx, cy, angle)
        if kind == "elongated":
            body = _ellipse(u, v, 1.6 * r, 0.55 * r)
        elif kind == "crenated":
            body = np.hypot(u, v) - r * (1 + 0.18 * np.cos(9 * np.arctan2(v, u)))
        else:
            body = np.hypot(u, v) - r
        _paint(image, _coverage(body, size), cytoplasm)
        if kind == "elongated":
            nuclei = [_ellipse(u, v, 0.7 * r, 0.33 * r)]
        elif kind == "lobed":
            nuclei = [
                np.hypot(u - 0.3 * r * np.cos(t), v - 0.3 * r * np.sin(t)) - 0.25 * r
                for t in 2 * np.pi * np.arange(4) / 4
            ]
        elif kind == "binucleate":
            nuclei = [np.hypot(u - side * 0.45 * r, v) - 0.32 * r for side in (-1, 1)]
        elif kind == "signet":
            _paint(image, _coverage(np.hypot(u + 0.15 * r, v) - 0.65 * r, size), (0.97, 0.96, 0.98))
            nuclei = [_ellipse(u - 0.7 * r, v, 0.2 * r, 0.5 * r)]
        else:
            nuclei = [np.hypot(u, v) - 0.45 * r]
        _paint(image, _coverage(np.minimum.reduce(nuclei), size), nucleus)
    return _grain(rng, image, 0.03)


_LOCATION_BINS = 16
_ORIENTATION_BINS = 8


def _sprite(size: int, kind: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """A white sprite on black, as in dSprites."""
    image = _canvas(size, (0.0, 0.0, 0.0))
    _paint(image, _coverage(_shape(size, kind, cx, cy, radius, angle), size), (1.0, 1.0, 1.0))
    return image


def _render_location(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """dSprites-like: class = horizontal position bin; shape, size, angle and height vary freely."""
    radius = rng.uniform(0.07, 0.13)
    width = 0.7 / _LOCATION_BINS
    cx = 0.15 + width * (label + rng.random())
    kind = str(rng.choice(_OBJECTS))
    return _sprite(size, kind, cx, rng.uniform(0.15, 0.85), radius, rng.uniform(0, 2 * np.pi))


def _render_orientation(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """dSprites-like: class = orientation bin of an asymmetric sprite; position and size vary."""
    radius = rng.uniform(0.2, 0.3)
    angle = 2 * np.pi * (label + rng.random()) / _ORIENTATION_BINS
    kind = str(rng.choice(_ASYMMETRIC))
    cx, cy = rng.uniform(radius, 1 - radius, 2)
    return _sprite(size, kind, cx, cy, radius, angle)


_MAX_COUNT = 8


def _render_count(rng: np.random.Generator, label: int, size: int) -> np.ndarray:
    """CLEVR-count-like: class = number of objects (1..8) of random shape, colour and size.

    Objects sit in distinct cells of a jittered 3×3 grid, so they never overlap and no rejection
    sampling is needed.
    """
    shade = rng.uniform(0.35, 0.65)
    image = _canvas(size, (shade, shade, shade))
    _, y = _grid(size)
    image += ((y - 0.5) * rng.uniform(-0.3, 0.3))[..., None]  # a lit floor
    for cell in rng.choice(9, size=label + 1, replace=False):
        radius = rng.uniform(0.07, 0.12)
        cx = (cell % 3 + rng.uniform(radius * 3, 1 - radius * 3)) / 3
        cy = (cell // 3 + rng.uniform(radius * 3, 1 - radius * 3)) / 3
        kind = str(rng.choice(_OBJECTS))
        colour = _hsv(rng.random(), rng.uniform(0.5, 1), rng.uniform(0.5, 1))
        _paint(image, _coverage(_shape(size, kind, cx, cy, radius, rng.uniform(0, 2 * np.pi)), size), colour)
    return _grain(rng, image, 0.03)


def _balanced_labels(rng: np.random.Generator, count: int, num_classes: int) -> np.ndarray:
    """``count`` labels, every class within one of the others, in random order."""
    return rng.permutation(np.arange(count) % num_classes)


@dataclass(frozen=True)
class SynthTask:
    """A registered synthetic task: its VTAB group, classes and how to render one image of a class."""

    group: str
    """``natural``, ``specialized`` or ``structured``."""
    description: str
    """What the images show and what decides the class."""
    class_names: tuple[str, ...]
    """One name per label."""
    render: Render | None
    """``render(rng, label, size)``: one (size, size, 3) image in [0, 1]; None for tasks that draw
    real images."""

    def validate(self, counts: dict[str, int]) -> None:
        """Refuse split sizes this task cannot supply (procedural tasks supply any)."""

    def draw(self, rng: np.random.Generator, counts: dict[str, int], size: int) -> Drawn:
        """``(split, image (size, size, 3) float in [0, 1], label)`` for every image, split by split.

        Each split is class-balanced on its own, so every class is in train800.
        """
        for split, count in counts.items():
            for label in _balanced_labels(rng, count, len(self.class_names)):
                yield split, self.render(rng, int(label), size), int(label)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8×8 handwritten digits (no download) as [0, 1] images and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


class DigitsTask(SynthTask):
    """Real handwritten digits: the training splits are drawn class-balanced, the test split from
    the images left over, so no image is in both."""

    def validate(self, counts: dict[str, int]) -> None:
        images, _ = _digits()
        left = len(images) - sum(n for split, n in counts.items() if split != "test")
        if counts["test"] > left:
            raise ConfigError(
                f"the digits task has only {left} images left for its test split; "
                f"test_size={counts['test']} is too many"
            )

    def draw(self, rng: np.random.Generator, counts: dict[str, int], size: int) -> Drawn:
        images, targets = _digits()
        pools = [list(rng.permutation(np.flatnonzero(targets == c))) for c in range(len(self.class_names))]
        picks: dict[str, list[int]] = {}
        for split, count in counts.items():
            if split != "test":
                picks[split] = [pools[label].pop() for label in _balanced_labels(rng, count, len(pools))]
        leftover = rng.permutation(np.concatenate([np.asarray(pool, dtype=np.int64) for pool in pools]))
        picks["test"] = list(leftover[: counts["test"]])
        for split, indices in picks.items():
            for index in indices:
                grey = np.asarray(
                    Image.fromarray(images[index]).resize((size, size), Image.Resampling.BICUBIC)
                )
                yield split, np.repeat(grey[..., None], 3, axis=2), int(targets[index])


TASKS: dict[str, SynthTask] = {
    "objects": SynthTask(
        "natural",
        "coloured shapes on cluttered backgrounds; class = shape x colour",
        tuple(f"{colour} {kind}" for kind in _OBJECTS for colour in _COLOURS),
        _render_objects,
    ),
    "textures": SynthTask(
        "natural",
        "two-colour textures at random scale, orientation and palette; class = texture",
        _TEXTURES,
        _render_texture,
    ),
    "digits": DigitsTask(
        "natural",
        "scikit-learn's real 8x8 handwritten digits, upscaled; class = digit",
        tuple(str(d) for d in range(10)),
        None,
    ),
    "cells": SynthTask(
        "specialized",
        "microscopy-like stained cells; class = cell morphology",
        _CELLS,
        _render_cells,
    ),
    "sprites_location": SynthTask(
        "structured",
        "dSprites-like white sprite on black; class = horizontal position bin",
        tuple(f"x bin {b}" for b in range(_LOCATION_BINS)),
        _render_location,
    ),
    "sprites_orientation": SynthTask(
        "structured",
        "dSprites-like asymmetric sprite; class = orientation bin of 45 degrees",
        tuple(f"{b * 360 // _ORIENTATION_BINS} deg" for b in range(_ORIENTATION_BINS)),
        _render_orientation,
    ),
    "count": SynthTask(
        "structured",
        "CLEVR-like scenes of 1 to 8 objects; class = number of objects",
        tuple(str(n) for n in range(1, _MAX_COUNT + 1)),
        _render_count,
    ),
}
"""The synthetic tasks by name, covering the three VTAB groups; the suite writes them in this order."""


# --- writing the suite --------------------------------------------------------------------------------


def write_synthetic_suite(
    out: Path | str,
    *,
    seed: int = 0,
    image_size: int = 32,
    test_size: int = 500,
    tasks: Sequence[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write the synthetic suite: VTAB-like tasks in the VTAB-1k layout, without the network.

    Args:
        out: An empty or new folder, or an earlier synthetic suite, whose task folders are
            replaced (so a folder never mixes two settings); nothing else in it is touched.
        seed: Seeds every task's own generator; the same seed writes byte-identical files.
        image_size: Side of the square images, at least 16.
        test_size: Images in each task's test split.
        tasks: Names from [`TASKS`][vprompt.data.TASKS] (default: all).
        progress: Show a progress bar.

    Returns:
        The task folders, in ``tasks`` order.
    """
    names = synthetic_task_names(tasks)
    if not (isinstance(seed, int) and seed >= 0):
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    if not (isinstance(image_size, int) and image_size >= MIN_IMAGE_SIZE):
        raise ConfigError(f"image_size must be an int of at least {MIN_IMAGE_SIZE}, got {image_size!r}")
    if not (isinstance(test_size, int) and test_size > 0):
        raise ConfigError(f"test_size must be a positive int, got {test_size!r}")
    counts = {"train800": SPLIT_SIZES["train800"], "val200": SPLIT_SIZES["val200"], "test": test_size}
    for name in names:
        TASKS[name].validate(counts)
    out = Path(out)
    _claim(out)
    settings = {"format": FORMAT, "seed": seed, "image_size": image_size, "test_size": test_size}
    suite = {**settings, "tasks": [{"name": n, "group": TASKS[n].group} for n in names]}
    _write_json(out / SUITE_FILE, suite)  # first: an interrupted write can be overwritten
    with tqdm(total=len(names) * sum(counts.values()), disable=not progress, unit="img", desc="synth") as bar:
        return [_write_task(out / name, name, settings, counts, bar) for name in names]


def synthetic_task_names(tasks: Sequence[str] | None) -> list[str]:
    """The requested task names (all by default), checked against the registry."""
    names = list(TASKS) if tasks is None else list(tasks)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ConfigError(
            f"unknown synthetic task(s) {', '.join(map(repr, unknown))}; known: {', '.join(TASKS)}"
        )
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"tasks must be a non-empty list without repeats, got {names!r}")
    return names


def _is_ours(path: Path) -> bool:
    """Whether a JSON file was written by this module (so its folder may be replaced)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _claim(out: Path) -> None:
    """Make ``out`` ready to write: refuse foreign content, remove an earlier suite's task folders."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file, not a folder")
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return
    if not _is_ours(out / SUITE_FILE):
        raise DataError(
            f"{out} is not empty and is not a synthetic suite (no {SUITE_FILE} written by vprompt); "
            "choose an empty folder"
        )
    for name in TASKS:  # registry names only: never a path read from a file
        if _is_ours(out / name / TASK_FILE):
            shutil.rmtree(out / name)


def _write_task(root: Path, name: str, settings: dict, counts: dict[str, int], bar: tqdm) -> Path:
    """Render one task into ``root`` in the VTAB-1k layout."""
    task = TASKS[name]
    bar.set_postfix_str(name)
    rng = np.random.default_rng([settings["seed"], zlib.crc32(name.encode())])
    lines: dict[str, list[str]] = {split: [] for split in counts}
    for split in counts:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
    for split, image, label in task.draw(rng, counts, settings["image_size"]):
        relative = f"images/{split}/{len(lines[split]):05d}.jpg"
        pixels = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        Image.fromarray(pixels).save(root / relative, quality=95, subsampling=0)
        lines[split].append(f"{relative} {label}\n")
        bar.update()
    lines["train800val200"] = lines["train800"] + lines["val200"]
    for split, split_lines in lines.items():
        (root / f"{split}.txt").write_text("".join(split_lines), encoding="utf-8")
    (root / CLASSES_FILE).write_text("".join(f"{c}\n" for c in task.class_names), encoding="utf-8")
    meta = {
        **settings,
        "name": name,
        "group": task.group,
        "description": task.description,
        "num_classes": len(task.class_names),
    }
    _write_json(root / TASK_FILE, meta)
    return root


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
