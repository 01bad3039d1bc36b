"""Old import path of :mod:`sprint_control.wire.shm`, kept working."""

import sys

from .wire import shm as _shm

sys.modules[__name__] = _shm
