"""Options: plain-Python configuration with oslo.messaging's names and defaults.

``Options()`` gives the defaults; ``Options(conf)`` reads an oslo.config
``ConfigOpts`` (groups ``DEFAULT`` and ``oslo_messaging_rabbit``, plus
``fastrpc`` for fastrpc's own settings), keeping the default for any option the
application did not register; keyword arguments override both.

Every option is defined once, in ``OPTIONS``: its group, type, default and
bounds. The per-group dicts, what a transport URL may set, how URL text is
converted, what ``Options.validate`` checks and the oslo.config options of the
``[fastrpc]`` group (``fastrpc.oslo_driver``) all come from that table.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastrpc.amqp.spec import DEFAULT_MAX_MESSAGE_SIZE
from fastrpc.envelope import DEFAULT_MAX_BODY
from fastrpc.redact import mask_url


@dataclass(frozen=True)
class Opt:
    """One option: its oslo.config group, type, default and bounds.

    ``min`` and ``max`` are inclusive, as oslo.config's; ``kind`` is the type a
    value is converted to (from a URL's query string, and to check the bounds).
    """

    name: str
    default: Any
    group: str
    kind: type[Any]
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""
    unit: str = ""

    def bounds_text(self) -> str:
        """What a valid value is, for an error message."""
        unit = f" {self.unit}" if self.unit else ""
        if self.min is not None and self.max is not None:
            span = f"between {self.min} and {self.max}{unit}"
        elif self.min is not None:
            span = f"at least {self.min}{unit}"
        else:
            span = f"at most {self.max}{unit}"
        if self.kind is float and self.min is not None and self.min > 0:
            return f"a positive number{' of' + unit if unit else ''} ({span.removesuffix(unit)})"
        return span

    def check(self, value: Any) -> None:
        """Raise ValueError if ``value`` is not one of the choices or is outside the bounds."""
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {self.choices}, got {value!r}")
        if self.min is None and self.max is None:
            return
        try:
            number = self.kind(value)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{self.name} must be {self.bounds_text()}, got {value!r}") from None
        # NaN fails both comparisons, so it is refused; inf is above any max.
        if not ((self.min is None or number >= self.min) and (self.max is None or number <= self.max)):
            raise ValueError(f"{self.name} must be {self.bounds_text()}, got {value!r}")


_D, _R, _F = "DEFAULT", "oslo_messaging_rabbit", "fastrpc"

OPTIONS: tuple[Opt, ...] = (
    # [DEFAULT]: oslo.messaging registers these itself.
    Opt("transport_url", "rabbit://", _D, str),
    Opt("control_exchange", "openstack", _D, str),
    Opt("rpc_response_timeout", 60, _D, float, min=0.001, unit="seconds",
        help="Seconds a call waits for its reply when it names no timeout."),
    Opt("executor_thread_pool_size", 64, _D, int, min=1),
    Opt("rpc_ping_enabled", False, _D, bool),
    # [oslo_messaging_rabbit]: oslo's rabbit driver registers these (and
    # fastrpc's oslo driver registers oslo's own definitions). No bounds here:
    # Options accepts what oslo's config files accept and more (fractions of a
    # second for the reconnect delays, from a URL).
    Opt("rpc_conn_pool_size", 30, _R, int),
    Opt("conn_pool_min_size", 2, _R, int),
    Opt("conn_pool_ttl", 1200, _R, int),
    Opt("ssl", False, _R, bool),
    Opt("ssl_version", "", _R, str),
    Opt("ssl_key_file", "", _R, str),
    Opt("ssl_cert_file", "", _R, str),
    Opt("ssl_ca_file", "", _R, str),
    Opt("ssl_enforce_hostname_verification", True, _R, bool),
    Opt("ssl_enforce_fips_mode", False, _R, bool),
    Opt("kombu_reconnect_delay", 1.0, _R, float),
    Opt("kombu_reconnect_splay", 0.0, _R, float),
    Opt("kombu_compression", None, _R, str),
    Opt("kombu_missing_consumer_retry_timeout", 60, _R, int),
    Opt("kombu_failover_strategy", "round-robin", _R, str, choices=("round-robin", "shuffle")),
    Opt("rabbit_login_method", "AMQPLAIN", _R, str),
    # Reconnect delays in seconds: oslo takes whole seconds, fastrpc's backoff
    # also fractions (a URL may say rabbit_retry_interval=0.2). 0 means the
    # default interval and limit; a backoff of 0 means doubling.
    Opt("rabbit_retry_interval", 1, _R, float),
    Opt("rabbit_retry_backoff", 2, _R, float),
    Opt("rabbit_interval_max", 30, _R, float),
    Opt("rabbit_ha_queues", False, _R, bool),
    Opt("rabbit_quorum_queue", False, _R, bool),
    Opt("rabbit_transient_quorum_queue", False, _R, bool),
    Opt("rabbit_quorum_delivery_limit", 0, _R, int),
    Opt("rabbit_quorum_max_memory_length", 0, _R, int),
    Opt("rabbit_quorum_max_memory_bytes", 0, _R, int),
    Opt("rabbit_transient_queues_ttl", 1800, _R, int),
    Opt("rabbit_qos_prefetch_count", 0, _R, int),
    Opt("heartbeat_timeout_threshold", 60, _R, int),  # 0: no heartbeat
    Opt("heartbeat_rate", 3, _R, int),
    Opt("direct_mandatory_flag", True, _R, bool),
    Opt("enable_cancel_on_failover", False, _R, bool),
    Opt("use_queue_manager", False, _R, bool),
    Opt("hostname", socket.gethostname(), _R, str),
    Opt("processname", os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", _R, str),
    Opt("rabbit_stream_fanout", False, _R, bool),
    Opt("amqp_durable_queues", False, _R, bool),
    Opt("amqp_auto_delete", False, _R, bool),
    # [fastrpc]: fastrpc's own; fastrpc.oslo_driver registers them from here.
    Opt("serialization", "json", _F, str, choices=("json", "msgpack"),
        help="Body encoding of requests and replies. 'json' interoperates with oslo; 'msgpack' is "
             "faster but only fastrpc peers understand it; servers answer in the caller's encoding."),
    # Above the frame reader's limit (RabbitMQ's own) a body would end the
    # connection before the envelope sees it.
    Opt("max_message_size", DEFAULT_MAX_BODY, _F, int, min=1024, max=DEFAULT_MAX_MESSAGE_SIZE, unit="bytes",
        help="Largest message body sent or accepted, in bytes: larger requests are refused before "
             "they are sent, larger ones received are rejected, and a reply that would be larger "
             "becomes an error reply. At most RabbitMQ's own limit."),
    Opt("blocked_timeout", 60.0, _F, float, min=0.001, max=threading.TIMEOUT_MAX, unit="seconds",
        help="Seconds a cast or a reply waits while the broker blocks publishing (memory or disk "
             "alarm) before it fails with MessageDeliveryFailure; a call waits up to its own "
             "timeout instead (MessagingTimeout)."),
    Opt("probe_after", 3.0, _F, float, min=0.0, max=threading.TIMEOUT_MAX, unit="seconds",
        help="Liveness probe: while a call, a confirm or a consumer waits on a connection and the "
             "broker has been silent this long, a cheap round trip asks whether it still answers, "
             "whatever heartbeat_timeout_threshold says. 0 turns probes off."),
    Opt("probe_timeout", 4.0, _F, float, min=0.001, max=threading.TIMEOUT_MAX, unit="seconds",
        help="Seconds a liveness probe waits for the broker's answer before the connection is "
             "abandoned and its users fail over."),
    Opt("tcp_user_timeout", 10.0, _F, float, min=0.0, max=threading.TIMEOUT_MAX, unit="seconds",
        help="The kernel drops a connection whose sent data the broker leaves unacknowledged this "
             "long (TCP_USER_TIMEOUT, and keepalive on an idle one): a cut-off host. 0 keeps the "
             "kernel's defaults."),
    Opt("metrics", False, _F, bool,
        help="Count calls, casts, replies, timeouts, reconnects and more in this process's metrics "
             "registry (fastrpc.metrics), for the whole process."),
    Opt("metrics_port", 0, _F, int, min=0, max=65535,
        help="Serve this process's metrics to Prometheus on this TCP port (needs the fastrpc[metrics] "
             "extra; turns metrics on). 0: no exporter."),
    Opt("tracing", False, _F, bool,
        help="Trace calls, casts and the requests fastrpc's RPC servers run with OpenTelemetry (needs the "
             "fastrpc[otel] extra; spans go to the tracer provider the application set up)."),
    Opt("metrics_host", "127.0.0.1", _F, str,
        help="Address the metrics exporter listens on (metrics_port); 0.0.0.0 or :: to be scraped from "
             "other hosts."),
)

OPTIONS_BY_NAME: dict[str, Opt] = {opt.name: opt for opt in OPTIONS}


def _defaults(group: str) -> dict[str, Any]:
    return {opt.name: opt.default for opt in OPTIONS if opt.group == group}


# name -> default, per oslo.config group.
DEFAULT_OPTIONS: dict[str, Any] = _defaults(_D)
RABBIT_OPTIONS: dict[str, Any] = _defaults(_R)
FASTRPC_OPTIONS: dict[str, Any] = _defaults(_F)

GROUPS: dict[str, dict[str, Any]] = {
    "DEFAULT": DEFAULT_OPTIONS,
    "oslo_messaging_rabbit": RABBIT_OPTIONS,
    "fastrpc": FASTRPC_OPTIONS,
}

_ALL: dict[str, Any] = {opt.name: opt.default for opt in OPTIONS}
_CHECKED: tuple[Opt, ...] = tuple(o for o in OPTIONS if o.choices is not None or o.min is not None
                                  or o.max is not None)
# What a transport URL's query string may set, as oslo lets it set the
# driver's group: the broker options, not the service-wide ones.
URL_OPTIONS: dict[str, Any] = {**RABBIT_OPTIONS, **FASTRPC_OPTIONS}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

LOG = logging.getLogger(__name__)


def _mask(url: Any) -> Any:
    return mask_url(url) if isinstance(url, str) else url


def _from_text(name: str, text: str) -> Any:
    """A query-string value as the option's type."""
    kind = OPTIONS_BY_NAME[name].kind
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"option {name} takes a boolean (true/false, 1/0, yes/no, on/off), got {text!r}")
    if kind is float:
        what = "a number"
    elif kind is int:
        what = "an integer"
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
    probe_after: float
    probe_timeout: float
    tcp_user_timeout: float
    metrics: bool
    metrics_port: int
    metrics_host: str
    tracing: bool

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
        """Raise ValueError for values fastrpc cannot work with (the table's choices and bounds)."""
        for opt in _CHECKED:
            opt.check(getattr(self, opt.name))

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
