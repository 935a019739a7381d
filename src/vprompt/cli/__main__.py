"""``python -m vprompt.cli``: what ``accelerate launch`` runs on every process."""

from vprompt.cli import main

main()
