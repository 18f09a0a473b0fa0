"""Serializers: hooks that turn application objects into wire primitives and back."""

from __future__ import annotations

import datetime
import decimal
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Serializer", "NoOpSerializer", "JsonPayloadSerializer", "RequestContextSerializer"]


class Serializer(ABC):
    """Converts entities and request contexts to and from primitives."""

    @abstractmethod
    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        """Return a primitive form of ``entity`` (an argument or a result)."""

    @abstractmethod
    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        """Rebuild an entity from its primitive form."""

    @abstractmethod
    def serialize_context(self, ctxt: Any) -> dict:
        """Return the request context as a dict."""

    @abstractmethod
    def deserialize_context(self, ctxt: dict) -> Any:
        """Rebuild a request context from a dict."""


class NoOpSerializer(Serializer):
    """Passes everything through unchanged."""

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return entity

    def serialize_context(self, ctxt: Any) -> Any:
        return ctxt

    def deserialize_context(self, ctxt: Any) -> Any:
        return ctxt


_MAX_DEPTH = 100


def to_primitive(value: Any, _depth: int = 0) -> Any:
    """Reduce ``value`` to JSON types (dict, list, str, int, float, bool, None)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if _depth > _MAX_DEPTH:
        raise ValueError("object nested too deeply to serialize")
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: to_primitive(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_primitive(v, _depth + 1) for v in value]
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    for method in ("to_dict", "iteritems", "items"):
        func = getattr(value, method, None)
        if callable(func):
            return to_primitive(dict(func()), _depth + 1)
    if hasattr(value, "__iter__"):
        return [to_primitive(v, _depth + 1) for v in value]
    if hasattr(value, "__dict__"):
        return to_primitive(vars(value), _depth + 1)
    return str(value)


class JsonPayloadSerializer(NoOpSerializer):
    """Turns entities into JSON-friendly primitives (objects become their dicts)."""

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return to_primitive(entity)


class RequestContextSerializer(Serializer):
    """Carries a context object (with ``to_dict``) and delegates entities.

    ``base`` handles arguments and results; ``context_factory`` rebuilds the
    context on the server (for example ``RequestContext.from_dict``); without
    one the server sees the plain dict.
    """

    def __init__(self, base: Serializer | None = None,
                 context_factory: Callable[[dict], Any] | None = None) -> None:
        self._base = base or NoOpSerializer()
        self._context_factory = context_factory

    def serialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return self._base.serialize_entity(ctxt, entity)

    def deserialize_entity(self, ctxt: Any, entity: Any) -> Any:
        return self._base.deserialize_entity(ctxt, entity)

    def serialize_context(self, ctxt: Any) -> dict:
        if ctxt is None:
            return {}
        to_dict = getattr(ctxt, "to_dict", None)
        if callable(to_dict):
            return dict(to_dict())
        return dict(ctxt)

    def deserialize_context(self, ctxt: dict) -> Any:
        if self._context_factory is None:
            return ctxt
        return self._context_factory(ctxt)
