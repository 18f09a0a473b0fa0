"""Services that report their liveness, and the registry operators read.

``Registry`` needs SQLAlchemy 2 (``pip install 'fastrpc[service]'``); it is
imported when a registry is opened, so this package imports without it.
"""

from fastrpc.service.registry import (
    STOPPED_AT,
    Registry,
    RegistryError,
    ServiceRecord,
    UnknownService,
    is_up,
)

__all__ = [
    "STOPPED_AT",
    "Registry",
    "RegistryError",
    "ServiceRecord",
    "UnknownService",
    "is_up",
]
