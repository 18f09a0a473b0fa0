"""NotificationFilter: which notifications an endpoint is handed.

An endpoint with a ``filter_rule`` attribute gets only the notifications the
rule matches; the others are acknowledged without running it. Rules are
regular expressions matched from the start of the text (``re.match``), as
oslo.messaging's filters are:

    filter_rule = NotificationFilter(
        publisher_id=r"^compute\\.",
        event_type=r"^compute\\.instance\\.",
        context={"project_id": "^5f64"},
        payload={"state": "^active$"},
    )

For ``context``, ``metadata`` (``message_id``, ``timestamp``) and ``payload``
the rule is a dict of key to expression: each key must be present with a
string value that matches (a context object is read through its
``to_dict()``). A value that is not a string never matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["NotificationFilter"]


def _compile_each(rules: Mapping[str, str] | None, what: str) -> dict[str, re.Pattern[str]]:
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise TypeError(f"{what} must be a dict of key to regular expression, not {type(rules).__name__}")
    return {key: re.compile(expr) for key, expr in rules.items()}


def _text_matches(value: Any, pattern: re.Pattern[str] | None) -> bool:
    if pattern is None:
        return True
    return isinstance(value, str) and pattern.match(value) is not None


def _fields_match(values: Any, patterns: dict[str, re.Pattern[str]]) -> bool:
    if not patterns:
        return True
    if not isinstance(values, Mapping):
        # A context object a serializer rebuilt: its dict form.
        to_dict = getattr(values, "to_dict", None)
        values = to_dict() if callable(to_dict) else None
        if not isinstance(values, Mapping):
            return False
    return all(key in values and _text_matches(values[key], pattern) for key, pattern in patterns.items())


class NotificationFilter:
    """Matches notifications on publisher, event type, context, metadata and payload.

    Every expression given must match; an invalid one raises ``re.error``
    here, not when a notification comes.
    """

    def __init__(self, context: Mapping[str, str] | None = None, publisher_id: str | None = None,
                 event_type: str | None = None, metadata: Mapping[str, str] | None = None,
                 payload: Mapping[str, str] | None = None) -> None:
        self._publisher_id = None if publisher_id is None else re.compile(publisher_id)
        self._event_type = None if event_type is None else re.compile(event_type)
        self._context = _compile_each(context, "context")
        self._metadata = _compile_each(metadata, "metadata")
        self._payload = _compile_each(payload, "payload")

    def match(self, context: Any, publisher_id: Any, event_type: Any, metadata: Any, payload: Any) -> bool:
        """Whether a notification with these fields passes the filter."""
        return (_text_matches(publisher_id, self._publisher_id)
                and _text_matches(event_type, self._event_type)
                and _fields_match(context, self._context)
                and _fields_match(metadata, self._metadata)
                and _fields_match(payload, self._payload))

    def __repr__(self) -> str:
        parts = [f"{name}={pattern.pattern!r}" for name, pattern in
                 (("publisher_id", self._publisher_id), ("event_type", self._event_type)) if pattern is not None]
        for name, rules in (("context", self._context), ("metadata", self._metadata), ("payload", self._payload)):
            if rules:
                texts = {key: p.pattern for key, p in rules.items()}
                parts.append(f"{name}={texts!r}")
        return f"<NotificationFilter {' '.join(parts)}>"
