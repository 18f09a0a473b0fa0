"""Build fastrpc and the compiled builds of its twin modules (fastrpc._ext.*).

fastrpc._impl.TWINS lists them: each public twin module with its pure-Python
implementation and the source of its compiled build, either a hand-written
ext/<name>.pyx or the pure module itself, compiled unchanged with its
classes' C layout from fastrpc/_ext/<name>.pxd.

FASTRPC_NO_EXTENSIONS=1  build and install without the compiled modules
FASTRPC_DEBUG=1          compile with line tracing (for coverage and profilers)
"""

import os
import runpy

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
# _impl.py needs only the standard library: run it alone, without importing
# fastrpc (whose dependencies may not be installed yet).
_IMPL = runpy.run_path(os.path.join(HERE, "fastrpc", "_impl.py"))
TWINS, compiled_name = _IMPL["TWINS"], _IMPL["compiled_name"]

ext_modules = []
if os.environ.get("FASTRPC_NO_EXTENSIONS", "") in ("", "0"):
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = os.environ.get("FASTRPC_DEBUG", "") not in ("", "0")
    macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if debug else []

    def extensions(modules, **directives):
        """cythonize {compiled module name: source}."""
        return cythonize(
            [
                Extension(name, [source], define_macros=macros, extra_compile_args=["-O2"])
                for name, source in sorted(modules.items())
            ],
            language_level=3,
            compiler_directives={"linetrace": debug, **directives},
        )

    hand_written = {}
    same_source = {}
    for public, (_pure, source) in TWINS.items():
        name = compiled_name(public)
        (hand_written if source.endswith(".pyx") else same_source)[name] = source

    # cythonize does not see a same-source twin's .pxd, nor the .pxd/.pxi
    # files a twin cimports (a base class's layout, the frame writer's) or a
    # hand-written twin's own declarations (fastrpc/_ext/codec.pxi), as
    # dependencies: any of them newer than a generated C file forces that
    # twin to be translated again.
    pxds = [
        os.path.join(folder, f)
        for folder in ("fastrpc/_ext", "fastrpc/amqp", "fastrpc/drivers/amqp")
        for f in os.listdir(os.path.join(HERE, folder))
        if f.endswith((".pxd", ".pxi"))
    ]
    newest_pxd = max((os.path.getmtime(os.path.join(HERE, path)) for path in pxds), default=0.0)
    for source in [*same_source.values(), *hand_written.values()]:
        c_file = os.path.splitext(source)[0] + ".c"
        if os.path.exists(c_file) and newest_pxd > os.path.getmtime(c_file):
            os.remove(c_file)

    ext_modules = extensions(
        hand_written, boundscheck=False, wraparound=False, cdivision=True
    ) + extensions(
        # Python semantics kept whole (negative indexes, division); the
        # annotations are for mypy, not C types.
        same_source,
        annotation_typing=False,
    )

setup(ext_modules=ext_modules)
