"""The one place that chooses compiled or pure-Python implementations.

``FASTRPC_NO_EXTENSIONS=1`` forces the pure-Python ones. Without it the compiled
modules are used when importable; ``COMPILED`` says which were chosen, and the
test suite fails when they should have been loaded but were not.
"""

from __future__ import annotations

import os

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
