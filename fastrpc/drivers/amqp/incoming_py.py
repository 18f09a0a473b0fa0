"""What a request taken from a queue carries, and how it is answered: the
base of the RPC listener's messages.

:class:`IncomingCore` holds a request's fields and answers it through the
driver; :class:`fastrpc.drivers.amqp.rpc_listener.AmqpIncomingMessage` adds
the :class:`fastrpc.drivers.base.IncomingMessage` interface on top. One is
made per request, and the server calls ``reply`` once per call: compiled,
making one and answering through it run no Python frame.

Import this module as ``fastrpc.drivers.amqp.incoming``: it runs as it is, or
compiled unchanged into ``fastrpc._ext.incoming`` (see fastrpc._impl); its C
layout is fastrpc/_ext/incoming.pxd.
"""

from __future__ import annotations

from typing import Any

from fastrpc.exceptions import BrokerError, MessageDeliveryFailure
from fastrpc.failures import serialize_remote_exception

__all__ = ["IncomingCore"]


class IncomingCore:
    """A request's fields, and its answers through ``driver.send_reply``."""

    def __init__(self, driver: Any, ctxt: dict, message: dict, msg_id: str | None,
                 reply_q: str | None, binary: bool, client_timeout: float | None = None) -> None:
        self.ctxt = ctxt
        self.message = message
        self.msg_id = msg_id
        self._driver = driver
        self.reply_q = reply_q
        self.binary = binary
        # The caller's call-monitor timeout: the dispatcher sends heartbeats
        # more often than this while the call runs.
        self.client_timeout = client_timeout
        # Where it was published (the exchange and routing key of its
        # delivery), noted for its trace only while tracing is on.
        self.exchange: str | None = None
        self.routing_key: str | None = None

    def acknowledge(self) -> None:
        # The listener acks (see AmqpListener.take and run_read): nothing to do here.
        pass

    def requeue(self) -> None:
        pass

    def reply(self, reply: Any = None, failure: BaseException | None = None) -> None:
        if self.msg_id is None or self.reply_q is None:
            return
        data = serialize_remote_exception(failure) if failure is not None else None
        self._driver.send_reply(self.reply_q, self.msg_id, reply, data, True, self.binary)

    def heartbeat(self) -> None:
        if self.msg_id is None or self.reply_q is None:
            return
        try:
            self._driver.send_reply(self.reply_q, self.msg_id, None, None, False, self.binary)
        except BrokerError as exc:
            raise MessageDeliveryFailure(f"heartbeat send failed: {exc}") from exc
