"""The optional extras a benchmark needs, imported in ``setup``: asv skips a benchmark whose ``setup``
raises ``NotImplementedError``, and the message names the extra to install."""

from __future__ import annotations


def torch():
    """The ``torch`` module, or NotImplementedError naming the torch extra."""
    try:
        import torch as module
    except ImportError:
        raise NotImplementedError('needs the torch extra: pip install "sprint_control[torch]"') from None
    return module
