"""Prompt families; importing this package registers every method they define."""

from vprompt.prompts import adaptive, pixel, tokens  # noqa: F401
