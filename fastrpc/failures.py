"""Remote exceptions on the wire, in oslo.messaging's format.

A failure travels as a JSON string ``{"class", "module", "message", "tb",
"args", "kwargs"}``. The receiver rebuilds the exception only when its module is
allow-listed (builtins always are) and the class is an ``Exception`` subclass;
anything else, including malformed or hostile payloads, becomes a
``RemoteError``. A module that is not allow-listed is never imported.
"""

from __future__ import annotations

import builtins
import importlib
import json
import logging
import sys
import traceback
from collections.abc import Collection, Iterable
from typing import Any

from fastrpc.exceptions import RemoteError

__all__ = ["serialize_remote_exception", "deserialize_remote_exception", "REMOTE_POSTFIX"]

LOG = logging.getLogger(__name__)

REMOTE_POSTFIX = "_Remote"
_BUILTINS = "builtins"
# 'exceptions' is what a Python 2 peer reports for builtin exceptions.
_BUILTIN_ALIASES = ("exceptions", "builtins")
# Bound what a peer can make us hold or print.
_MAX_TRACE_LINES = 1000


def _to_primitive(value: Any) -> Any:
    """JSON fallback for arguments json cannot encode."""
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def serialize_remote_exception(failure: BaseException | tuple[Any, Any, Any]) -> str:
    """Encode an exception (or a ``sys.exc_info()`` tuple) for a reply."""
    if isinstance(failure, tuple):
        exc_type, exc, tb = failure
    else:
        exc_type, exc, tb = type(failure), failure, failure.__traceback__
    if exc is None:
        raise ValueError("no exception to serialize")
    trace = traceback.format_exception(exc_type, exc, tb)

    kwargs = getattr(exc, "kwargs", None)
    if not isinstance(kwargs, dict):
        kwargs = {}

    cls_name = str(type(exc).__name__)
    mod_name = str(type(exc).__module__)
    # A rebuilt remote exception raised again goes out under its original name.
    if cls_name.endswith(REMOTE_POSTFIX) and mod_name.endswith(REMOTE_POSTFIX):
        cls_name = cls_name[:-len(REMOTE_POSTFIX)]
        mod_name = mod_name[:-len(REMOTE_POSTFIX)]

    data = {
        "class": cls_name,
        "module": mod_name,
        "message": str(exc),
        "tb": trace,
        "args": list(exc.args),
        "kwargs": kwargs,
    }
    return json.dumps(data, default=_to_primitive)


def _remote_error(name: Any, message: Any, trace: list[str]) -> RemoteError:
    return RemoteError(name if isinstance(name, str) else None,
                       message if isinstance(message, str) else None, trace)


def _resolve_class(module: str, name: str, allowed: Collection[str]) -> type[Exception] | None:
    """Find an allow-listed Exception class, or None (never imports anything else)."""
    if module in _BUILTIN_ALIASES:
        mod: Any = builtins
    elif module in allowed:
        mod = sys.modules.get(module) or importlib.import_module(module)
    else:
        return None
    klass = getattr(mod, name, None)
    if isinstance(klass, type) and issubclass(klass, Exception):
        return klass
    return None


def deserialize_remote_exception(data: Any, allowed_remote_exmods: Iterable[str]) -> BaseException:
    """Rebuild the exception described by ``data``; never raises.

    Returns an instance of the original class (renamed ``<Class>_Remote`` in
    module ``<module>_Remote``, whose ``str()`` carries the remote traceback) or
    a ``RemoteError`` when that is not allowed or not possible.
    """
    try:
        if isinstance(data, (bytes, bytearray)):
            data = bytes(data).decode("utf-8")
        failure = json.loads(data) if isinstance(data, str) else data
    except (ValueError, TypeError):
        return RemoteError("UnknownRemoteFailure", "remote failure payload is not valid JSON", "")
    if not isinstance(failure, dict):
        return RemoteError("UnknownRemoteFailure", "remote failure payload is not a JSON object", "")

    raw_trace = failure.get("tb", [])
    trace = ([line for line in raw_trace if isinstance(line, str)][:_MAX_TRACE_LINES]
             if isinstance(raw_trace, list) else [])
    name = failure.get("class")
    module = failure.get("module")
    remote_message = failure.get("message", "")
    args = failure.get("args", [])
    kwargs = failure.get("kwargs", {})

    if not (isinstance(name, str) and name.isidentifier() and isinstance(module, str)
            and isinstance(remote_message, str)):
        return _remote_error(name, remote_message, trace)
    # Built once: the caller may pass a one-shot iterator.
    allowed = frozenset(allowed_remote_exmods)
    if module not in _BUILTIN_ALIASES and module not in allowed:
        return _remote_error(name, remote_message, trace)
    if not isinstance(args, list) or not isinstance(kwargs, dict) or \
            not all(isinstance(key, str) for key in kwargs):
        LOG.warning("Remote exception %s has malformed arguments", name)
        return _remote_error(name, remote_message, trace)

    try:
        klass = _resolve_class(module, name, allowed)
        if klass is None:
            LOG.warning("Remote exception %s.%s is not an exception class that can be rebuilt", module, name)
            return _remote_error(name, remote_message, trace)
        exc = klass(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - a hostile constructor must not escape
        LOG.warning("Failed to rebuild remote exception %s: %s", name, type(error).__name__)
        return _remote_error(name, remote_message, trace)

    full_message = remote_message + "\n" + "\n".join(trace)
    module_name = _BUILTINS if module in _BUILTIN_ALIASES else module

    def _str(self: BaseException) -> str:
        return full_message

    try:
        remote_cls = type(klass.__name__ + REMOTE_POSTFIX, (klass,), {"__str__": _str})
        remote_cls.__module__ = module_name + REMOTE_POSTFIX
        exc.__class__ = remote_cls
    except Exception:  # noqa: BLE001
        # Builtin exception types cannot change class: carry the text in args.
        try:
            exc.args = (full_message,) + tuple(exc.args[1:])
        except Exception:  # noqa: BLE001 - a class refusing both keeps its own text
            pass
    return exc
