"""The driver's one error boundary: what the connection layer raises
(``fastrpc.amqp.exceptions``) becomes a fastrpc exception here, carrying the
broker's reply code and text, so no AMQP-layer class reaches an RPC caller."""

from __future__ import annotations

import re

from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec
from fastrpc.drivers.broker_rules import refusal_hint
from fastrpc.exceptions import (
    AuthenticationError,
    BrokerError,
    BrokerRefused,
    DeclarationRefused,
    MessageDeliveryFailure,
    MessagingException,
    MessagingTimeout,
    VirtualHostRefused,
)

# (class id, method id) of the methods that declare or bind.
_DECLARING = {
    (40, 10): "exchange declaration",
    (50, 10): "queue declaration",
    (50, 20): "queue binding",
    (40, 30): "exchange binding",
}
# RabbitMQ's texts name what they refuse: "... for exchange 'x' in vhost '/' ...".
_NAMED = re.compile(r"\b(queue|exchange) '((?:[^']|'')*)'")

# What the connection layer's other errors become.
_BY_CLASS: tuple[tuple[type[Exception], type[MessagingException]], ...] = (
    (amqp_exc.OperationTimeout, MessagingTimeout),
    (amqp_exc.HandshakeTimeout, MessageDeliveryFailure),
    (amqp_exc.ConnectionRefused, MessageDeliveryFailure),
    (amqp_exc.ConnectionLost, MessageDeliveryFailure),
    (amqp_exc.TLSError, MessageDeliveryFailure),
    (amqp_exc.PublishBlocked, MessageDeliveryFailure),
)


def messaging_error(exc: amqp_exc.AMQPError) -> MessagingException:
    """The fastrpc exception for ``exc``, an error of the connection layer."""
    if isinstance(exc, amqp_exc.ChannelClosed | amqp_exc.ConnectionClosed):
        return _refusal(exc)
    if isinstance(exc, amqp_exc.LoginRefused):
        login = AuthenticationError if isinstance(exc, amqp_exc.AuthenticationFailed) else VirtualHostRefused
        return login(str(exc), exc.reply_code, exc.reply_text)
    for amqp_cls, cls in _BY_CLASS:
        if isinstance(exc, amqp_cls):
            return cls(str(exc))
    return BrokerError(str(exc))


def _refusal(exc: amqp_exc.ChannelClosed | amqp_exc.ConnectionClosed) -> BrokerError:
    code, text = exc.reply_code, exc.reply_text
    doing = _DECLARING.get((exc.class_id, exc.method_id))
    named = _NAMED.search(text)
    hint = refusal_hint(text)  # a deprecated feature the broker denies (RabbitMQ 4.3)
    if doing is not None or (code == spec.PRECONDITION_FAILED and named) or hint is not None:
        kind, name = (named.group(1), named.group(2).replace("''", "'")) if named else (None, None)
        refused = (f"{doing or 'the declaration'} of {kind} {name!r}" if named
                   else f"a {doing}" if doing else "a declaration")
        message = f"the broker refused {refused}: {code} {text}"
        if hint is not None:
            message += f"\n{hint}"
        return DeclarationRefused(message, code, text, kind, name)
    if isinstance(exc, amqp_exc.ConnectionClosed):
        return BrokerError(f"the broker closed the connection: {code} {text}", code, text)
    return BrokerRefused(f"the broker refused the operation: {code} {text}", code, text)
