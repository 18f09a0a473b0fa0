"""Notifier: sends notifications as oslo.messaging's Notifier does.

Each priority method builds oslo's message::

    {"message_id": "<uuid4>", "publisher_id": "compute.host1",
     "event_type": "compute.instance.create", "priority": "INFO",
     "payload": {...}, "timestamp": "2024-05-01 10:00:00.123456"}

(the timestamp is naive UTC written as ``str(datetime)``, as oslo writes it)
and hands it to each of its drivers (:mod:`fastrpc.notify.drivers`), which
for ``messagingv2`` publish it in the 2.0 envelope to ``<topic>.<priority>``
on the control exchange: the queues oslo's notification listeners consume.

The context goes as oslo sends it: a context object's ``redacted_copy()``
(oslo.context's RequestContext has one: tokens left out), then the
serializer's ``serialize_context``. A plain dict is not sent (it may hold a
token no one can tell apart), nor a context whose ``redacted_copy()`` is
missing or raises AttributeError: the listeners see an empty context.

A notifier sends only through drivers someone named, as oslo's: its
``driver`` argument, else the ``driver`` option of an oslo.config
``[oslo_messaging_notifications]`` section. With neither (oslo's default)
it sends nothing, rather than filling ``notifications.<priority>`` queues
that nobody may consume.
"""

from __future__ import annotations

import copy
import datetime
import logging
import uuid
import weakref
from collections.abc import Iterable
from typing import Any

from fastrpc.exceptions import NotificationPayloadError
from fastrpc.notify.drivers import NoOpDriver, NotifierDriver, load_driver
from fastrpc.notify.transport import NotificationSettings, NotificationTransport
from fastrpc.serializer import NoOpSerializer, Serializer
from fastrpc.transport import Transport

__all__ = ["Notifier"]

LOG = logging.getLogger(__name__)

_UNSET: Any = object()

# Transports whose notifiers were found to have no driver: told once each.
_TOLD_DISABLED: weakref.WeakSet[Transport] = weakref.WeakSet()


def _topic_list(topics: Iterable[str]) -> tuple[str, ...]:
    if isinstance(topics, str):
        raise TypeError(f"topics must be a list of topic names, not the string {topics!r}")
    names = tuple(topics)
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"topics must be a non-empty list of topic names, got {list(names)!r}")
    return names


def _utcnow_text() -> str:
    # oslo_utils.timeutils.utcnow() written with str(): naive UTC, a space
    # between date and time, microseconds unless they are 0.
    return str(datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None))


