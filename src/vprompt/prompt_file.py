"""A prompt file is data, never instructions: what ``prompt.json`` may say, checked before anything is built.

A prompt shared by someone else (``hf://ORG/NAME``, a folder sent over) names the backbone it was
trained on, and rebuilding that backbone must not let the file decide what this machine opens or
fetches: timm's keyword arguments can point it at files and URLs (``pretrained_cfg_overlay``,
``cache_dir``), timm's ``hf-hub:`` and ``local-dir:`` names fetch a config from anywhere, and a
``checkpoint`` is a local path the file's author chose. So a prompt file may only say:

- an architecture: a timm model name (or ``zoo:``, ``robustbench:``, ``hf-transformers:ORG/NAME``
  from the local cache), with keyword arguments that are the model class's own constructor
  arguments (sizes, widths, depths, heads, class counts, flags; for a transformers class its
  config sizes, ``TRANSFORMERS_KWARGS``), never timm's ``LOADING_KEYS``, each a bounded number, a
  flag, a short word or a short list of numbers;
- timm's pretrained weights for that name (``pretrained``), never a file: weights from a local file
  are the user's to give (``--weights``, ``load_prompt(path, weights=...)``);
- a method and its options, class names (printable, bounded), a class count and an input size,
  all bounded, so nothing large is allocated because a file said so.

The whole model is first built on the meta device (shapes only, nothing allocated) and its size
bounded; the safetensors header's tensor shapes are checked against it before a tensor is read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from vprompt.errors import CheckpointError
from vprompt.names import BACKBONE_PREFIXES, MODULE_PREFIX, ROBUSTBENCH_PREFIX, TRANSFORMERS_PREFIX, ZOO_PREFIX

TOP_KEYS = frozenset({"format", "method", "method_config", "backbone", "backbone_fingerprint", "input_size",
                      "num_classes", "class_names"})
"""What ``prompt.json`` holds (every prompt vprompt has written holds exactly these)."""
BACKBONE_KEYS = frozenset({"name", "pretrained", "checkpoint", "kwargs", "init_seed", "input_size"})
TRANSFORMERS_KWARGS = frozenset({"image_size", "patch_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "num_channels", "num_register_tokens", "layer_norm_eps",
                                "hidden_act", "qkv_bias", "mlp_ratio", "num_labels"})
"""The config sizes a prompt file may give an ``hf-transformers:`` class built from its config."""
LOADING_KEYS = frozenset({"pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "checkpoint_path",
                          "pretrained_strict", "features_only", "scriptable", "exportable", "no_jit"})
"""timm's ``create_model`` arguments that say where weights and configs come from (files, URLs, the
Hub) or how the model is wrapped: never a prompt file's to give."""
SIDE_KEYS = frozenset({"img_size", "image_size", "patch_size", "window_size"})
"""Arguments in pixels (or tokens) along a side: bounded by ``MAX_SIDE`` like the input size."""
MAX_CLASSES = 100_000
MAX_SIDE = 4096
MAX_NUMBER = 1_000_000
"""Bound of every integer a prompt file gives (sizes, widths, depths, options)."""
MAX_TEXT = 200
MAX_LIST = 64
MAX_BYTES = 8 * 2 ** 30
"""Bound of the whole model's parameters and buffers (backbone and prompt), counted on the meta
device before anything is allocated: ViT-g/14 in fp32 takes about 4 GiB."""
WORD = re.compile(r"[A-Za-z0-9_.-]{1,64}")
SETTING = re.compile(r"[A-Za-z0-9_.-]{0,64}")
"""A text constructor argument: a pooling, activation or init name (``avg``, ``gelu``; empty for none)."""
MODEL_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")
HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*|[A-Za-z0-9]+")
"""``hf-transformers:`` names a prompt file may give: ORG/NAME in the local cache, or a class name."""


def refuse(source: Path | str, what: str) -> CheckpointError:
    return CheckpointError(f"{source}/prompt.json: {what} (a prompt file is data: see 'Sharing prompts safely' in "
                           "the docs)")


