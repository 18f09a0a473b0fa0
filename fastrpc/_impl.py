"""Compiled or pure Python: the one switch, used by every public twin module.

A *twin* is a public module with two implementations of the same names: a
pure-Python module and a compiled build, ``fastrpc._ext.<last part of the
public name>``. The public module (``fastrpc.amqp.codec``, say) is a few
lines that call :func:`bind`; callers import the public name and never an
implementation. ``FASTRPC_NO_EXTENSIONS=1`` forces pure Python everywhere;
otherwise the compiled build is used when it is importable, and
:data:`COMPILED_MODULES` records the choice (the test suite fails when a
compiled build should have been loaded but was not).

The public name is bound to the chosen module itself (it *is* that module in
``sys.modules``), not to copies of its names: the connection layer's compiled
build is its pure module compiled unchanged, and a tuning constant or class
patched on the public module (as tests do) must be the one its code reads.

Standard library only at module level: setup.py runs this file by itself
(without importing fastrpc) to read :data:`TWINS`.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

NO_EXTENSIONS = os.environ.get("FASTRPC_NO_EXTENSIONS", "") not in ("", "0")

# public module: (pure-Python implementation, source of its compiled build).
# A .pyx is a hand-written compiled twin; a .py source is the pure module
# itself, compiled unchanged with its classes' C layout declared in
# fastrpc/_ext/<name>.pxd. Listed in import order (a module before those
# that import it).
TWINS: dict[str, tuple[str, str]] = {
    "fastrpc.amqp.codec": ("fastrpc.amqp.codec_py", "ext/codec.pyx"),
    "fastrpc.envelope": ("fastrpc.envelope_py", "ext/envelope.pyx"),
    "fastrpc.amqp.sockio": ("fastrpc.amqp.sockio_py", "ext/sockio.pyx"),
    "fastrpc.amqp.sync": ("fastrpc.amqp.sync_py", "ext/sync.pyx"),
    "fastrpc.amqp.transport": ("fastrpc.amqp.transport_py", "fastrpc/amqp/transport_py.py"),
    "fastrpc.amqp.connection_core": ("fastrpc.amqp.connection_core_py", "fastrpc/amqp/connection_core_py.py"),
    "fastrpc.amqp.channel_core": ("fastrpc.amqp.channel_core_py", "fastrpc/amqp/channel_core_py.py"),
    "fastrpc.amqp.channel": ("fastrpc.amqp.channel_py", "fastrpc/amqp/channel_py.py"),
    "fastrpc.amqp.connection": ("fastrpc.amqp.connection_py", "fastrpc/amqp/connection_py.py"),
    "fastrpc.drivers.amqp.handoff": ("fastrpc.drivers.amqp.handoff_py", "fastrpc/drivers/amqp/handoff_py.py"),
    "fastrpc.drivers.amqp.sending": ("fastrpc.drivers.amqp.sending_py", "fastrpc/drivers/amqp/sending_py.py"),
    "fastrpc.drivers.amqp.replies": ("fastrpc.drivers.amqp.replies_py", "fastrpc/drivers/amqp/replies_py.py"),
    "fastrpc.drivers.amqp.calls": ("fastrpc.drivers.amqp.calls_py", "fastrpc/drivers/amqp/calls_py.py"),
    "fastrpc.drivers.amqp.acks": ("fastrpc.drivers.amqp.acks_py", "fastrpc/drivers/amqp/acks_py.py"),
    "fastrpc.drivers.amqp.incoming": ("fastrpc.drivers.amqp.incoming_py", "fastrpc/drivers/amqp/incoming_py.py"),
    "fastrpc.dispatcher": ("fastrpc.dispatcher_py", "fastrpc/dispatcher_py.py"),
    "fastrpc.client": ("fastrpc.client_py", "fastrpc/client_py.py"),
}

# public module -> whether its compiled build was chosen (set by bind()).
COMPILED_MODULES: dict[str, bool] = {}


def compiled_name(public: str) -> str:
    """The compiled build's module name of twin ``public``."""
    return "fastrpc._ext." + public.rpartition(".")[2]


def bind(public: str) -> ModuleType:
    """Bind the public module name ``public`` to its chosen implementation.

    Called once, by the public module while it is imported: the import then
    returns the implementation (the import system hands out whatever
    ``sys.modules`` holds for the name once the module ran).
    """
    pure, _source = TWINS[public]
    module = None
    if not NO_EXTENSIONS:
        name = compiled_name(public)
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            # Only the build itself missing or unloadable means pure Python
            # (and tests/test_twins.py fails); an import inside it that fails
            # would fail in the pure module too.
            if exc.name != name:
                raise
    COMPILED_MODULES[public] = module is not None
    if module is None:
        module = importlib.import_module(pure)
    sys.modules[public] = module
    return module


def compiled(public: str) -> bool:
    """Whether twin ``public`` runs compiled (imports it first)."""
    importlib.import_module(public)
    return COMPILED_MODULES[public]


def compiled_modules() -> dict[str, bool]:
    """Every twin's public name -> whether it runs compiled (imports them all)."""
    return {public: compiled(public) for public in TWINS}
