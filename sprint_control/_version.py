"""The package's version, in one place: ``sprint_control.__version__``, ``sprint-control --version`` and
the distribution's metadata (``pyproject.toml`` reads this assignment without importing the package)."""

__version__ = "0.1.0"
