"""Prompt families; importing this package registers every method they define."""

from vprompt.prompts import adaptive, tokens  # noqa: F401