def printable(text: Any, limit: int = MAX_TEXT) -> bool:
    return isinstance(text, str) and 0 < len(text) <= limit and text.isprintable()


def plain_number(value: Any) -> bool:
    """An int (not a flag) or finite float within ``MAX_NUMBER``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and abs(value) <= MAX_NUMBER


def plain_value(value: Any) -> bool:
    """A flag, a bounded number, a short word, or a short list of those."""
    if isinstance(value, list):
        return len(value) <= MAX_LIST and all(plain_value(v) and not isinstance(v, list) for v in value)
    return value is None or isinstance(value, bool) or plain_number(value) or (
        isinstance(value, str) and len(value) <= MAX_TEXT and value.isprintable())


MODULE_PATTERN = re.compile(r"[A-Za-z0-9_.|()\\^$+*?-]{1,200}")
REPEATED_GROUP = re.compile(r"\)[*+?{]")


def safe_pattern(text: str) -> bool:
    """A tuner's module pattern of names, groups and alternatives that never repeats a group (a
    repeated group is what makes a regular expression take exponential time)."""
    return bool(MODULE_PATTERN.fullmatch(text)) and not REPEATED_GROUP.search(text)


def bounded_int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def size_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(bounded_int(v, 1, MAX_SIDE) for v in value)


def checked_metadata(meta: Any, source: Path | str, own_weights: bool = False) -> dict[str, Any]:
    """``meta`` (a ``prompt.json``) if it says only what a prompt file may; else a CheckpointError
    naming the first thing it may not.

    Args:
        meta: The parsed JSON.
        source: The prompt folder, for the message.
        own_weights: The user gives the backbone's weights (``--weights``, or the backbone itself),
            so a recorded ``checkpoint`` path is not opened and may stand.
    """
    if not isinstance(meta, dict):
        raise refuse(source, "is not a JSON object")
    unknown = sorted(map(str, set(meta) - TOP_KEYS))
    missing = sorted(TOP_KEYS - set(meta))
    if unknown or missing:
        raise refuse(source, f"unknown keys {unknown[:3]}" if unknown else f"missing keys {missing}")
    if not (isinstance(meta["method"], str) and WORD.fullmatch(meta["method"].replace(":", "_").replace("+", "_"))):
        raise refuse(source, f"method {meta['method']!r} is not a method name")
    config = meta["method_config"]
    if not (isinstance(config, dict) and all(isinstance(k, str) and k.isidentifier() and plain_value(v)
                                             for k, v in config.items())):
        raise refuse(source, "method_config must map option names to flags, bounded numbers or short text")
    for key, value in config.items():
        text = value if isinstance(value, str) else None
        if text is not None and not (SETTING.fullmatch(text) or (key.endswith("_modules") and safe_pattern(text))):
            raise refuse(source, f"method option {key} must be a word (or, for a tuner's modules, a plain pattern)")
    if not bounded_int(meta["num_classes"], 1, MAX_CLASSES):
        raise refuse(source, f"num_classes must be an integer in [1, {MAX_CLASSES}]")
    names = meta["class_names"]
    if not (isinstance(names, list) and len(names) == meta["num_classes"] and all(map(printable, names))):
        raise refuse(source, f"class_names must be {meta['num_classes']} printable names of at most {MAX_TEXT} "
                             "characters")
    if not size_pair(meta["input_size"]):
        raise refuse(source, f"input_size must be two integers in [1, {MAX_SIDE}]")
    if not (isinstance(meta["backbone_fingerprint"], str) and re.fullmatch(r"[0-9a-f]{1,128}",
                                                                            meta["backbone_fingerprint"])):
        raise refuse(source, "backbone_fingerprint must be a hex digest")
    check_backbone(meta["backbone"], source, own_weights)
    return meta


def check_backbone(spec: Any, source: Path | str, own_weights: bool) -> None:
    """The recorded backbone spec: an allowed name, architecture arguments only, no local file."""
    if not isinstance(spec, dict) or set(spec) - BACKBONE_KEYS or "name" not in spec:
        raise refuse(source, f"backbone must be an object with keys among {sorted(BACKBONE_KEYS)}")
    name = spec["name"]
    if not (isinstance(name, str) and MODEL_NAME.fullmatch(name)):
        raise refuse(source, "backbone name is not a model name")
    prefix = next((p for p in BACKBONE_PREFIXES if name.startswith(p)), None)
    if prefix == TRANSFORMERS_PREFIX and not own_weights and not HUB_NAME.fullmatch(name.removeprefix(prefix)):
        raise refuse(source, f"backbone {name!r}: a prompt file names a transformers checkpoint as ORG/NAME in the "
                             "local cache, never a path (give the folder yourself: --weights FOLDER)")
    if prefix == TRANSFORMERS_PREFIX and not own_weights and Path(name.removeprefix(prefix)).exists():
        raise refuse(source, f"backbone {name!r} names a folder here, and a prompt file names a transformers "
                             "checkpoint in the local cache only")
    if prefix is None and ":" in name:  # timm's hf-hub:, local-dir: and the like fetch configs from anywhere
        raise refuse(source, f"backbone {name!r}: a prompt file names a timm architecture, not where to fetch one "
                             "(build the backbone yourself and pass it: --model, load_prompt(path, backbone=...))")
    if not isinstance(spec.get("pretrained", False), bool):
        raise refuse(source, "backbone pretrained must be true or false")
    if spec.get("checkpoint") is not None and not own_weights:
        raise refuse(source, f"it names local weights {str(spec['checkpoint'])[:MAX_TEXT]!r}, and a prompt file does "
                             "not choose which files are opened: give them yourself (--weights FILE; "
                             "load_prompt(path, weights=FILE))")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise refuse(source, "backbone kwargs must be an object")
    allowed, owner = architecture_arguments(name, prefix)
    for key, value in kwargs.items():
        if key in LOADING_KEYS or key not in allowed:
            raise refuse(source, f"backbone argument {str(key)[:64]!r} is not an architecture argument of {owner} "
                                 "a prompt file may set")
        if not plain_value(value) or (isinstance(value, str) and not SETTING.fullmatch(value)):
            raise refuse(source, f"backbone argument {key} must be a bounded number, a flag, a word or a short list")
        sides = value if isinstance(value, list) else [value]
        if key in SIDE_KEYS and not all(bounded_int(v, 1, MAX_SIDE) for v in sides):
            raise refuse(source, f"backbone argument {key} must be at most {MAX_SIDE}")
    seed = spec.get("init_seed")
    if seed is not None and not bounded_int(seed, 0, 2 ** 63 - 1):
        raise refuse(source, "backbone init_seed must be a non-negative integer")
    if spec.get("input_size") is not None and not size_pair(spec["input_size"]):
        raise refuse(source, f"backbone input_size must be two integers in [1, {MAX_SIDE}]")


def architecture_arguments(name: str, prefix: str | None) -> tuple[frozenset[str], str]:
    """The constructor arguments a prompt file may give backbone ``name``, and whose they are."""
    from vprompt.backbones import constructor_defaults

    if prefix == TRANSFORMERS_PREFIX:
        return TRANSFORMERS_KWARGS, "a transformers config"
    if prefix in (ROBUSTBENCH_PREFIX, MODULE_PREFIX):  # fixed architectures, or a module only its own code builds
        return frozenset(), name
    arch = name
    if prefix == ZOO_PREFIX:
        from vprompt import zoo

        arch = zoo.find_card(name)["arch"]
    found = constructor_defaults(arch)
    if found is None:
        return frozenset(), f"'{name}' (not a timm model)"
    return frozenset(found[1]), found[0]


def header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file declares, read from its header alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def check_shapes(declared: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], source: Path | str) -> None:
    """Refuse a weights file whose tensors are not exactly the model's trainable ones."""
    if declared != expected:
        diff = sorted(set(declared.items()) ^ set(expected.items()))[:3]
        raise CheckpointError(f"{source}: tensors do not match the model (first differences: {diff})")
