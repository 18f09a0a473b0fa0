"""Transport URLs.

``driver://[user:pass@]host:port[,[userN:passN@]hostN:portN]/virtual_host?query``

The password never appears in ``str()`` or ``repr()`` of these objects.
"""

from __future__ import annotations

from typing import Any
from urllib import parse

from fastrpc.exceptions import InvalidTransportURL
from fastrpc.options import Options
from fastrpc.redact import MASK, mask_url

__all__ = ["TransportHost", "TransportURL"]


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
