"""Services that report their liveness, and the registry operators read.

``Service`` runs a manager behind an RPC server and reports its state every
``report_interval`` into a ``Registry`` (a database) or, through RPC, to a
``Conductor`` that owns the database (``ConductorClient``).

``Registry`` needs SQLAlchemy 2 (``pip install 'fastrpc[service]'``); it is
imported when a registry is opened, so this package imports without it.
"""

from fastrpc.service.conductor import Conductor, ConductorClient
from fastrpc.service.registry import (
    STOPPED_AT,
    Registry,
    RegistryError,
    ServiceRecord,
    UnknownService,
    is_up,
)
from fastrpc.service.service import Service, launch, periodic_task

__all__ = [
    "STOPPED_AT",
    "Conductor",
    "ConductorClient",
    "Registry",
    "RegistryError",
    "Service",
    "ServiceRecord",
    "UnknownService",
    "is_up",
    "launch",
    "periodic_task",
]
