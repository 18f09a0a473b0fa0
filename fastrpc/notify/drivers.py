"""How a Notifier sends, by oslo.messaging's driver names.

* ``messagingv2``: over the transport, in the 2.0 envelope (``oslo.version`` +
  ``oslo.message``), to ``<topic>.<priority>`` on the control exchange;
* ``messaging``: the same in the bare 1.0 format, for consumers too old for 2.0;
* ``log``: a log line per notification (logger
  ``oslo.messaging.notification.<event_type>``, as oslo's, so existing logging
  configuration applies), secrets masked as oslo masks them
  (:func:`fastrpc.redact.mask_secrets`); ``sample`` ones are not logged;
* ``noop``: nothing.

As oslo's drivers do, a notification the broker did not take (the retries
used up, the transport cleaned up) is logged, not raised: a notifier does not
fail the work it reports on. What no retry can cure (a payload that cannot
be encoded, or too large) raises NotificationPayloadError before the driver
sent anything (the Notifier still runs its other drivers).
"""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from fastrpc.envelope_common import EnvelopeError
from fastrpc.exceptions import NotificationPayloadError
from fastrpc.redact import mask_secrets
from fastrpc.target import Target
from fastrpc.transport import Transport

__all__ = ["DRIVERS", "LogDriver", "MessagingDriver", "MessagingV2Driver", "NoOpDriver", "NotifierDriver",
           "load_driver"]

LOG = logging.getLogger(__name__)


class NotifierDriver(ABC):
    """Sends one notification (``message``: oslo's fields, priority in upper case)."""

    @abstractmethod
    def notify(self, transport: Transport, ctxt: dict[str, Any], message: dict[str, Any], priority: str,
               topics: Sequence[str], retry: int | None) -> None:
        """Send ``message`` with context ``ctxt`` (a plain dict) to each of ``topics``."""


class MessagingDriver(NotifierDriver):
    """The 1.0 format: the message without envelope."""

    version = 1.0

    def notify(self, transport: Transport, ctxt: dict[str, Any], message: dict[str, Any], priority: str,
               topics: Sequence[str], retry: int | None) -> None:
        priority = priority.lower()
        for topic in topics:
            target = Target(topic=f"{topic}.{priority}")
            try:
                transport._send_notification(target, ctxt, message, self.version, retry=retry)
            except EnvelopeError as exc:
                # The same body for every topic: the first one fails before anything was sent.
                raise NotificationPayloadError(message.get("event_type"), exc.reason) from None
            except Exception as exc:  # noqa: BLE001 - logged, as oslo's drivers do; see the module
                LOG.error("Could not send notification %s (event type %r) to topic %s: %s",
                          message.get("message_id"), message.get("event_type"), target.topic, exc)


class MessagingV2Driver(MessagingDriver):
    """The 2.0 envelope, what oslo's listeners of today read."""

    version = 2.0


class LogDriver(NotifierDriver):
    """A log line per notification, at its priority's level."""

    LOGGER_BASE = "oslo.messaging.notification"
    LEVELS = {"audit": logging.INFO, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "error": logging.ERROR, "critical": logging.CRITICAL}

    def notify(self, transport: Transport, ctxt: dict[str, Any], message: dict[str, Any], priority: str,
               topics: Sequence[str], retry: int | None) -> None:
        level = self.LEVELS.get(priority.lower())
        if level is None:
            return  # sample: high-frequency, not for logs (as with oslo's log driver)
        logger = logging.getLogger(f"{self.LOGGER_BASE}.{message.get('event_type')}")
        if logger.isEnabledFor(level):
            logger.log(level, "%s", json.dumps(mask_secrets(message), default=str, ensure_ascii=False))


class NoOpDriver(NotifierDriver):
    """Sends nothing (a notifier switched off by configuration)."""

    def notify(self, transport: Transport, ctxt: dict[str, Any], message: dict[str, Any], priority: str,
               topics: Sequence[str], retry: int | None) -> None:
        pass


DRIVERS: dict[str, type[NotifierDriver]] = {
    "messagingv2": MessagingV2Driver,
    "messaging": MessagingDriver,
    "log": LogDriver,
    "noop": NoOpDriver,
}


def load_driver(name: str) -> NotifierDriver:
    """The driver registered under ``name``; ValueError for another name."""
    try:
        return DRIVERS[name]()
    except (KeyError, TypeError):
        raise ValueError(f"unknown notification driver {name!r} (one of {', '.join(DRIVERS)})") from None
