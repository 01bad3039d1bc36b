"""The tools built on the package: ``bench`` (throughput of the link) and ``demo`` (a tiny training run).

They are not part of the core; ``sprint-control`` (``sprint_control.cli``) runs them.
"""
