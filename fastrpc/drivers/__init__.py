"""Transport drivers, selected by URL scheme."""

from __future__ import annotations

import importlib

from fastrpc.drivers.base import BaseDriver, IncomingMessage, Listener
from fastrpc.exceptions import DriverLoadFailure

__all__ = ["BaseDriver", "IncomingMessage", "Listener", "get_driver_class"]

# Imported lazily: the AMQP driver pulls in the connection layer and codec.
_DRIVERS: dict[str, tuple[str, str]] = {
    "memory": ("fastrpc.drivers.memory", "MemoryDriver"),
    "fake": ("fastrpc.drivers.memory", "MemoryDriver"),
    "rabbit": ("fastrpc.drivers.amqp", "AmqpDriver"),
    "fastrpc": ("fastrpc.drivers.amqp", "AmqpDriver"),
    "amqp": ("fastrpc.drivers.amqp", "AmqpDriver"),
}


def get_driver_class(scheme: str) -> type[BaseDriver]:
    """Return the driver class registered for a URL scheme."""
    try:
        module_name, class_name = _DRIVERS[scheme]
    except KeyError:
        raise DriverLoadFailure(scheme, ValueError(f"unknown transport scheme {scheme!r}")) from None
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise DriverLoadFailure(scheme, exc) from exc
    return cls
