"""Connection parameters and amqp:// / amqps:// URL parsing.

``ConnectionParams`` is the single description of where and how to connect.
Its ``repr`` and ``str`` never contain the password, so it can be logged and
put into exception messages freely.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from fastrpc.amqp import spec

DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671

_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,40}")
_TRUE = frozenset({"1", "true", "yes", "on", "required"})
_FALSE = frozenset({"0", "false", "no", "off", "none"})


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"option {name!r}: expected a boolean, got {value!r}")


@dataclass(frozen=True)
class ConnectionParams:
    """Everything needed to open one AMQP connection."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    username: str = "guest"
    password: str = field(default="guest", repr=False)
    virtual_host: str = "/"
    ssl: bool = False
    # TLS: CA bundle (None = system store), client certificate, verification.
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    verify: bool = True
    # Name checked against the broker's certificate (default: host).
    server_hostname: str | None = None
    # "PLAIN" (username/password) or "EXTERNAL" (client certificate).
    auth_mechanism: str = "PLAIN"
    heartbeat: int = 60
    connection_name: str | None = None
    connect_timeout: float = 10.0
    frame_max: int = spec.DEFAULT_FRAME_MAX
    channel_max: int = 2047
    # Default wait for synchronous methods (declare, bind, ...).
    operation_timeout: float = 30.0
    # How long a publisher waits while the broker has blocked the connection.
    blocked_timeout: float = 60.0
    # Liveness probe: while something waits on the broker (a reply, a
    # confirm, a consumer's deliveries) and it has been silent this long, a
    # cheap round trip asks whether it is still there; no answer within
    # probe_timeout ends the connection. 0 turns probing off.
    probe_after: float = 3.0
    probe_timeout: float = 4.0
    # Kernel bound (TCP_USER_TIMEOUT, keepalive) on data the peer leaves
    # unacknowledged: a blackholed broker is dropped after this; 0 = kernel default.
    tcp_user_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if self.heartbeat < 0 or self.heartbeat > 65535:
            raise ValueError(f"heartbeat out of range: {self.heartbeat}")
        if self.frame_max != 0 and self.frame_max < spec.MIN_FRAME_MAX:
            raise ValueError(f"frame_max must be at least {spec.MIN_FRAME_MAX}")
        if not 0 <= self.channel_max <= 65535:
            raise ValueError(f"channel_max out of range: {self.channel_max}")
        for name in ("connect_timeout", "operation_timeout", "blocked_timeout"):
            # Finite and within what a thread can wait for (NaN, inf and
            # huge values would fail or spin in the waits).
            if not 0 < getattr(self, name) <= threading.TIMEOUT_MAX:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)!r}")
        for name in ("probe_after", "probe_timeout", "tcp_user_timeout"):
            if not 0 <= getattr(self, name) <= threading.TIMEOUT_MAX:
                raise ValueError(f"{name} must be 0 or a positive number of seconds, got {getattr(self, name)!r}")
        if self.probe_after and not self.probe_timeout:
            raise ValueError("probe_timeout must be positive while probe_after is")
        if self.auth_mechanism.upper() not in ("PLAIN", "EXTERNAL"):
            raise ValueError(f"unsupported auth_mechanism: {self.auth_mechanism!r}")

    def replace(self, **changes: Any) -> ConnectionParams:
        """A copy with some fields changed (unknown names raise TypeError)."""
        return dataclasses.replace(self, **changes)

    @property
    def address(self) -> str:
        """host:port for messages, with IPv6 literals bracketed."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def to_url(self, *, hide_password: bool = True) -> str:
        scheme = "amqps" if self.ssl else "amqp"
        password = "***" if hide_password else quote(self.password, safe="")
        vhost = quote(self.virtual_host, safe="")
        return f"{scheme}://{quote(self.username, safe='')}:{password}@{self.address}/{vhost}"

    def __str__(self) -> str:
        return self.to_url()


# URL query option -> (field name, converter)
_OPTIONS: dict[str, tuple[str, Any]] = {
    "heartbeat": ("heartbeat", int),
    "connection_timeout": ("connect_timeout", float),
    "connect_timeout": ("connect_timeout", float),
    "frame_max": ("frame_max", int),
    "channel_max": ("channel_max", int),
    "connection_name": ("connection_name", str),
    "cafile": ("cafile", str),
    "certfile": ("certfile", str),
    "keyfile": ("keyfile", str),
    "verify": ("verify", "bool"),
    "server_hostname": ("server_hostname", str),
    "auth_mechanism": ("auth_mechanism", str),
    "operation_timeout": ("operation_timeout", float),
    "blocked_timeout": ("blocked_timeout", float),
    "probe_after": ("probe_after", float),
    "probe_timeout": ("probe_timeout", float),
    "tcp_user_timeout": ("tcp_user_timeout", float),
}


def parse_url(url: str, **overrides: Any) -> ConnectionParams:
    """Parse ``amqp[s]://user:pass@host:port/vhost?option=value``.

    User, password and vhost are percent-decoded; an empty path means the
    default vhost "/", and "%2F" spells "/" explicitly. Unknown query options
    raise ValueError (a typo should not silently change behaviour).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # Never echo the URL or urllib's message: both may contain the password.
        raise ValueError("malformed AMQP URL (bad host or port)") from None
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        # User info cut short by an unencoded '/', '?' or '#' in the password:
        # whatever follows is part of a secret, so none of it is echoed.
        raise ValueError(
            "malformed AMQP URL: '@' after the host (percent-encode '/', '?', '#' and '@' in user and password)"
        )
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} (expected amqp or amqps)")
    tls = scheme == "amqps"
    values: dict[str, Any] = {
        "ssl": tls,
        "host": parts.hostname or "127.0.0.1",
        "port": port if port is not None else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
    }
    if parts.username is not None:
        values["username"] = unquote(parts.username)
    if parts.password is not None:
        values["password"] = unquote(parts.password)
    path = parts.path
    if path in ("", "/"):
        values["virtual_host"] = "/"
    else:
        values["virtual_host"] = unquote(path[1:])
    for key, raw in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            # Echo only names that look like option names, never free text.
            shown = repr(key) if _OPTION_NAME.fullmatch(key) else "(name not shown)"
            raise ValueError(f"unknown AMQP URL option {shown}")
        name, conv = _OPTIONS[key]
        try:
            values[name] = _to_bool(key, raw) if conv == "bool" else conv(raw)
        except ValueError:
            raise ValueError(f"option {key!r}: invalid value {raw!r}") from None
    values.update(overrides)
    return ConnectionParams(**values)


def make_params(params_or_url: ConnectionParams | str | None = None, **overrides: Any) -> ConnectionParams:
    """Accept a URL, a ConnectionParams or nothing, and apply overrides."""
    if params_or_url is None:
        return ConnectionParams(**overrides)
    if isinstance(params_or_url, str):
        return parse_url(params_or_url, **overrides)
    if isinstance(params_or_url, ConnectionParams):
        return params_or_url.replace(**overrides) if overrides else params_or_url
    raise TypeError(f"expected a URL or ConnectionParams, got {type(params_or_url).__name__}")
