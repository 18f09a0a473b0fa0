"""Build fastrpc, compiling ext/*.pyx into fastrpc._ext.*.

FASTRPC_NO_EXTENSIONS=1  build and install without the compiled modules
FASTRPC_DEBUG=1          compile with line tracing (for coverage and profilers)
"""

import glob
import os

from setuptools import setup

ext_modules = []
if os.environ.get("FASTRPC_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = os.environ.get("FASTRPC_DEBUG", "") not in ("", "0")
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if debug else []
    extensions = [
        Extension(
            "fastrpc._ext." + os.path.splitext(os.path.basename(path))[0],
            [path],
            define_macros=macros,
            extra_compile_args=["-O2"],
        )
        for path in sorted(glob.glob("ext/*.pyx"))
    ]
    ext_modules = cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "linetrace": debug,
        },
    )

setup(ext_modules=ext_modules)
