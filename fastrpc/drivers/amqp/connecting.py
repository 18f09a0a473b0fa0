"""From options and a transport URL to an open connection: connection
parameters per host, the order hosts are tried in, reconnect delays, and the
two declarations every connection owner makes."""

from __future__ import annotations

import logging
import random
import threading
import time
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
                              "probe_after": float(conf.probe_after),
                              "probe_timeout": float(conf.probe_timeout),
                              "tcp_user_timeout": float(conf.tcp_user_timeout),
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


class HostOrder:
    """The order one connection owner tries the hosts in
    (``kombu_failover_strategy``).

    ``round-robin`` starts at the URL's first host; ``shuffle`` starts each
    owner at a random host, so the clients of a fleet spread over the
    cluster instead of all landing on the first node and, after it dies, all
    on the second. After a loss both try the host after the lost one first
    (at once: it is likely up), then the others, wrapping around.
    """

    def __init__(self, params: list[ConnectionParams], strategy: str = "round-robin") -> None:
        self.params = list(params)
        if strategy == "shuffle":
            random.shuffle(self.params)
        elif strategy != "round-robin":
            raise ValueError(f"kombu_failover_strategy must be 'round-robin' or 'shuffle', not {strategy!r}")

    def after(self, lost: Connection | None) -> list[ConnectionParams]:
        """Hosts to try, in order, after ``lost`` (None: the first connect)."""
        params = self.params
        if lost is not None:
            at = next((i for i, p in enumerate(params) if p.address == lost.params.address), None)
            if at is not None:
                return params[at + 1:] + params[:at + 1]
        return list(params)


class AttemptPacer:
    """At most ``rate`` failed connection attempts per second in a process.

    A token bucket of ``rate`` tokens: each attempt takes one, and gets it back
    when it connects, so a healthy start (many listeners at once) is never
    slowed, while an outage cannot make a process hammer the brokers
    whatever its number of connections and caller threads.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = rate
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self, deadline: float | None) -> bool:
        """Wait for a token; False when none comes before ``deadline``."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return True
                wait = (1 - self._tokens) / self.rate
            if deadline is not None and now + wait > deadline:
                return False
            time.sleep(wait)

    def give_back(self) -> None:
        with self._lock:
            self._tokens = min(self.rate, self._tokens + 1)


MAX_ATTEMPTS_PER_SECOND = 5.0
PACER = AttemptPacer(MAX_ATTEMPTS_PER_SECOND)


def open_connection(params: list[ConnectionParams] | HostOrder, lost: Connection | None = None,
                    deadline: float | None = None) -> Connection:
    """Connect to the first host that answers: each host once, in the order
    ``params`` gives after ``lost`` (the owner's previous connection: its host
    is likely down, and one that hangs instead of refusing would cost a whole
    connect timeout on every reconnect), each attempt bounded by
    ``connect_timeout`` and ``deadline``, and paced process-wide (PACER).
    """
    order = params if isinstance(params, HostOrder) else HostOrder(params)
    last: Exception | None = None
    refused: Exception | None = None
    for p in order.after(lost):
        if not PACER.take(deadline):
            last = last or amqp_exc.HandshakeTimeout(f"no time left to connect to {p.address}")
            break
        conn = Connection(p)
        try:
            conn.connect(deadline)
        except amqp_exc.AMQPError as exc:
            LOG.debug("Cannot connect to %s: %s", p.address, exc)
            last = exc
            # A broker that said no to the login: no retry helps until someone
            # fixes the credentials or the virtual host.
            if isinstance(exc, amqp_exc.LoginRefused):
                refused = refused or exc
            continue
        PACER.give_back()
        return conn
    # A broker that said no to the login says more than one that did not answer.
    raise refused or last  # type: ignore[misc]  # params is never empty


class Backoff:
    """Reconnect delays: exponential with full jitter, so the clients of a
    lost node do not come back in step.

    The ceiling starts at ``rabbit_retry_interval`` and grows each time by
    ``rabbit_retry_backoff`` or doubles, whichever is more, up to
    ``rabbit_interval_max``; each delay is uniform between 0 and the ceiling.
    The first delay after a loss is 0: the next host is tried at once.
    """

    def __init__(self, conf: Options) -> None:
        # An interval or limit of 0 means the default.
        self.ceiling = float(conf.rabbit_retry_interval or RABBIT_OPTIONS["rabbit_retry_interval"])
        self.step = float(conf.rabbit_retry_backoff or 0)
        self.limit = float(conf.rabbit_interval_max or RABBIT_OPTIONS["rabbit_interval_max"])
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next attempt."""
        self.attempts += 1
        if self.attempts == 1:
            return 0.0
        ceiling = min(self.ceiling, self.limit)
        self.ceiling = min(max(self.ceiling * 2, self.ceiling + self.step), self.limit)
        return random.uniform(0.0, ceiling)


def declare_exchange(ch: Any, ex: ExchangeSpec, timeout: float | None = None) -> None:
    ch.exchange_declare(ex.name, ex.type, durable=ex.durable, auto_delete=ex.auto_delete, timeout=timeout)


def declare_queue(ch: Any, q: QueueSpec, timeout: float | None = None) -> None:
    ch.queue_declare(q.name, durable=q.durable, auto_delete=q.auto_delete, exclusive=q.exclusive,
                     arguments=q.arguments, timeout=timeout)
