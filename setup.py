"""Build script: declares the Cython extensions (every ``sprint_control/_*.pyx``).

``SPRINT_CONTROL_PURE_PYTHON=1`` skips them; the package then runs on its pure-Python twins,
the same variable that ``sprint_control/__init__.py`` honours at import time.
"""

import glob
import os

from setuptools import Extension, setup


def _extensions():
    if os.environ.get("SPRINT_CONTROL_PURE_PYTHON", "") not in ("", "0"):
        return []
    import numpy
    from Cython.Build import cythonize

    here = os.path.dirname(os.path.abspath(__file__))
    csrc = os.path.join("csrc")
    extra_sources = sorted(glob.glob(os.path.join(csrc, "*.c")))
    extra_sources = [s for s in extra_sources if not s.endswith("sprint_host.c")]
    exts = []
    for pyx in sorted(glob.glob(os.path.join("sprint_control", "_*.pyx"))):
        modname = "sprint_control." + os.path.splitext(os.path.basename(pyx))[0]
        exts.append(
            Extension(
                modname,
                [pyx] + extra_sources,
                include_dirs=[numpy.get_include(), os.path.join(here, csrc)],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=["-O3"],
            )
        )
    return cythonize(exts, language_level=3, compiler_directives={"embedsignature": True})


setup(ext_modules=_extensions())
