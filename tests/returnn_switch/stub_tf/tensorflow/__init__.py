"""A stand-in for ``tensorflow`` that lets ``returnn.tf.sprint`` be imported where TensorFlow is not
installed. Its ``py_get_sprint_*`` functions, the ones the tests call, use numpy only; anything that
needs TensorFlow itself fails loudly here."""

import types

__version__ = "1.15.0-stub"  # not "2.": returnn.tf.compat then leaves eager mode alone
compat = types.SimpleNamespace(v1=types.SimpleNamespace(), v2=types.SimpleNamespace())
