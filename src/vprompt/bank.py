"""The prompt bank: trained prompts kept as reusable assets for multi-source transfer.

A bank is a folder with one sub-folder per entry: the prompt-only checkpoint as training wrote
it (``prompt.safetensors`` + ``prompt.json``) and a ``card.json`` that says what the prompt was
trained on and how well it did. Loading source prompts checks that they fit the target model
(same backbone weights, same method and prompt shape) and names the entry that does not.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vprompt.backbones import BackboneSpec
from vprompt.errors import CheckpointError, ConfigError
from vprompt.hub import hub_name, is_hub_reference
from vprompt.checkpoint import (META_FILE, WEIGHTS_FILE, read_metadata, recorded_accuracy, resolve_prompt_dir,
                                write_json)
from vprompt.model import PromptedModel, meta_trainable_shapes, with_weights
from vprompt.prompt_file import checked_metadata, header_shapes

CARD_FILE = "card.json"


@dataclass(frozen=True)
class BankEntry:
    name: str
    path: Path
    card: dict[str, Any]

    @property
    def task(self) -> str:
        return self.card["task"]

    def metadata(self, own_weights: bool = True) -> dict[str, Any]:
        """The entry's ``prompt.json``, checked as a prompt file; ``own_weights=False`` also refuses a
        recorded local weights file (for a build: the user gives that file, never the entry)."""
        return checked_metadata(read_metadata(self.path), self.path, own_weights=own_weights)


def add_to_bank(bank: Path | str, prompt: Path | str, name: str | None = None, task: str | None = None,
                accuracy: float | None = None, replace: bool = False) -> BankEntry:
    """Copy a prompt checkpoint (or a training run's final prompt) into ``bank`` with a card.

    The task defaults to the entry name, the accuracy to the run's last evaluated accuracy.
    """
    source = resolve_prompt_dir(prompt)
    meta = checked_metadata(read_metadata(source), source, own_weights=True)  # copied, not built
    name = name or task or (hub_name(prompt) if is_hub_reference(prompt) else Path(prompt).resolve().name)
    if "/" in name or name.startswith("."):
        raise CheckpointError(f"bank entry name '{name}' must be a plain folder name")
    target = Path(bank) / name
    if target.exists() and not replace:
        raise CheckpointError(f"the bank already holds '{name}' ({target}); choose another --name or pass --replace")
    card = {
        "name": name,
        "task": task or name,
        "method": meta["method"],
        "prompt_len": meta["method_config"].get("prompt_len"),
        "backbone": meta["backbone"]["name"],
        "backbone_fingerprint": meta["backbone_fingerprint"],
        "num_classes": meta["num_classes"],
        "accuracy": accuracy if accuracy is not None else recorded_accuracy(source),
        "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "origin": str(source.resolve()),
    }
    target.mkdir(parents=True, exist_ok=True)
    for file in (WEIGHTS_FILE, META_FILE):
        shutil.copyfile(source / file, target / file)
    write_json(target / CARD_FILE, card)
    return BankEntry(name, target, card)


def list_bank(bank: Path | str) -> list[BankEntry]:
    """Every entry of ``bank``, by name; a folder without a card is reported, not skipped."""
    bank = Path(bank)
    if not bank.is_dir():
        raise CheckpointError(f"no prompt bank at {bank}")
    entries = []
    for folder in sorted(p for p in bank.iterdir() if p.is_dir()):
        card = folder / CARD_FILE
        if not card.is_file():
            raise CheckpointError(f"{folder} is in the bank but has no {CARD_FILE}; add it with `vprompt bank add`")
        try:
            entries.append(BankEntry(folder.name, folder, json.loads(card.read_text())))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{card} is not valid JSON: {exc}") from exc
    return entries


def select_entries(entries: list[BankEntry], names: list[str] | None = None) -> list[BankEntry]:
    """The entries named (all by default); an unknown name is refused."""
    known = {entry.name: entry for entry in entries}
    missing = sorted(set(names or []) - set(known))
    if missing:
        raise CheckpointError(f"no bank entries named {', '.join(missing)} (the bank has {', '.join(known)})")
    return [known[n] for n in names] if names else entries


def bank_backbone(entries: list[BankEntry], weights: Path | str | None = None) -> tuple[BackboneSpec, str, dict[str, Any]]:
    """The backbone, method and method options the sources were trained with (those of the first
    entry; ``source_prompts`` refuses any entry that differs), bounded before anything is built;
    ``weights``: the backbone's local weights, which a bank entry cannot choose."""
    meta = entries[0].metadata(own_weights=weights is not None)
    spec = BackboneSpec.from_record(meta["backbone"])
    if weights is not None:
        spec = with_weights(spec, weights)
    meta_trainable_shapes(spec, meta, entries[0].path)
    return spec, meta["method"], {"prompt_len": meta["method_config"]["prompt_len"]}


def source_prompts(entries: list[BankEntry], model: PromptedModel) -> torch.Tensor:
    """The entries' prompts stacked as (K, *S), each checked against ``model``'s prompt."""
    try:
        prompt = model.shared_prompt().shared_prompts()
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    key = model.shared_prompt_key()
    stacked = []
    for entry in entries:
        meta = entry.metadata()
        problems = []
        if meta["backbone_fingerprint"] != model.backbone_fingerprint:
            problems.append(f"trained on backbone '{meta['backbone']['name']}' (weights {meta['backbone_fingerprint']}), "
                            f"the target uses '{model.backbone_spec.name}' (weights {model.backbone_fingerprint})")
        if meta["method"] != model.method.name:
            problems.append(f"method {meta['method']}, the target uses {model.method.name}")
        shape = header_shapes(entry.path / WEIGHTS_FILE).get(key)  # from the header, before a tensor is read
        if shape != tuple(prompt.shape):
            problems.append(f"prompt shape {shape}, the target's is {tuple(prompt.shape)}")
        if problems:
            raise CheckpointError(f"bank entry '{entry.name}' does not fit the target model: {'; '.join(problems)}")
        try:
            stacked.append(load_file(str(entry.path / WEIGHTS_FILE))[key])
        except (OSError, SafetensorError) as exc:
            raise CheckpointError(f"cannot read bank entry '{entry.name}': {exc}") from exc
    return torch.stack(stacked).to(prompt.device)
