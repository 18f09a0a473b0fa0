"""fastrpc as an oslo.messaging driver: ``transport_url = fastrpc://...``.

Registered under oslo.messaging's ``oslo.messaging.drivers`` entry point, so a
service written against oslo.messaging's API moves to fastrpc by changing its
transport URL and nothing else. What goes on the wire is the AMQP driver's
(``fastrpc.drivers.amqp``), compatible with oslo's rabbit driver, so services
on either driver keep talking during a rolling upgrade. This module only
translates between the two driver interfaces:

* options: oslo's ``[oslo_messaging_rabbit]`` group is registered as the rabbit
  driver registers it (so existing config files keep working), plus a
  ``[fastrpc]`` group; the URL's query string overrides both, as with oslo;
* errors: calls raise oslo's exception classes (``MessagingTimeout``,
  ``MessageDeliveryFailure``, :class:`OsloBrokerError` (an oslo driver error
  for fastrpc's BrokerError, so oslo's client raises ``ClientSendError``), and remote
  failures rebuilt by oslo's own code);
* listeners: oslo's servers (RPC and notification) poll fastrpc's listeners
  from their own thread.

Importing this module needs oslo.messaging; nothing else in fastrpc does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import oslo_messaging
from oslo_config import cfg
from oslo_messaging import opts as oslo_opts
from oslo_messaging._drivers import base as oslo_base
from oslo_messaging._drivers import common as oslo_common

from fastrpc.drivers.amqp import AmqpDriver, Consumer
from fastrpc.drivers.base import IncomingMessage
from fastrpc.envelope import new_id
from fastrpc.exceptions import BrokerError as FastrpcBrokerError
from fastrpc.exceptions import MessageDeliveryFailure, MessageUndeliverable, MessagingTimeout
from fastrpc.options import OPTIONS, Opt, Options
from fastrpc.redact import mask_url

__all__ = ["FastrpcDriver", "ListenRefused", "OsloBrokerError", "register_opts", "FASTRPC_OPTS"]

LOG = logging.getLogger(__name__)
RABBIT_GROUP = "oslo_messaging_rabbit"
FASTRPC_GROUP = "fastrpc"

_CFG_TYPES: dict[type, Any] = {str: cfg.StrOpt, int: cfg.IntOpt, float: cfg.FloatOpt, bool: cfg.BoolOpt}


def _cfg_opt(opt: Opt) -> cfg.Opt:
    """One option of fastrpc's table as an oslo.config option: type, default, bounds, help."""
    bounds: dict[str, Any] = {key: value for key, value in (("min", opt.min), ("max", opt.max)) if value is not None}
    if opt.choices is not None:
        bounds["choices"] = list(opt.choices)
    return _CFG_TYPES[opt.kind](opt.name, default=opt.default, help=opt.help, **bounds)


# The [fastrpc] group, from the one definition of each option (fastrpc.options.OPTIONS).
FASTRPC_OPTS = [_cfg_opt(opt) for opt in OPTIONS if opt.group == FASTRPC_GROUP]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register the options this driver reads, as oslo's rabbit driver does for its group."""
    for group, options in oslo_opts.list_opts():
        if group == RABBIT_GROUP:
            conf.register_opts(options, group=RABBIT_GROUP)
    conf.register_opts(FASTRPC_OPTS, group=FASTRPC_GROUP)


class OsloBrokerError(oslo_base.TransportDriverError):
    """fastrpc's :class:`fastrpc.exceptions.BrokerError` as an oslo driver
    error, so oslo's client raises ClientSendError and its server
    ServerListenError for it, as for its own drivers' errors. ``cause`` is
    fastrpc's exception (its class says what failed: AuthenticationError,
    VirtualHostRefused, DeclarationRefused, ...)."""

    def __init__(self, cause: FastrpcBrokerError) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.reply_code = cause.reply_code
        self.reply_text = cause.reply_text


