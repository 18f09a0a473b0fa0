"""Target: where a message goes, or what a server listens for."""

from __future__ import annotations

from typing import Any

_FIELDS = ("exchange", "topic", "namespace", "version", "server", "fanout")


class Target:
    """Identifies the destination of messages.

    A client needs ``topic``; a server needs ``topic`` and ``server``; an
    endpoint uses ``namespace`` and ``version``. ``legacy_namespaces`` lets a
    server accept older namespace names during a rolling upgrade.
    """

    def __init__(self, exchange: str | None = None, topic: str | None = None,
                 namespace: str | None = None, version: str | None = None,
                 server: str | None = None, fanout: bool | None = None,
                 legacy_namespaces: list[str] | None = None) -> None:
        self.exchange = exchange
        self.topic = topic
        self.namespace = namespace
        self.version = version
        self.server = server
        self.fanout = fanout
        self.accepted_namespaces: list[str | None] = [namespace] + list(legacy_namespaces or [])

    def __call__(self, **kwargs: Any) -> Target:
        """Return a copy with some fields replaced."""
        for name in _FIELDS:
            kwargs.setdefault(name, getattr(self, name))
        return Target(**kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Target):
            return NotImplemented
        return vars(self) == vars(other)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    # Targets are mutable, so they hash by identity as oslo's do.
    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)}" for name in _FIELDS if getattr(self, name))
        return "<Target " + values + ">"


def _version_parts(version: str) -> tuple[int, int, int]:
    parts = version.split(".")
    if len(parts) < 2 or len(parts) > 3:
        raise ValueError(f"version must be 'major.minor[.revision]', got {version!r}")
    major, minor = int(parts[0]), int(parts[1])
    revision = int(parts[2]) if len(parts) == 3 else 0
    return major, minor, revision


def version_is_compatible(imp_version: str | None, version: str | None) -> bool:
    """True when ``version`` (requested) can be served by ``imp_version`` (implemented).

    Same major; requested minor (then revision) not above the implemented one.
    No implemented version means no limit; raises ValueError for malformed text.
    """
    if imp_version is None:
        return True
    if version is None:
        return False
    req_major, req_minor, req_rev = _version_parts(version)
    imp_major, imp_minor, imp_rev = _version_parts(imp_version)
    if req_major != imp_major:
        return False
    return (req_minor, req_rev) <= (imp_minor, imp_rev)
