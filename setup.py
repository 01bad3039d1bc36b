"""Build script: declares the Cython extensions, each with the C sources it needs.

``SPRINT_CONTROL_PURE_PYTHON=1`` (named in ``sprint_control/_env.py``, which the package reads
too) skips them; the package then runs on its pure-Python twins.
"""

import os
import runpy

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = runpy.run_path(os.path.join(HERE, "sprint_control", "_env.py"))


def _openmp_args():
    """``-fopenmp`` where the C compiler builds and links it, else nothing: the kernel then runs its
    sequences one after the other (its ``prange`` compiles to a plain loop)."""
    import tempfile
    from distutils.ccompiler import new_compiler
    from distutils.errors import CCompilerError, DistutilsExecError
    from distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "omp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            objs = cc.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
            cc.link_executable(objs, os.path.join(tmp, "omp"), extra_postargs=["-fopenmp"])
        except (CCompilerError, DistutilsExecError, OSError):
            return {}
    return {"extra_compile_args": ["-fopenmp"], "extra_link_args": ["-fopenmp"]}


#: module -> (its .pyx, the csrc/ files linked into it)
EXTENSIONS = {
    "sprint_control.wire._framing": ("sprint_control/wire/_framing.pyx", ["csrc/frame_io.c"]),
    "sprint_control.fsa._fsa": ("sprint_control/fsa/_fsa.pyx", []),
}
#: module -> a callable giving its extra Extension arguments
EXTRA_ARGS = {"sprint_control.fsa._fsa": _openmp_args}


def _extensions():
    if ENV["pure_python_forced"]():
        return []
    import numpy
    from Cython.Build import cythonize

    exts = []
    for name, (pyx, sources) in EXTENSIONS.items():
        more = EXTRA_ARGS[name]() if name in EXTRA_ARGS else {}
        exts.append(
            Extension(
                name,
                [pyx] + sources,
                include_dirs=[numpy.get_include(), os.path.join(HERE, "csrc")],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=["-O3"] + more.get("extra_compile_args", []),
                extra_link_args=more.get("extra_link_args", []),
            )
        )
    return cythonize(exts, language_level=3, compiler_directives={"embedsignature": True})


setup(ext_modules=_extensions())
