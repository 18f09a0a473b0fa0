"""Notification dispatchers: hand each notification to the endpoint methods
named after its priority, as oslo.messaging's dispatchers do.

An endpoint method is called ``(ctxt, publisher_id, event_type, payload,
metadata)`` (``metadata``: ``message_id`` and ``timestamp``); a batch
endpoint's once per batch and priority with a list of dicts of those keys.
Returning ``NotificationResult.REQUEUE`` (or raising) asks for the
notification (a batch endpoint: every one of that priority in the batch) to
be given back to the queue; anything else, or no endpoint for it, means
handled. Endpoints with a ``filter_rule`` (:class:`NotificationFilter`) see
only what it matches.

A message that is no notification (not a mapping, no priority, an unknown
one) is logged with the reason and counts as handled: acknowledged, so it
does not come back for ever. One whose context or payload the serializer
cannot rebuild is a notification this listener cannot read now (a missing
class, say): it counts as REQUEUE, as with oslo, so a listener made with
``allow_requeue=True`` leaves it for another try, or another listener.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastrpc.drivers.base import IncomingMessage
from fastrpc.serializer import NoOpSerializer, Serializer

__all__ = ["PRIORITIES", "BatchNotificationDispatcher", "NotificationDispatcher", "NotificationResult"]

LOG = logging.getLogger(__name__)

# oslo's priorities, the names of endpoint methods (a Notifier sends them upper case).
PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")


class NotificationResult:
    """What an endpoint method returns (oslo's values, so oslo's constants work too)."""

    HANDLED = "handled"
    REQUEUE = "requeue"


Callback = tuple[Any, Callable[..., Any]]  # (filter_rule or None, endpoint method)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class NotificationDispatcher:
    """Runs the endpoint methods for one notification at a time."""

    def __init__(self, endpoints: Iterable[Any], serializer: Serializer | None = None) -> None:
        self.endpoints = list(endpoints)
        self.serializer: Serializer = serializer or NoOpSerializer()
        self._callbacks: dict[str, list[Callback]] = {}
        for endpoint in self.endpoints:
            rule = getattr(endpoint, "filter_rule", None)
            if rule is not None and not callable(getattr(rule, "match", None)):
                raise TypeError(f"filter_rule of {type(endpoint).__name__} must be a NotificationFilter "
                                f"(something with match()), not {type(rule).__name__}")
            for priority in PRIORITIES:
                method = getattr(endpoint, priority, None)
                if callable(method):
                    self._callbacks.setdefault(priority, []).append((rule, method))
        if not self._callbacks:
            raise ValueError("no endpoint has a method named after a priority "
                             f"({', '.join(PRIORITIES)}): nothing to listen for")

    @property
    def supported_priorities(self) -> list[str]:
        """The priorities some endpoint handles: the queues to consume."""
        return [priority for priority in PRIORITIES if priority in self._callbacks]

    def _extract(self, incoming: IncomingMessage) -> tuple[str, dict[str, Any]] | str:
        """The priority and what endpoints get; else (logged) the message's
        result: HANDLED for one that is no notification, REQUEUE for one
        the serializer could not rebuild."""
        message = incoming.message
        if not isinstance(message, dict):
            LOG.warning("Dropped a notification: it is a %s, not a mapping", type(message).__name__)
            return NotificationResult.HANDLED
        priority = message.get("priority")
        reason = None
        if priority is None:
            reason = "it has no priority"
        elif not isinstance(priority, str):
            reason = f"its priority is a {type(priority).__name__}, not a string"
        elif priority.lower() not in PRIORITIES:
            reason = f"unknown priority {_short(priority)}"
        if reason is not None:
            LOG.warning("Dropped a notification (%s): %s", self._describe(message), reason)
            return NotificationResult.HANDLED
        try:
            ctxt = self.serializer.deserialize_context(incoming.ctxt)
            payload = self.serializer.deserialize_entity(ctxt, message.get("payload"))
        except Exception as exc:  # noqa: BLE001 - settled as REQUEUE, see the module
            # The class only: the text may quote the payload.
            LOG.warning("The serializer could not rebuild the context or payload of a notification (%s): %s; "
                        "requeued if the listener allows it, else acknowledged", self._describe(message),
                        type(exc).__name__)
            return NotificationResult.REQUEUE
        assert isinstance(priority, str)
        return priority.lower(), {
            "ctxt": ctxt,
            "publisher_id": message.get("publisher_id"),
            "event_type": message.get("event_type"),
            "payload": payload,
            "metadata": {"message_id": message.get("message_id"), "timestamp": message.get("timestamp")},
        }

    @staticmethod
    def _describe(message: dict[str, Any]) -> str:
        return (f"message_id {_short(message.get('message_id'))}, event type {_short(message.get('event_type'))}, "
                f"publisher {_short(message.get('publisher_id'))}")

    @staticmethod
    def _matches(rule: Any, note: dict[str, Any]) -> bool:
        return rule is None or bool(rule.match(note["ctxt"], note["publisher_id"], note["event_type"],
                                               note["metadata"], note["payload"]))

    @staticmethod
    def _run(callback: Callable[..., Any], *args: Any) -> Any:
        try:
            return callback(*args)
        except Exception:
            LOG.exception("Notification endpoint %s raised (the notification counts as REQUEUE)",
                          getattr(callback, "__qualname__", callback))
            return NotificationResult.REQUEUE

    def dispatch(self, incoming: IncomingMessage) -> str:
        """Run the endpoints for one notification: REQUEUE as soon as one
        asks for it (the others of its priority do not run), else HANDLED."""
        extracted = self._extract(incoming)
        if isinstance(extracted, str):
            return extracted
        priority, note = extracted
        for rule, callback in self._callbacks.get(priority, ()):
            if not self._matches(rule, note):
                continue
            result = self._run(callback, note["ctxt"], note["publisher_id"], note["event_type"], note["payload"],
                               note["metadata"])
            if result == NotificationResult.REQUEUE:
                return NotificationResult.REQUEUE
        return NotificationResult.HANDLED


class BatchNotificationDispatcher(NotificationDispatcher):
    """Runs the endpoint methods once per batch and priority."""

    def dispatch(self, incoming: list[IncomingMessage]) -> set[IncomingMessage]:  # type: ignore[override]
        """Run the endpoints for a batch; return the notifications to requeue."""
        by_priority: dict[str, list[tuple[IncomingMessage, dict[str, Any]]]] = {}
        requeue: set[IncomingMessage] = set()
        for message in incoming:
            extracted = self._extract(message)
            if isinstance(extracted, tuple):
                by_priority.setdefault(extracted[0], []).append((message, extracted[1]))
            elif extracted == NotificationResult.REQUEUE:
                requeue.add(message)  # only this one: the rest of the batch runs
        for priority, items in by_priority.items():
            for rule, callback in self._callbacks.get(priority, ()):
                notes = [note for _message, note in items if self._matches(rule, note)]
                if not notes:
                    continue
                if self._run(callback, notes) == NotificationResult.REQUEUE:
                    requeue.update(message for message, _note in items)
                    break
        return requeue
