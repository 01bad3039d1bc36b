"""Old import path of :mod:`sprint_control.wire.framing`, kept working."""

import sys

from .wire import framing as _framing

sys.modules[__name__] = _framing
