"""Old import path of :mod:`sprint_control.wire.protocol`, kept working."""

import sys

from .wire import protocol as _protocol

sys.modules[__name__] = _protocol
