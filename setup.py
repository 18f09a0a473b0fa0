"""Build fastrpc, compiling ext/*.pyx into fastrpc._ext.*.

The connection layer's pure-Python modules (fastrpc._impl.TWINS) are compiled
too, unchanged, into fastrpc._ext.<name>, with their classes' C layout from
fastrpc/_ext/<name>.pxd; each module swaps its compiled build in when imported.

FASTRPC_NO_EXTENSIONS=1  build and install without the compiled modules
FASTRPC_DEBUG=1          compile with line tracing (for coverage and profilers)
"""

import ast
import glob
import os

from setuptools import setup

# The twin list lives in fastrpc/_impl.py; read it without importing the package.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fastrpc", "_impl.py")) as _impl:
    TWINS = next(ast.literal_eval(line.split("=", 1)[1]) for line in _impl if line.startswith("TWINS = "))

ext_modules = []
if os.environ.get("FASTRPC_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = os.environ.get("FASTRPC_DEBUG", "") not in ("", "0")
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if debug else []

    def extensions(paths, **directives):
        return cythonize(
            [
                Extension(
                    "fastrpc._ext." + os.path.splitext(os.path.basename(path))[0],
                    [path],
                    define_macros=macros,
                    extra_compile_args=["-O2"],
                )
                for path in paths
            ],
            language_level=3,
            compiler_directives={"linetrace": debug, **directives},
        )

    # cythonize does not see a twin's .pxd as its dependency: a .pxd newer than
    # the generated C forces that twin to be translated again.
    for twin in TWINS:
        c_file = twin.replace(".", "/") + ".c"
        pxd = "fastrpc/_ext/" + twin.rpartition(".")[2] + ".pxd"
        if os.path.exists(c_file) and os.path.getmtime(pxd) > os.path.getmtime(c_file):
            os.remove(c_file)

    ext_modules = extensions(
        sorted(glob.glob("ext/*.pyx")), boundscheck=False, wraparound=False, cdivision=True
    ) + extensions(
        # Python semantics kept whole (negative indexes, division); the
        # annotations are for mypy, not C types.
        [twin.replace(".", "/") + ".py" for twin in TWINS],
        annotation_typing=False,
    )

setup(ext_modules=ext_modules)
