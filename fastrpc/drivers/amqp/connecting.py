"""From options and a transport URL to an open connection: connection
parameters per host, the order hosts are tried in, reconnect delays, and the
two declarations every connection owner makes."""

from __future__ import annotations

import logging
import random
from typing import Any

from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.url import ConnectionParams
from fastrpc.drivers.topology import ExchangeSpec, QueueSpec
from fastrpc.options import RABBIT_OPTIONS, Options

LOG = logging.getLogger(__name__)


def connection_params(conf: Options, url: Any) -> list[ConnectionParams]:
    """One ConnectionParams per host of the transport URL, in failover order."""
    vhost = url.virtual_host or "/" if url is not None else "/"
    use_ssl = bool(conf.ssl)
    heartbeat = int(conf.heartbeat_timeout_threshold or 0)  # 0: no heartbeat
    common: dict[str, Any] = {"virtual_host": vhost, "ssl": use_ssl, "heartbeat": heartbeat,
                              "blocked_timeout": float(conf.blocked_timeout),
                              "connection_name": f"{conf.processname}:fastrpc"}
    if use_ssl:
        # An empty path is no file.
        common["cafile"] = conf.ssl_ca_file or None
        common["certfile"] = conf.ssl_cert_file or None
        common["keyfile"] = conf.ssl_key_file or None
    hosts = list(getattr(url, "hosts", None) or [])
    if not hosts:
        return [ConnectionParams(**common)]
    result = []
    for host in hosts:
        values = dict(common)
        values["host"] = host.hostname or "localhost"
        values["port"] = host.port or (5671 if use_ssl else 5672)
        if host.username is not None:
            values["username"] = host.username
        if host.password is not None:
            values["password"] = host.password
        result.append(ConnectionParams(**values))
    return result


def open_connection(params: list[ConnectionParams], lost: Connection | None = None) -> Connection:
    """Connect to the first host that answers, in URL order.

    After ``lost`` (the previous connection of the same owner) failed, start
    with the host after its host: that one is likely down, and a host that
    hangs instead of refusing would cost a whole connect timeout on every
    reconnect (round robin, as oslo's default failover strategy).
    """
    if lost is not None:
        at = next((i for i, p in enumerate(params) if p.address == lost.params.address), None)
        if at is not None:
            params = params[at + 1:] + params[:at + 1]
    last: Exception | None = None
    refused: Exception | None = None
    for p in params:
        conn = Connection(p)
        try:
            conn.connect()
            return conn
        except amqp_exc.AMQPError as exc:
            LOG.warning("Cannot connect to %s: %s", p.address, exc)
            last = exc
            # A broker that said no to the login: no retry helps until someone
            # fixes the credentials or the virtual host.
            if isinstance(exc, amqp_exc.LoginRefused):
                refused = refused or exc
    # A broker that said no to the login says more than one that did not answer.
    raise refused or last  # type: ignore[misc]  # params is never empty


class Backoff:
    """Exponential reconnect delays with jitter (no synchronized storms)."""

    def __init__(self, conf: Options) -> None:
        # An interval or limit of 0 means the default; a backoff step of 0 means doubling.
        self.delay = float(conf.rabbit_retry_interval or RABBIT_OPTIONS["rabbit_retry_interval"])
        self.step = float(conf.rabbit_retry_backoff or 0)
        self.limit = float(conf.rabbit_interval_max or RABBIT_OPTIONS["rabbit_interval_max"])

    def next(self) -> float:
        delay = min(self.delay, self.limit)
        self.delay = min(self.delay + self.step, self.limit) if self.step else self.delay * 2
        return delay * random.uniform(0.5, 1.0)


def declare_exchange(ch: Any, ex: ExchangeSpec) -> None:
    ch.exchange_declare(ex.name, ex.type, durable=ex.durable, auto_delete=ex.auto_delete)


def declare_queue(ch: Any, q: QueueSpec) -> None:
    ch.queue_declare(q.name, durable=q.durable, auto_delete=q.auto_delete, exclusive=q.exclusive,
                     arguments=q.arguments)
