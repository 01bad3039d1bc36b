"""Build script: declares the Cython extensions, each with the C sources it needs.

``SPRINT_CONTROL_PURE_PYTHON=1`` (named in ``sprint_control/_env.py``, which the package reads
too) skips them; the package then runs on its pure-Python twins.
"""

import os
import runpy

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = runpy.run_path(os.path.join(HERE, "sprint_control", "_env.py"))

#: module -> (its .pyx, the csrc/ files linked into it)
EXTENSIONS = {
    "sprint_control.wire._framing": ("sprint_control/wire/_framing.pyx", ["csrc/frame_io.c"]),
    "sprint_control.emulator._fsa": ("sprint_control/emulator/_fsa.pyx", []),
}


def _extensions():
    if ENV["pure_python_forced"]():
        return []
    import numpy
    from Cython.Build import cythonize

    exts = [
        Extension(
            name,
            [pyx] + sources,
            include_dirs=[numpy.get_include(), os.path.join(HERE, "csrc")],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"],
        )
        for name, (pyx, sources) in EXTENSIONS.items()
    ]
    return cythonize(exts, language_level=3, compiler_directives={"embedsignature": True})


setup(ext_modules=_extensions())
