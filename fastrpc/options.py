"""Options: plain-Python configuration with oslo.messaging's names and defaults.

``Options()`` gives the defaults; ``Options(conf)`` reads an oslo.config
``ConfigOpts`` (groups ``DEFAULT`` and ``oslo_messaging_rabbit``, plus
``fastrpc`` for fastrpc's own settings), keeping the default for any option the
application did not register; keyword arguments override both.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

from fastrpc.amqp.spec import DEFAULT_MAX_MESSAGE_SIZE
from fastrpc.envelope_py import DEFAULT_MAX_BODY
from fastrpc.redact import mask_url

# name -> default, per oslo.config group.
DEFAULT_OPTIONS: dict[str, Any] = {
    "transport_url": "rabbit://",
    "control_exchange": "openstack",
    "rpc_response_timeout": 60,
    "executor_thread_pool_size": 64,
    "rpc_ping_enabled": False,
}

RABBIT_OPTIONS: dict[str, Any] = {
    "rpc_conn_pool_size": 30,
    "conn_pool_min_size": 2,
    "conn_pool_ttl": 1200,
    "ssl": False,
    "ssl_version": "",
    "ssl_key_file": "",
    "ssl_cert_file": "",
    "ssl_ca_file": "",
    "ssl_enforce_hostname_verification": True,
    "ssl_enforce_fips_mode": False,
    "kombu_reconnect_delay": 1.0,
    "kombu_reconnect_splay": 0.0,
    "kombu_compression": None,
    "kombu_missing_consumer_retry_timeout": 60,
    "kombu_failover_strategy": "round-robin",
    "rabbit_login_method": "AMQPLAIN",
    "rabbit_retry_interval": 1,
    "rabbit_retry_backoff": 2,
    "rabbit_interval_max": 30,
    "rabbit_ha_queues": False,
    "rabbit_quorum_queue": False,
    "rabbit_transient_quorum_queue": False,
    "rabbit_quorum_delivery_limit": 0,
    "rabbit_quorum_max_memory_length": 0,
    "rabbit_quorum_max_memory_bytes": 0,
    "rabbit_transient_queues_ttl": 1800,
    "rabbit_qos_prefetch_count": 0,
    "heartbeat_timeout_threshold": 60,
    "heartbeat_rate": 3,
    "direct_mandatory_flag": True,
    "enable_cancel_on_failover": False,
    "use_queue_manager": False,
    "hostname": socket.gethostname(),
    "processname": os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python",
    "rabbit_stream_fanout": False,
    "amqp_durable_queues": False,
    "amqp_auto_delete": False,
}

FASTRPC_OPTIONS: dict[str, Any] = {
    # Body encoding inside the oslo envelope: 'json' interoperates with oslo,
    # 'msgpack' is faster but only fastrpc peers understand it.
    "serialization": "json",
    # Largest message body accepted, in bytes: larger requests are refused
    # before they are sent, larger ones received are rejected, and a reply
    # that would be larger becomes an error reply.
    "max_message_size": DEFAULT_MAX_BODY,
    # Seconds a cast (or a server's reply) waits while the broker blocks
    # publishing (a memory or disk alarm) before it fails with
    # MessageDeliveryFailure; a call waits up to its own timeout instead
    # (MessagingTimeout).
    "blocked_timeout": 60.0,
}

GROUPS: dict[str, dict[str, Any]] = {
    "DEFAULT": DEFAULT_OPTIONS,
    "oslo_messaging_rabbit": RABBIT_OPTIONS,
    "fastrpc": FASTRPC_OPTIONS,
}

_ALL: dict[str, Any] = {**DEFAULT_OPTIONS, **RABBIT_OPTIONS, **FASTRPC_OPTIONS}
_SERIALIZATIONS = ("json", "msgpack")
# What a transport URL's query string may set, as oslo lets it set the
# driver's group: the broker options, not the service-wide ones.
URL_OPTIONS: dict[str, Any] = {**RABBIT_OPTIONS, **FASTRPC_OPTIONS}
# Reconnect delays in seconds: oslo takes whole seconds, fastrpc's backoff
# also fractions (a URL may say rabbit_retry_interval=0.2).
_FRACTIONAL = ("rabbit_retry_interval", "rabbit_retry_backoff", "rabbit_interval_max")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

LOG = logging.getLogger(__name__)


def _mask(url: Any) -> Any:
    return mask_url(url) if isinstance(url, str) else url


def _from_text(name: str, text: str) -> Any:
    """A query-string value as the option's type (that of its default)."""
    default = URL_OPTIONS[name]
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"option {name} takes a boolean (true/false, 1/0, yes/no, on/off), got {text!r}")
    kind: type
    if name in _FRACTIONAL or isinstance(default, float):
        kind, what = float, "a number"
    elif isinstance(default, int):
        kind, what = int, "an integer"
    else:
        return text
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"option {name} takes {what}, got {text!r}") from None


