"""The one place that chooses compiled or pure-Python implementations.

``FASTRPC_NO_EXTENSIONS=1`` forces the pure-Python ones. Without it the compiled
modules are used when importable; ``COMPILED`` says which were chosen, and the
test suite fails when they should have been loaded but were not.
"""

from __future__ import annotations

import importlib
import os
import sys

NO_EXTENSIONS = os.environ.get("FASTRPC_NO_EXTENSIONS", "") not in ("", "0")

COMPILED = False
if not NO_EXTENSIONS:
    try:
        from fastrpc._ext.codec import FrameReader, FrameWriter

        COMPILED = True
    except ImportError:
        pass

if not COMPILED:
    from fastrpc.amqp.codec_py import FrameReader, FrameWriter  # type: ignore[assignment]  # noqa: F401

# The envelope codec is chosen the same way; ``envelope`` is a module exposing
# encode_request / encode_reply / decode_request / decode_reply / content_type.
ENVELOPE_COMPILED = False
if not NO_EXTENSIONS:
    try:
        from fastrpc._ext import envelope

        ENVELOPE_COMPILED = True
    except ImportError:
        pass

if not ENVELOPE_COMPILED:
    from fastrpc import envelope_py as envelope  # type: ignore[no-redef]  # noqa: F401

# Pure-Python modules that are also compiled, unchanged, into fastrpc._ext.<name>
# (setup.py), with the C layout of their classes declared in
# fastrpc/_ext/<name>.pxd: the connection layer, which runs for every frame. Each
# such module ends with use_compiled_twin(__name__), so importers get the
# compiled build of the same source.
TWINS = ("fastrpc.amqp.connection", "fastrpc.amqp.channel", "fastrpc.amqp.transport")
TWINS_COMPILED: dict[str, bool] = {}


def use_compiled_twin(name: str) -> None:
    """Put the compiled build of module ``name`` in its place in sys.modules,
    when extensions are on and it is built (the import then returns it)."""
    if name not in TWINS:
        return  # the compiled build itself (fastrpc._ext.*) runs this too
    twin = None
    if not NO_EXTENSIONS:
        try:
            twin = importlib.import_module("fastrpc._ext." + name.rpartition(".")[2])
        except ImportError:
            pass
    TWINS_COMPILED[name] = twin is not None
    if twin is not None:
        sys.modules[name] = twin
