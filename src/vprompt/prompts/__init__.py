"""Prompt families; importing this package registers every method they define."""

from vprompt.prompts import tokens  # noqa: F401
