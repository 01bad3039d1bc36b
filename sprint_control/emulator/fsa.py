"""The old path of the full-sum kernel, now the layer :mod:`sprint_control.fsa`; the same objects."""

from __future__ import annotations

from ..fsa import API as API
from ..fsa import IMPLEMENTATION as IMPLEMENTATION
from ..fsa import batch_layout as batch_layout
from ..fsa import forward_backward as forward_backward
from ..fsa import fullsum as fullsum
from ..fsa import viterbi as viterbi

__all__ = list(API)
