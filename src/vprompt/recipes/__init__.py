"""Compositions of the library: one run on a task folder, the demo, and (later) paper recipes."""
