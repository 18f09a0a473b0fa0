"""Reports through a conductor: the one service that owns the registry's
database, so that the other services need no database access, only RPC.

``Conductor`` is a Service whose manager answers ``service_update``;
``ConductorClient`` is what the other services pass as their ``registry``:
each report is an RPC call to it. A report then travels the same failover
path as every other call, and a dead broker node costs no report as long as
calls get through.
"""

from __future__ import annotations

import logging
from typing import Any

from fastrpc.client import get_rpc_client
from fastrpc.exceptions import MessageDeliveryFailure, MessagingTimeout
from fastrpc.service.service import ReportSink, Service, open_registry
from fastrpc.target import Target
from fastrpc.transport import TransportOptions

LOG = logging.getLogger(__name__)

CONDUCTOR_TOPIC = "conductor"
CONDUCTOR_BINARY = "fastrpc-conductor"


class ConductorManager:
    """The conductor's endpoint: reports of other services into its registry."""

    def __init__(self, registry: ReportSink) -> None:
        self.registry = registry

    def service_update(self, ctxt: dict, host: str, binary: str, topic: str,
                       availability_zone: str | None = None) -> dict[str, Any]:
        record = self.registry.report(host, binary, topic, availability_zone)
        return {"host": host, "binary": binary, "report_count": getattr(record, "report_count", None)}

    def service_stopped(self, ctxt: dict, host: str, binary: str) -> None:
        self.registry.mark_stopped(host, binary)


class Conductor(Service):
    """A service answering ``service_update`` on ``topic`` (default
    ``conductor``) into ``registry`` (a database URL, a Registry, or None:
    FASTRPC_DB, then the default SQLite file); it reports its own state
    there too."""

    def __init__(self, transport: Any, host: str, registry: Any = None, topic: str = CONDUCTOR_TOPIC,
                 **options: Any) -> None:
        db = open_registry(registry)
        super().__init__(transport, host, CONDUCTOR_BINARY, topic, ConductorManager(db), registry=db, **options)


class ConductorClient:
    """A report sink that calls the conductor on ``topic``; each call waits
    at most ``timeout`` seconds (a report is due again an interval later).

    A call that gets no answer is followed by the same report as a cast the
    broker confirms: a call needs this process's reply queue, which can be
    out of reach while the conductor's queue is fine (its node hangs, and on
    RabbitMQ 3.x no new queue can be declared until the cluster drops that
    node). The report then still lands, as long as the conductor is there to
    take it; a cast no queue takes fails the report."""

    def __init__(self, transport: Any, topic: str = CONDUCTOR_TOPIC, timeout: float = 10.0) -> None:
        self._client = get_rpc_client(transport, Target(topic=topic), timeout=timeout)
        self._confirmed = self._client.prepare(transport_options=TransportOptions(at_least_once=True))

    def report(self, host: str, binary: str, topic: str, availability_zone: str | None = None) -> Any:
        try:
            return self._client.call({}, "service_update", host=host, binary=binary, topic=topic,
                                     availability_zone=availability_zone)
        except (MessagingTimeout, MessageDeliveryFailure) as exc:
            LOG.debug("report of %s/%s by call failed (%s); casting it", host, binary, exc)
            self._confirmed.cast({}, "service_update", host=host, binary=binary, topic=topic,
                                 availability_zone=availability_zone)
            return None

    def mark_stopped(self, host: str, binary: str) -> None:
        self._client.call({}, "service_stopped", host=host, binary=binary)