class Notifier:
    """Sends notifications to the listeners of a transport's broker.

    ``driver``: ``messagingv2`` (what oslo's listeners read), ``messaging``
    (the 1.0 format), ``log`` or ``noop``; an unknown name raises
    ValueError. ``topics``: where they go (default ``["notifications"]``);
    ``retry``: attempts after the first when the broker cannot be reached
    (-1 or None: for ever, the default). Left as None, ``driver``, ``topics``
    and ``retry`` come from the ``[oslo_messaging_notifications]``
    configuration the transport was built with (see
    :func:`fastrpc.get_notification_transport`), then these defaults.
    ``serializer`` turns payloads and contexts into primitives.

    No ``driver`` given and none configured (oslo's default, and always
    without an oslo.config object): the notifier sends nothing and
    :meth:`is_enabled` is False, as with oslo; pass ``driver="messagingv2"``
    to send. Configured driver names that are unknown are logged and
    skipped, as oslo does.

    Priority methods (``audit``, ``debug``, ``info``, ``warn``/``warning``,
    ``error``, ``critical``, ``sample``) take ``(ctxt, event_type, payload)``.
    They raise NotificationPayloadError when the payload cannot be encoded
    as JSON or is larger than ``max_message_size``: that driver sent
    nothing, the others ran (each driver is on its own, as with oslo). A
    notification the broker could not take is logged, not raised (as with
    oslo). :meth:`prepare` returns a copy with another publisher, retry or
    topics, sharing the drivers.
    """

    def __init__(self, transport: Transport, publisher_id: str | None = None, driver: str | None = None,
                 serializer: Serializer | None = None, retry: int | None = None,
                 topics: Iterable[str] | None = None) -> None:
        if isinstance(transport, NotificationTransport):
            settings = transport.settings
        else:
            settings = NotificationSettings()
            LOG.warning("Using an RPC transport for notifications: get_notification_transport builds the "
                        "notification one (its own URL and settings, if configured)")
        self._drivers = [(driver, load_driver(driver))] if driver is not None else self._configured(settings)
        if not self._drivers and transport not in _TOLD_DISABLED:
            _TOLD_DISABLED.add(transport)
            LOG.info("Notifications on %r are off: no driver given and none configured "
                     "([oslo_messaging_notifications] driver); pass driver='messagingv2' to send them", transport)
        self._settings = settings
        self.transport = transport
        self.publisher_id = publisher_id
        self.retry = settings.retry if retry is None else retry
        self._topics = _topic_list(settings.topics if topics is None else topics)
        self._serializer: Serializer = serializer or NoOpSerializer()

    @staticmethod
    def _configured(settings: NotificationSettings) -> list[tuple[str, NotifierDriver]]:
        """The configured drivers; unknown names logged and skipped (a
        configuration mistake must not stop the service), as oslo does."""
        drivers = []
        for name in settings.drivers:
            try:
                drivers.append((name, load_driver(name)))
            except ValueError as exc:
                LOG.warning("[oslo_messaging_notifications] driver: %s; skipped", exc)
        return drivers

    @property
    def topics(self) -> list[str]:
        """The topics notifications are sent to."""
        return list(self._topics)

    def prepare(self, publisher_id: str | None = _UNSET, retry: int | None = _UNSET,
                topics: Iterable[str] | None = _UNSET) -> Notifier:
        """A notifier like this one with another ``publisher_id``, ``retry``
        or ``topics`` (those not given are kept; None: the default); cheap,
        the drivers are shared."""
        other = copy.copy(self)
        if publisher_id is not _UNSET:
            other.publisher_id = publisher_id
        if retry is not _UNSET:
            other.retry = -1 if retry is None else retry
        if topics is not _UNSET:
            other._topics = _topic_list(self._settings.topics if topics is None else topics)
        return other

    def is_enabled(self) -> bool:
        """Whether notifications go anywhere (False with no driver, or only ``noop``)."""
        return any(not isinstance(driver, NoOpDriver) for _name, driver in self._drivers)

    # -- sending ---------------------------------------------------------------

    def _context(self, ctxt: Any, event_type: str) -> dict:
        """The context as sent: redacted (see the module), serialized, a dict."""
        if ctxt is None or type(ctxt) is dict:
            safe: Any = {}
        else:
            try:
                safe = ctxt.redacted_copy()
            except AttributeError:
                # Missing, or failing inside (oslo takes both alike): better a
                # notification without context than none, or one with a token.
                LOG.warning("Could not redact a context of type %s (no working redacted_copy()): "
                            "the notification is sent without it", type(ctxt).__name__)
                safe = {}
        serialized = self._serializer.serialize_context(safe)
        if isinstance(serialized, dict):
            return serialized
        to_dict = getattr(serialized, "to_dict", None)
        if callable(to_dict):
            return dict(to_dict())
        raise NotificationPayloadError(event_type, f"the context serializes to a {type(serialized).__name__}, "
                                                   "not a mapping")

    def _notify(self, ctxt: Any, event_type: str, payload: Any, priority: str) -> None:
        if not isinstance(event_type, str):
            raise TypeError(f"event_type must be a string, not {type(event_type).__name__}")
        payload = self._serializer.serialize_entity(ctxt, payload)
        message = {
            "message_id": str(uuid.uuid4()),
            "publisher_id": self.publisher_id,
            "event_type": event_type,
            "priority": priority,
            "payload": payload,
            "timestamp": _utcnow_text(),
        }
        wire_ctxt = self._context(ctxt, event_type)
        # Each driver on its own, as oslo's: one that cannot send does not
        # keep the notification from the others.
        refused: NotificationPayloadError | None = None
        for name, driver in self._drivers:
            try:
                driver.notify(self.transport, wire_ctxt, message, priority, self._topics, self.retry)
            except NotificationPayloadError as exc:
                refused = refused or exc
            except Exception:  # noqa: BLE001 - logged, as oslo does: a notifier does not fail its caller
                LOG.exception("Notification driver %s failed to send %s (event type %r)", name,
                              message["message_id"], event_type)
        if refused is not None:
            raise refused

    def audit(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a notification of priority AUDIT."""
        self._notify(ctxt, event_type, payload, "AUDIT")

    def debug(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a notification of priority DEBUG."""
        self._notify(ctxt, event_type, payload, "DEBUG")

    def info(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a notification of priority INFO."""
        self._notify(ctxt, event_type, payload, "INFO")

    def warn(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a notification of priority WARN."""
        self._notify(ctxt, event_type, payload, "WARN")

    warning = warn

    def error(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a notification of priority ERROR."""
        self._notify(ctxt, event_type, payload, "ERROR")

    def critical(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a notification of priority CRITICAL."""
        self._notify(ctxt, event_type, payload, "CRITICAL")

    def sample(self, ctxt: Any, event_type: str, payload: Any) -> None:
        """Send a notification of priority SAMPLE (frequent, small: a measurement)."""
        self._notify(ctxt, event_type, payload, "SAMPLE")

    def __repr__(self) -> str:
        drivers = ",".join(name for name, _driver in self._drivers) or "(none)"
        return f"<Notifier publisher_id={self.publisher_id!r} driver={drivers} topics={list(self._topics)}>"