def _read_conf(conf: Any, group: str, name: str) -> tuple[bool, Any]:
    """Return (found, value) for one option of an oslo.config object."""
    try:
        source = conf if group == "DEFAULT" else getattr(conf, group)
        return True, getattr(source, name)
    except Exception:  # noqa: BLE001 - unregistered option or group: keep our default
        return False, None


class Options:
    """Every setting fastrpc reads, as plain attributes.

    ``conf.oslo_messaging_rabbit.<name>`` also works (it is this object), so code
    written against oslo.config's layout reads an ``Options`` unchanged.
    """

    transport_url: str
    control_exchange: str
    rpc_response_timeout: float
    executor_thread_pool_size: int
    rpc_ping_enabled: bool
    rpc_conn_pool_size: int
    conn_pool_min_size: int
    conn_pool_ttl: int
    ssl: bool
    ssl_version: str
    ssl_key_file: str
    ssl_cert_file: str
    ssl_ca_file: str
    ssl_enforce_hostname_verification: bool
    ssl_enforce_fips_mode: bool
    kombu_reconnect_delay: float
    kombu_reconnect_splay: float
    kombu_compression: str | None
    kombu_missing_consumer_retry_timeout: int
    kombu_failover_strategy: str
    rabbit_login_method: str
    rabbit_retry_interval: int
    rabbit_retry_backoff: int
    rabbit_interval_max: int
    rabbit_ha_queues: bool
    rabbit_quorum_queue: bool
    rabbit_transient_quorum_queue: bool
    rabbit_quorum_delivery_limit: int
    rabbit_quorum_max_memory_length: int
    rabbit_quorum_max_memory_bytes: int
    rabbit_transient_queues_ttl: int
    rabbit_qos_prefetch_count: int
    heartbeat_timeout_threshold: int
    heartbeat_rate: int
    direct_mandatory_flag: bool
    enable_cancel_on_failover: bool
    use_queue_manager: bool
    hostname: str
    processname: str
    rabbit_stream_fanout: bool
    amqp_durable_queues: bool
    amqp_auto_delete: bool
    serialization: str
    max_message_size: int
    blocked_timeout: float

    def __init__(self, conf: Any = None, **overrides: Any) -> None:
        unknown = set(overrides) - set(_ALL)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        for name, default in _ALL.items():
            setattr(self, name, default)
        if conf is not None:
            if isinstance(conf, Options):
                for name in _ALL:
                    setattr(self, name, getattr(conf, name))
            else:
                for group, options in GROUPS.items():
                    for name in options:
                        found, value = _read_conf(conf, group, name)
                        if found:
                            setattr(self, name, value)
        for name, value in overrides.items():
            setattr(self, name, value)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for values fastrpc cannot work with."""
        if self.serialization not in _SERIALIZATIONS:
            raise ValueError(f"serialization must be one of {_SERIALIZATIONS}, got {self.serialization!r}")
        if int(self.executor_thread_pool_size) < 1:
            raise ValueError("executor_thread_pool_size must be at least 1")
        if float(self.rpc_response_timeout) <= 0:
            raise ValueError("rpc_response_timeout must be positive")
        if not 0 < float(self.blocked_timeout) <= threading.TIMEOUT_MAX:  # NaN and inf too
            raise ValueError(f"blocked_timeout must be a positive number of seconds, got {self.blocked_timeout!r}")
        # Above the frame reader's limit a body ends the connection before the envelope sees it.
        if not 1024 <= int(self.max_message_size) <= DEFAULT_MAX_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be between 1024 and {DEFAULT_MAX_MESSAGE_SIZE} bytes "
                             f"(RabbitMQ's own limit), got {self.max_message_size!r}")

    @classmethod
    def coerce(cls, conf: Any = None) -> Options:
        """Return ``conf`` itself if it is an Options, else Options built from it."""
        if isinstance(conf, Options):
            return conf
        return cls(conf)

    def with_url_query(self, query: Mapping[str, str]) -> Options:
        """Return a copy with the broker options a transport URL's query string sets.

        ``rabbit://host/?heartbeat_timeout_threshold=10&ssl=true`` overrides
        those two options of the ``oslo_messaging_rabbit`` (and ``fastrpc``)
        group, as with oslo. Values are converted to the option's type; a bad
        value raises ValueError. Other keys are logged and ignored.
        """
        if not query:
            return self
        values = {name: _from_text(name, text) for name, text in query.items() if name in URL_OPTIONS}
        ignored = sorted(set(query) - set(values))
        if ignored:
            LOG.warning("Transport URL option(s) not known to fastrpc, ignored: %s", ", ".join(ignored))
        return self.replace(**values) if values else self

    def replace(self, **overrides: Any) -> Options:
        """Return a copy with some values changed."""
        return Options(self, **overrides)

    @property
    def oslo_messaging_rabbit(self) -> Options:
        return self

    @property
    def fastrpc(self) -> Options:
        return self

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ALL}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Options):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.as_dict().items() if v != _ALL[k]}
        if "transport_url" in changed:
            changed["transport_url"] = _mask(changed["transport_url"])
        body = ", ".join(f"{k}={v!r}" for k, v in sorted(changed.items()))
        return f"<Options {body}>"