class ListenRefused(oslo_messaging.MessageDeliveryFailure):
    """What a listener's start raises for fastrpc's BrokerError (``cause``).

    Not a TransportDriverError: oslo's RPC server turns one into an
    AttributeError (its start() builds ServerListenError from
    ``self.target``, an attribute its RPC server does not set), so the
    listen path raises MessageDeliveryFailure, as it did, with the cause.
    """

    def __init__(self, cause: FastrpcBrokerError) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.reply_code = cause.reply_code
        self.reply_text = cause.reply_text


def _sent(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a send of the AMQP driver; its errors (fastrpc's classes, see
    ``fastrpc.drivers.amqp.errors``) become oslo's exception classes."""
    try:
        return func(*args, **kwargs)
    except MessagingTimeout as exc:
        raise oslo_messaging.MessagingTimeout(str(exc)) from exc
    except MessageUndeliverable as exc:
        raise oslo_messaging.MessageUndeliverable(exc.exception, exc.exchange, exc.routing_key,
                                                  exc.message) from exc
    except MessageDeliveryFailure as exc:
        raise oslo_messaging.MessageDeliveryFailure(str(exc)) from exc
    except FastrpcBrokerError as exc:
        raise OsloBrokerError(exc) from exc


class FastrpcDriver(oslo_base.BaseDriver):
    """oslo.messaging's driver interface over fastrpc's AMQP driver."""

    def __init__(self, conf: cfg.ConfigOpts, url: Any, default_exchange: str | None = None,
                 allowed_remote_exmods: list[str] | None = None) -> None:
        super().__init__(conf, url, default_exchange, allowed_remote_exmods)
        register_opts(conf)
        for name in url.query:
            # As oslo's rabbit driver: a query key that is no option of the
            # broker groups is an error, not a silent no-op.
            if name not in conf[RABBIT_GROUP] and name not in conf[FASTRPC_GROUP]:
                raise cfg.NoSuchOptError(name, cfg.OptGroup(RABBIT_GROUP))
        try:
            options = Options(conf).with_url_query(url.query)
        except ValueError as exc:
            raise oslo_messaging.InvalidTransportURL(mask_url(str(url)), f"Invalid option in URL: {exc}") from None
        self._driver = AmqpDriver(options, url, default_exchange, allowed_remote_exmods)
        # Remote failures become exactly the exceptions oslo's own drivers raise.
        self._driver.rebuild_failure = oslo_common.deserialize_remote_exception

    def send(self, target: Any, ctxt: dict, message: dict, wait_for_reply: bool | None = None,
             timeout: float | None = None, call_monitor_timeout: float | None = None,
             retry: int | None = None, transport_options: Any = None) -> Any:
        return _sent(self._driver.send, target, ctxt, message, wait_for_reply=bool(wait_for_reply),
                     timeout=timeout, call_monitor_timeout=call_monitor_timeout, retry=retry,
                     at_least_once=bool(getattr(transport_options, "at_least_once", False)))

    def send_notification(self, target: Any, ctxt: dict, message: dict, version: float,
                          retry: int | None = None) -> None:
        _sent(self._driver.send_notification, target, ctxt, message, version, retry=retry)

    def require_features(self, requeue: bool = False) -> None:
        pass  # notifications can be requeued

    def listen(self, target: Any, batch_size: int, batch_timeout: float | None) -> oslo_base.Listener:
        return self._adapt(lambda: self._driver.listen(target, batch_size, batch_timeout), _RpcIncoming,
                           batch_size, batch_timeout)

    def listen_for_notifications(self, targets_and_priorities: Any, pool: str | None, batch_size: int,
                                 batch_timeout: float | None) -> oslo_base.Listener:
        return self._adapt(lambda: self._driver.listen_for_notifications(targets_and_priorities, pool),
                           _Incoming, batch_size, batch_timeout)

    def _adapt(self, make: Callable[[], Consumer], wrap: type[_Incoming], batch_size: int,
               batch_timeout: float | None) -> oslo_base.Listener:
        prefetch = self._driver.topology.prefetch_count or -1  # oslo caps batches at the prefetch
        try:
            listener = _sent(make)  # waits for the broker; gives up at cleanup (MessageDeliveryFailure)
        except OsloBrokerError as exc:
            raise ListenRefused(exc.cause) from exc.cause
        if batch_size == 1 or prefetch == 1:
            return _PushListener(listener, wrap, prefetch)
        return oslo_base.PollStyleListenerAdapter(_PollListener(listener, wrap, prefetch), batch_size,
                                                  batch_timeout)

    def cleanup(self) -> None:
        self._driver.cleanup()


class _PushListener(oslo_base.Listener):
    """Messages one at a time, handed to oslo's callback by the thread that
    reads the connection: no polling thread in between. oslo's servers only
    submit each message to their executor there, which never waits."""

    def __init__(self, listener: Consumer, wrap: type[_Incoming], prefetch_size: int) -> None:
        super().__init__(1, None, prefetch_size)
        self._listener = listener
        self._wrap = wrap

    def start(self, on_incoming_callback: Callable[[list[_Incoming]], Any]) -> None:
        super().start(on_incoming_callback)
        wrap = self._wrap

        def handle(msg: IncomingMessage) -> None:
            try:
                on_incoming_callback([wrap(msg)])
            except Exception:  # the reader thread must go on for the other messages
                LOG.exception("The server refused a message it was handed")

        self._listener.dispatch_inline(handle)

    def stop(self) -> None:
        self._listener.stop()
        # After this returns, the callback is not called again (oslo's contract).
        self._listener.wait_inline_idle()
        super().stop()

    def cleanup(self) -> None:
        self._listener.cleanup()


class _PollListener(oslo_base.PollStyleListener):
    """fastrpc's listener as oslo polls it: messages wrapped in oslo's message type."""

    def __init__(self, listener: Consumer, wrap: type[_Incoming], prefetch_size: int) -> None:
        super().__init__(prefetch_size)
        self._listener = listener
        self._wrap = wrap

    def poll(self, timeout: float | None = None, batch_size: int = 1,
             batch_timeout: float | None = None) -> list[_Incoming]:
        """Up to ``batch_size`` messages: as soon as that many came, else when
        the time is up (``batch_timeout`` or ``timeout``; None waits for a full
        batch), or the listener stopped, as oslo's batching poll does."""
        wait = batch_timeout or timeout
        deadline = None if wait is None else time.monotonic() + wait
        taken: list[IncomingMessage] = []
        while len(taken) < batch_size:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            got = self._listener.poll(left, batch_size - len(taken))
            if not got:
                break  # time is up, or stopped
            taken += got
        wrap = self._wrap
        return [wrap(msg) for msg in taken]

    def stop(self) -> None:
        self._listener.stop()

    def cleanup(self) -> None:
        self._listener.cleanup()


class _Incoming(oslo_base.IncomingMessage):
    """A notification: oslo's notification server acknowledges or requeues it once processed."""

    def __init__(self, incoming: IncomingMessage) -> None:
        # What oslo's IncomingMessage.__init__ sets, set here without the
        # call; a message without msg_id (a cast) gets a fresh one for oslo's
        # logs, from the envelope's id counter instead of a uuid4.
        self.ctxt = incoming.ctxt
        self.message = incoming.message
        self.msg_id = incoming.msg_id or new_id()
        self.client_timeout: float | None = None
        self._incoming = incoming

    def acknowledge(self) -> None:
        self._incoming.acknowledge()

    def requeue(self) -> None:
        self._incoming.requeue()


class _RpcIncoming(_Incoming, oslo_base.RpcIncomingMessage):
    """A request; fastrpc's listener acknowledges it (when taken, or after it
    ran when handed over inline), so oslo's acknowledge() has nothing to do."""

    def __init__(self, incoming: IncomingMessage) -> None:
        self.ctxt = incoming.ctxt
        self.message = incoming.message
        self.msg_id = incoming.msg_id or new_id()
        self._incoming = incoming
        # oslo's dispatcher sends call-monitor heartbeats when this is set.
        self.client_timeout = incoming.client_timeout

    def reply(self, reply: Any = None, failure: Any = None) -> None:
        # oslo passes the failure as sys.exc_info()
        if isinstance(failure, tuple):
            failure = failure[1]
        self._incoming.reply(reply, failure)

    def heartbeat(self) -> None:
        self._incoming.heartbeat()
