"""Prompts shared on the Hugging Face Hub: ``hf://ORG/NAME[@REVISION]`` resolved to a local folder
through ``huggingface_hub`` (its cache when offline), so every command that takes a prompt folder
takes a Hub reference too."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from vprompt.errors import CheckpointError, ConfigError
from vprompt.failures import one_line

HUB_PREFIX = "hf://"


REACH_TIMEOUT = 5.0
"""Seconds to wait for the Hub's host to accept a connection before working from the cache."""


def hub_reachable(timeout: float = REACH_TIMEOUT) -> bool:
    """Whether the Hub's host (``HF_ENDPOINT``) accepts a TCP connection within ``timeout``."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def cache_only_when_unreachable() -> Iterator[None]:
    """Without the network, huggingface_hub retries each file for about a minute before it reads
    its cache; when the host does not answer at once, ask it for the cache alone."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = offline or not hub_reachable()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = offline


def is_hub_reference(reference: str | Path) -> bool:
    return isinstance(reference, str) and reference.startswith(HUB_PREFIX)


def hub_name(reference: str) -> str:
    """NAME of ``hf://ORG/NAME[@REVISION]``."""
    return reference[len(HUB_PREFIX):].partition("@")[0].rpartition("/")[2]


def resolve_hub_prompt(reference: str, files: list[str]) -> Path:
    """The local snapshot folder of a Hub prompt (``files`` of it): downloaded when the Hub is
    reachable, else read from the cache (``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` never tries the network)."""
    repo, _, revision = reference[len(HUB_PREFIX):].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"a Hub prompt is hf://ORG/NAME[@REVISION], got {reference!r}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ConfigError("hf:// prompts need huggingface_hub: pip install huggingface_hub") from exc
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or not hub_reachable()
    options = dict(repo_id=repo, revision=revision or None, allow_patterns=files,
                   cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    try:
        return Path(snapshot_download(**options, local_files_only=offline))
    except Exception as first:  # network trouble: the cache may still hold it
        if offline:
            raise CheckpointError(f"{reference} is not in the Hugging Face cache, and the Hub is offline or "
                                  f"unreachable ({one_line(first)})") from first
        try:
            return Path(snapshot_download(**options, local_files_only=True))
        except Exception:
            raise CheckpointError(f"cannot fetch {reference}: {one_line(first)}; offline, it must be in the "
                                  "Hugging Face cache (HF_HUB_CACHE)") from first
