"""AMQP 0-9-1 driver, wire-compatible with oslo.messaging's rabbit driver.

One job per module (names and declare arguments are in
:mod:`fastrpc.drivers.topology`):

* :mod:`.connecting`: options and URL to connection parameters, the order
  hosts are tried in, reconnect backoff;
* :mod:`.sending`: the driver's one sending connection, publishing from any
  thread with retries; it also carries the reply queue's consumer;
* :mod:`.replies`: the reply queue ``reply_<uuid hex>`` (declared on the first
  call) and the calls waiting on it; the connection's reader thread hands
  each reply to the waiter registered under its ``_msg_id`` (no polling);
* :mod:`.consumer`: what every listener shares (its own connection,
  reconnects, hand-off to pollers or inline dispatch, stop), with
  documented extension points; :mod:`.handoff` and :mod:`.acks` are its
  thread hand-off and ack bookkeeping;
* :mod:`.rpc_listener`: consumes ``<topic>``, ``<topic>.<server>`` and
  ``<topic>_fanout_<uuid hex>``; a request is acked when a poller takes it
  (the threading executor), or, read alone and run inline (the blocking
  executor), after it ran and was answered; a malformed one is rejected
  without requeue;
* :mod:`.notifications`: consumes notification queues; each notification is
  acknowledged or requeued by its user once processed;
* :mod:`.driver`: :class:`AmqpDriver`, what the RPC layer calls.
"""

from fastrpc.drivers.amqp.connecting import connection_params, open_connection
from fastrpc.drivers.amqp.consumer import Consumer
from fastrpc.drivers.amqp.driver import AmqpDriver
from fastrpc.drivers.amqp.incoming import DEDUP_WINDOW
from fastrpc.drivers.amqp.notifications import AmqpNotificationListener
from fastrpc.drivers.amqp.rpc_listener import AmqpIncomingMessage, AmqpListener

__all__ = [
    "DEDUP_WINDOW", "AmqpDriver", "AmqpIncomingMessage", "AmqpListener", "AmqpNotificationListener",
    "Consumer", "connection_params", "open_connection",
]
