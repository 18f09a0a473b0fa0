"""Notifications in oslo.messaging's ``messagingv2`` format, on the queues
oslo's notifiers and listeners use, so either side may be oslo.messaging.

* :mod:`.transport`: ``get_notification_transport`` (the notification URL
  and the notifier defaults of ``[oslo_messaging_notifications]``);
* :mod:`.notifier`: ``Notifier`` and its priority methods;
* :mod:`.drivers`: how a notifier sends (``messagingv2``, ``messaging``, ``log``, ``noop``);
* :mod:`.dispatcher`: endpoint methods by priority, ``NotificationResult``;
* :mod:`.filter`: ``NotificationFilter``, an endpoint's ``filter_rule``;
* :mod:`.listener`: the notification listeners (single and batch) on the
  RPC server's executors.
"""

from fastrpc.notify.dispatcher import PRIORITIES, NotificationResult
from fastrpc.notify.filter import NotificationFilter
from fastrpc.notify.listener import (
    BatchNotificationServer,
    NotificationServer,
    get_batch_notification_listener,
    get_notification_listener,
)
from fastrpc.notify.notifier import Notifier
from fastrpc.notify.transport import NotificationTransport, get_notification_transport

__all__ = [
    "PRIORITIES", "BatchNotificationServer", "NotificationFilter", "NotificationResult", "NotificationServer",
    "NotificationTransport", "Notifier", "get_batch_notification_listener", "get_notification_listener",
    "get_notification_transport",
]
