"""Notification transports: the broker notifications go to, and the defaults
of the notifiers built on it, read from the configuration as oslo.messaging
reads its ``[oslo_messaging_notifications]`` section.

Notifications may go to another broker than RPC (another URL, other
permissions): ``get_notification_transport(conf)`` without a URL takes that
section's ``transport_url``, and the RPC ``transport_url`` when it has none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastrpc.options import Options
from fastrpc.transport import Transport, TransportURL, _get_transport

__all__ = ["NOTIFICATIONS_GROUP", "NotificationSettings", "NotificationTransport", "get_notification_transport"]

LOG = logging.getLogger(__name__)

NOTIFICATIONS_GROUP = "oslo_messaging_notifications"


@dataclass(frozen=True)
class NotificationSettings:
    """The ``[oslo_messaging_notifications]`` options, with oslo's defaults.

    ``transport_url``: None for the RPC one; ``drivers``: the notifier's
    drivers when it names none (empty, oslo's default: none, so such a
    notifier sends nothing, as oslo's); ``topics``: where a notifier sends
    when it names none; ``retry``: its attempts after the first (-1: for
    ever). Without an oslo.config object (None, :class:`Options`) these
    defaults apply: a notifier sends only through a ``driver`` it is given.
    """

    transport_url: str | None = None
    drivers: tuple[str, ...] = ()
    topics: tuple[str, ...] = ("notifications",)
    retry: int = -1

    @classmethod
    def read(cls, conf: Any) -> NotificationSettings:
        """From an oslo.config object; the defaults for None or :class:`Options`."""
        if conf is None or isinstance(conf, Options):
            return cls()
        _register_oslo_opts(conf)
        try:
            group = getattr(conf, NOTIFICATIONS_GROUP)
        except Exception:  # noqa: BLE001 - the group is not registered: oslo's defaults
            return cls()
        default = cls()

        def value(name: str, fallback: Any) -> Any:
            try:
                found = getattr(group, name)
            except Exception:  # noqa: BLE001 - not registered
                return fallback
            return fallback if found is None else found

        return cls(transport_url=value("transport_url", None) or None,
                   drivers=tuple(value("driver", default.drivers)),
                   topics=tuple(value("topics", default.topics)),
                   retry=int(value("retry", default.retry)))


def _register_oslo_opts(conf: Any) -> None:
    """Register oslo.messaging's own definitions of the section on an
    oslo.config object, as its ``get_notification_transport`` does, so a
    configuration file's values are read. ``list_opts()`` hands out deep
    copies, equal to the options oslo.messaging registers itself, and
    oslo.config takes an equal option registered again as the same one: no
    conflict, whichever comes first. Without oslo.messaging only what the
    application registered is read."""
    register = getattr(conf, "register_opts", None)
    if register is None:
        return
    try:
        from oslo_messaging import opts as oslo_opts
    except ImportError:
        return
    for group, options in oslo_opts.list_opts():
        if group == NOTIFICATIONS_GROUP:
            register(options, group=NOTIFICATIONS_GROUP)


class NotificationTransport(Transport):
    """A transport used for notifications; ``settings`` are the notifier
    defaults read with it (:class:`NotificationSettings`)."""

    settings: NotificationSettings = NotificationSettings()


def get_notification_transport(conf: Any = None, url: str | TransportURL | None = None,
                               allowed_remote_exmods: list[str] | None = None) -> NotificationTransport:
    """Build a transport for notifications from options (or an oslo.config object) and a URL.

    Without ``url``: the ``[oslo_messaging_notifications] transport_url`` of
    an oslo.config ``conf``, else the RPC ``transport_url``. The notifiers
    built on it take their default drivers, topics and retry from the same
    section. With a URL this is :func:`fastrpc.get_rpc_transport` for a
    notification transport.
    """
    settings = NotificationSettings.read(conf)
    if url is None:
        url = settings.transport_url
    transport = _get_transport(conf, url, allowed_remote_exmods, NotificationTransport)
    assert isinstance(transport, NotificationTransport)
    transport.settings = settings
    return transport
