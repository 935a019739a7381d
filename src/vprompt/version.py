"""The installed vprompt's version, read from the package metadata (pyproject.toml is its one
home), in a module low enough for anything to import."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("vprompt")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
