"""Exchange and queue names, declare arguments and message properties.

These must match what oslo.messaging's rabbit driver (18.x, kombu + py-amqp)
declares and publishes, because RabbitMQ refuses a redeclaration with other
arguments (PRECONDITION_FAILED) and old and new services share one broker during
a rolling upgrade. The facts, under oslo's default options:

Exchanges
  * RPC topic exchange: name ``target.exchange`` or ``control_exchange``
    (``openstack``); type ``topic``; durable = ``amqp_durable_queues or
    rabbit_quorum_queue`` (False); auto_delete = ``amqp_auto_delete`` (False);
    no arguments. Declared by both the server (before its queues) and the client
    (before its first publish to it).
  * Fanout exchange: ``<topic>_fanout``; type ``fanout``; durable =
    ``rabbit_transient_quorum_queue`` (False); auto_delete True.
  * Replies use the default exchange ``''``; never declared.

Queues
  * ``<topic>`` and ``<topic>.<server>``: durable as the topic exchange,
    auto_delete = ``amqp_auto_delete``, not exclusive; arguments: no
    ``x-expires`` (oslo passes a TTL of 0 here); ``x-ha-policy: all`` when
    ``rabbit_ha_queues``; ``x-queue-type: quorum`` (+ ``x-delivery-limit``,
    ``x-max-in-memory-length``, ``x-max-in-memory-bytes`` when non-zero) when
    ``rabbit_quorum_queue``. Each is bound to the topic exchange with its own
    name as routing key.
  * ``<topic>_fanout_<uuid4 hex>``: durable = ``rabbit_transient_quorum_queue``
    (False), auto_delete False, not exclusive; arguments ``x-expires`` =
    ``rabbit_transient_queues_ttl * 1000`` (1 800 000 ms) plus the HA/quorum
    ones above with ``rabbit_transient_quorum_queue`` as the quorum switch.
    Bound to the fanout exchange with routing key ``<topic>``.
  * Reply queue ``reply_<uuid4 hex>``, one per transport, created lazily on the
    first call: durable = ``rabbit_transient_quorum_queue``, auto_delete False,
    not exclusive, same arguments as the fanout queue (``x-expires``); no
    binding (reached through the default exchange).
  * Integers in arguments are encoded as signed 32-bit (``I``) when they fit,
    else 64-bit (``l``), as py-amqp does.
  * ``rabbit_quorum_queue`` or ``rabbit_transient_quorum_queue`` with
    ``rabbit_ha_queues`` is a configuration error (oslo raises RuntimeError
    when it computes the arguments).
  * Not implemented: ``rabbit_stream_fanout`` (oslo: one shared stream queue
    ``<topic>_fanout`` per topic instead of a queue per server) and
    ``use_queue_manager`` (stable reply/fanout queue names); fastrpc declares
    its own per-process fanout and reply queues, which coexist with oslo's,
    since the fanout exchange is declared alike (oslo requires
    ``rabbit_transient_quorum_queue`` with stream fanout).

Which of these declarations RabbitMQ 4.3 refuses, per configuration, is in
``fastrpc.drivers.broker_rules`` and the README's "Choosing queue types".

Consuming
  * ``basic.qos`` with ``prefetch_count = rabbit_qos_prefetch_count`` (0 = no
    limit); consumers use explicit acks.
  * RPC servers ack a request when a worker takes it, before dispatching it;
    oslo's blocking executor acks at its next poll, after the reply, and so
    does fastrpc's for a request read alone. They drop duplicates by
    ``_unique_id`` (oslo remembers the last 16 ids per listener), and rebuild
    the context from the ``_context_<key>`` entries.

Publishing (kombu defaults)
  * Properties: ``content_type='application/json'``,
    ``content_encoding='utf-8'``, ``delivery_mode=2``, ``priority=0``.
  * Calls to a topic carry ``expiration = str(int(timeout * 1000))`` when the
    call has a timeout; casts and fanout casts carry no expiration.
  * Requests: the body is ``{"oslo.version": "2.0", "oslo.message": "<JSON>"}``;
    the inner object holds ``method``, ``args``, optional ``namespace`` and
    ``version``, ``_unique_id`` (uuid4 hex) always, and for calls ``_msg_id``
    (uuid4 hex), ``_reply_q`` and ``_timeout`` (the call-monitor timeout or
    null), plus the context flattened to ``_context_<key>``.
  * Targeted calls/casts use routing key ``<topic>.<server>``, others
    ``<topic>``; fanout casts go to ``<topic>_fanout``.
  * Replies: one message per call with ``{"result", "failure", "ending": true,
    "_msg_id", "_unique_id"}`` enveloped the same way, published to ``''`` with
    routing key = the reply queue and ``mandatory = direct_mandatory_flag``
    (True). ``failure`` is a JSON string (class, module, message, tb, args,
    kwargs) or null.
  * Call-monitor keepalives are replies with ``result`` and ``failure`` null and
    ``ending: false``; the caller restarts its call-monitor timer on each one.
  * The caller drops duplicate replies by ``_unique_id`` and treats a reply
    without ``ending`` as non-final.

fastrpc extension: between fastrpc peers the body may be msgpack
(``content_type='application/msgpack'``) holding ``{"oslo.version": "2.0",
"oslo.message": {inner map}}``; a server always answers in the encoding of the
request, so oslo callers only ever see JSON.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fastrpc.options import RABBIT_OPTIONS, Options

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_MSGPACK = "application/msgpack"


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str
    durable: bool
    auto_delete: bool


@dataclass(frozen=True)
class QueueSpec:
    name: str
    durable: bool
    auto_delete: bool
    arguments: dict[str, Any] = field(default_factory=dict)
    exclusive: bool = False


class Topology:
    """Names and declare arguments computed from the transport options."""

    def __init__(self, conf: Options | None = None) -> None:
        if conf is None:
            conf = Options()
        self.durable_queues = bool(conf.amqp_durable_queues)
        self.auto_delete = bool(conf.amqp_auto_delete)
        self.ha_queues = bool(conf.rabbit_ha_queues)
        self.quorum = bool(conf.rabbit_quorum_queue)
        self.transient_quorum = bool(conf.rabbit_transient_quorum_queue)
        self.delivery_limit = int(conf.rabbit_quorum_delivery_limit or 0)
        self.max_memory_length = int(conf.rabbit_quorum_max_memory_length or 0)
        self.max_memory_bytes = int(conf.rabbit_quorum_max_memory_bytes or 0)
        ttl = conf.rabbit_transient_queues_ttl  # None (unset in a config object): the default
        self.transient_ttl = int(RABBIT_OPTIONS["rabbit_transient_queues_ttl"] if ttl is None else ttl)
        self.prefetch_count = int(conf.rabbit_qos_prefetch_count or 0)
        self.mandatory_replies = bool(conf.direct_mandatory_flag)
        self.control_exchange = str(conf.control_exchange)
        # oslo refuses both combinations (RuntimeError when it computes the
        # arguments of a topic, or of a reply or fanout queue).
        if self.quorum and self.ha_queues:
            raise ValueError("rabbit_quorum_queue and rabbit_ha_queues cannot both be enabled")
        if self.transient_quorum and self.ha_queues:
            raise ValueError("rabbit_transient_quorum_queue and rabbit_ha_queues cannot both be enabled")

    # -- arguments -----------------------------------------------------------

    def queue_arguments(self, ttl_seconds: int, quorum: bool) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.ha_queues:
            args["x-ha-policy"] = "all"
        if quorum:
            args["x-queue-type"] = "quorum"
            if self.delivery_limit:
                args["x-delivery-limit"] = self.delivery_limit
            if self.max_memory_length:
                args["x-max-in-memory-length"] = self.max_memory_length
            if self.max_memory_bytes:
                args["x-max-in-memory-bytes"] = self.max_memory_bytes
        if ttl_seconds > 0:
            args["x-expires"] = ttl_seconds * 1000
        return args

    @property
    def durable(self) -> bool:
        # Quorum queues are always durable, whatever amqp_durable_queues says.
        return self.durable_queues or self.quorum

    # -- exchanges -----------------------------------------------------------

    def exchange_name(self, target_exchange: str | None, default_exchange: str | None = None) -> str:
        return target_exchange or default_exchange or self.control_exchange

    def topic_exchange(self, name: str) -> ExchangeSpec:
        return ExchangeSpec(name, "topic", self.durable, self.auto_delete)

    def fanout_exchange(self, topic: str) -> ExchangeSpec:
        return ExchangeSpec(f"{topic}_fanout", "fanout", self.transient_quorum, True)

    # -- queues --------------------------------------------------------------

    def topic_queue(self, topic: str, server: str | None = None) -> QueueSpec:
        name = f"{topic}.{server}" if server else topic
        return QueueSpec(name, self.durable, self.auto_delete, self.queue_arguments(0, self.quorum))

    def fanout_queue(self, topic: str) -> QueueSpec:
        name = f"{topic}_fanout_{uuid.uuid4().hex}"
        return QueueSpec(name, self.transient_quorum, False,
                         self.queue_arguments(self.transient_ttl, self.transient_quorum))

    def reply_queue(self) -> QueueSpec:
        return QueueSpec(f"reply_{uuid.uuid4().hex}", self.transient_quorum, False,
                         self.queue_arguments(self.transient_ttl, self.transient_quorum))

    # -- routing -------------------------------------------------------------

    @staticmethod
    def routing_key(topic: str, server: str | None = None) -> str:
        return f"{topic}.{server}" if server else topic


def publish_properties(content_type: str, expiration_s: float | None = None) -> dict[str, Any]:
    """Message properties as kombu sets them for oslo's publishes."""
    props: dict[str, Any] = {
        "content_type": content_type,
        "content_encoding": "utf-8" if content_type == CONTENT_TYPE_JSON else "binary",
        "delivery_mode": 2,
        "priority": 0,
    }
    if expiration_s is not None:
        props["expiration"] = str(int(expiration_s * 1000))
    return props
