"""Transports and transport URLs.

``driver://[user:pass@]host:port[,[userN:passN@]hostN:portN]/virtual_host?query``

The password never appears in ``str()`` or ``repr()`` of these objects.
"""

from __future__ import annotations

from typing import Any
from urllib import parse

from fastrpc.drivers import get_driver_class
from fastrpc.drivers.base import BaseDriver, Listener
from fastrpc.exceptions import InvalidTarget, InvalidTransportURL
from fastrpc.options import Options
from fastrpc.target import Target

__all__ = [
    "TransportHost", "TransportURL", "Transport", "RPCTransport",
    "get_transport", "get_rpc_transport", "mask_url",
]

MASK = "****"


def _parse_host_port(text: str, url: str) -> tuple[str | None, int | None]:
    """Split ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise InvalidTransportURL(url, "Unterminated IPv6 address in URL")
        host = text[1:end]
        rest = text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise InvalidTransportURL(url, "Invalid characters after IPv6 address in URL")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":", 1)
    else:
        host = text  # plain name or a bare IPv6 address (no port)
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise InvalidTransportURL(url, "Invalid port in URL")
        port = int(port_text)
    return (host or None), port


class TransportHost:
    """One broker address of a transport URL."""

    def __init__(self, hostname: str | None = None, port: int | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.hostname = hostname
        self.port = port
        self.username = username
        self.password = password

    def _key(self) -> tuple[Any, ...]:
        return (self.hostname, self.port, self.username, self.password)

    def __hash__(self) -> int:
        return hash(self._key())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransportHost):
            return NotImplemented
        return self._key() == other._key()

    def __repr__(self) -> str:
        attrs = []
        for name in ("hostname", "port", "username"):
            value = getattr(self, name)
            if value:
                attrs.append(f"{name}={value!r}")
        if self.password:
            attrs.append(f"password='{MASK}'")
        return "<TransportHost " + ", ".join(attrs) + ">"

    def netloc(self, hide_password: bool = True) -> str:
        """``user:pass@host:port`` with quoting; the password masked unless asked."""
        netloc = ""
        if self.username is not None or self.password is not None:
            if self.username is not None:
                netloc += parse.quote(self.username, "")
            if self.password is not None:
                netloc += ":" + (MASK if hide_password else parse.quote(self.password, ""))
            netloc += "@"
        if self.hostname:
            netloc += f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        if self.port is not None:
            netloc += f":{self.port}"
        return netloc


class TransportURL:
    """A parsed transport URL: scheme, hosts, virtual host and query options."""

    def __init__(self, conf: Any = None, transport: str | None = None,
                 virtual_host: str | None = None, hosts: list[TransportHost] | None = None,
                 query: dict[str, str] | None = None) -> None:
        self.conf = Options.coerce(conf)
        self.transport = transport
        self.virtual_host = virtual_host
        self.hosts: list[TransportHost] = list(hosts) if hosts is not None else []
        self.query: dict[str, str] = dict(query) if query is not None else {}

    def __hash__(self) -> int:
        return hash((tuple(self.hosts), self.transport, self.virtual_host))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransportURL):
            return NotImplemented
        return (self.transport == other.transport and self.virtual_host == other.virtual_host
                and self.hosts == other.hosts)

    def __repr__(self) -> str:
        attrs = []
        for name in ("transport", "virtual_host", "hosts"):
            value = getattr(self, name)
            if value:
                attrs.append(f"{name}={value!r}")
        return "<TransportURL " + ", ".join(attrs) + ">"

    def format(self, hide_password: bool = True) -> str:
        """The URL as text; only ``hide_password=False`` reveals passwords."""
        netlocs = ",".join(host.netloc(hide_password) for host in self.hosts)
        url = f"{self.transport}://{netlocs}/"
        if self.virtual_host:
            url += parse.quote(self.virtual_host)
        if self.query:
            url += "?" + parse.urlencode(self.query, doseq=True)
        return url

    def __str__(self) -> str:
        return self.format(hide_password=True)

    @property
    def driver_name(self) -> str:
        """The scheme without any ``+variant`` suffix."""
        return (self.transport or "").split("+")[0]

    @classmethod
    def parse(cls, conf: Any = None, url: str | None = None) -> TransportURL:
        """Parse ``url``, or ``conf.transport_url`` when ``url`` is empty."""
        options = Options.coerce(conf)
        text = url or options.transport_url
        if not isinstance(text, str):
            raise InvalidTransportURL(None, "Wrong URL type")
        try:
            parsed = parse.urlparse(text)
        except ValueError as exc:
            raise InvalidTransportURL(text, f"Malformed URL: {exc}") from None
        if not parsed.scheme or "://" not in text:
            raise InvalidTransportURL(text, "No scheme specified")

        query: dict[str, str] = {}
        if parsed.query:
            for key, values in parse.parse_qs(parsed.query).items():
                query[key] = ",".join(values)

        virtual_host = None
        if parsed.path.startswith("/"):
            virtual_host = parse.unquote(parsed.path[1:])

        hosts = []
        for item in parsed.netloc.split(","):
            if not item:
                continue
            hostport = item
            username = password = None
            if "@" in item:
                # rsplit: a SASL user name may itself contain one '@'
                userinfo, hostport = item.rsplit("@", 1)
                if ":" in userinfo:
                    userinfo, password = userinfo.split(":", 1)
                    password = parse.unquote(password)
                username = parse.unquote(userinfo)
            hostname, port = _parse_host_port(hostport, mask_url(text))
            hosts.append(TransportHost(hostname=hostname, port=port, username=username,
                                       password=password))
        return cls(options, parsed.scheme, virtual_host, hosts, query)


def mask_url(url: str) -> str:
    """Return ``url`` with every password replaced by ``****``.

    Made for malformed URLs too: a password holding an unencoded '/', '?',
    '#' or ',' must not survive, so the authority runs to the first '/'
    after the last '@' (over-masking a strange URL beats leaking a secret).
    """
    try:
        scheme, rest = url.split("://", 1)
    except ValueError:
        return url
    last_at = rest.rfind("@")
    if last_at < 0:
        return url  # no user info, nothing to hide
    slash = rest.find("/", last_at)
    if slash < 0:
        netloc, tail = rest, ""
    else:
        netloc, tail = rest[:slash], rest[slash:]
    items = netloc.split(",")
    last_credentialed = max(i for i, item in enumerate(items) if "@" in item)
    masked = []
    in_secret = False  # inside a password that an unencoded ',' cut apart
    for index, item in enumerate(items):
        if "@" in item:
            userinfo, hostport = item.rsplit("@", 1)
            if in_secret:
                userinfo = MASK
            elif ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":" + MASK
            item = f"{userinfo}@{hostport}"
            in_secret = False
        elif in_secret:
            item = MASK
        elif index < last_credentialed and ":" in item and not item.rsplit(":", 1)[1].isdigit():
            # Before a later user info and not host:port: the start of a
            # password cut at a ','; the rest up to the next '@' is secret too.
            item = item.split(":", 1)[0] + ":" + MASK
            in_secret = True
        masked.append(item)
    return f"{scheme}://{','.join(masked)}{tail}"


class TransportOptions:
    """Per-client sending options (oslo's name). ``at_least_once``: publish
    requests mandatory and with a broker confirm, so that one no queue takes
    raises MessageUndeliverable instead of being dropped."""

    def __init__(self, at_least_once: bool = False) -> None:
        self._at_least_once = bool(at_least_once)

    @property
    def at_least_once(self) -> bool:
        return self._at_least_once

    def __repr__(self) -> str:
        return f"TransportOptions(at_least_once={self._at_least_once})"


class Transport:
    """A handle on a driver; what clients and servers are built from."""

    def __init__(self, driver: BaseDriver) -> None:
        self.conf: Options = driver.conf
        self._driver = driver

    def _send(self, target: Target, ctxt: dict, message: dict, wait_for_reply: bool = False,
              timeout: float | None = None, call_monitor_timeout: float | None = None,
              retry: int | None = None, at_least_once: bool = False) -> Any:
        if not target.topic:
            raise InvalidTarget("A topic is required to send", target)
        return self._driver.send(target, ctxt, message, wait_for_reply=wait_for_reply,
                                 timeout=timeout, call_monitor_timeout=call_monitor_timeout,
                                 retry=retry, at_least_once=at_least_once)

    def _listen(self, target: Target, batch_size: int = 1,
                batch_timeout: float | None = None) -> Listener:
        if not (target.topic and target.server):
            raise InvalidTarget("A server's target must have topic and server names specified", target)
        return self._driver.listen(target, batch_size, batch_timeout)

    def cleanup(self) -> None:
        """Release every resource of the transport (connections, threads)."""
        self._driver.cleanup()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._driver.url}>"


class RPCTransport(Transport):
    """A transport used for RPC."""


def _get_transport(conf: Any, url: str | TransportURL | None,
                   allowed_remote_exmods: list[str] | None,
                   transport_cls: type[Transport]) -> Transport:
    options = Options.coerce(conf)
    parsed = url if isinstance(url, TransportURL) else TransportURL.parse(options, url)
    try:
        options = options.with_url_query(parsed.query)
    except ValueError as exc:
        raise InvalidTransportURL(str(parsed), f"Invalid option in URL: {exc}") from None
    driver_cls = get_driver_class(parsed.driver_name)
    driver = driver_cls(options, parsed, default_exchange=options.control_exchange,
                        allowed_remote_exmods=list(allowed_remote_exmods or []))
    return transport_cls(driver)


def get_rpc_transport(conf: Any = None, url: str | TransportURL | None = None,
                      allowed_remote_exmods: list[str] | None = None) -> RPCTransport:
    """Build an RPC transport from options (or an oslo.config object) and a URL.

    ``allowed_remote_exmods`` lists the modules whose exceptions a caller may
    rebuild from a remote failure (builtins always are).
    """
    transport = _get_transport(conf, url, allowed_remote_exmods, RPCTransport)
    assert isinstance(transport, RPCTransport)
    return transport


def get_transport(conf: Any = None, url: str | TransportURL | None = None,
                  allowed_remote_exmods: list[str] | None = None) -> Transport:
    """Same as :func:`get_rpc_transport` (oslo's older name)."""
    return _get_transport(conf, url, allowed_remote_exmods, RPCTransport)
