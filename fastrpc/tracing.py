"""OpenTelemetry traces of calls and casts (the ``fastrpc[otel]`` extra:
``opentelemetry-api``; spans go wherever the application's SDK sends them).

Off by default. :func:`enable` (or the ``[fastrpc] tracing`` option) turns
it on for the whole process. Then, following OpenTelemetry's messaging and
RPC conventions, a call or cast is a PRODUCER span ``send <exchange>``
(a call's lasts until its reply), and fastrpc's RPC server runs each request
inside a CONSUMER span ``process <exchange>``, made current while the
endpoint runs so that what it does (its own calls included) joins the
trace. The client's span context travels in the request, in the top-level
key :data:`CARRIER_KEY` of the message (W3C ``traceparent``, and
``tracestate`` / ``baggage`` when set, from the configured propagator), so
the server's span is its child; oslo.messaging peers ignore the key.

Attributes: ``messaging.system`` (rabbitmq), ``messaging.operation.type``
and ``.name`` (send, process), ``messaging.destination.name`` (the
exchange), ``messaging.rabbitmq.destination.routing_key``,
``messaging.message.conversation_id`` (a call's ``_msg_id``),
``rpc.method``, and ``error.type`` (the exception's class) on failure.

Without opentelemetry, or while off, the hooks read one module attribute
(``on``) and nothing of opentelemetry is imported.
"""

from __future__ import annotations

import logging
from typing import Any

from fastrpc._version import __version__
from fastrpc.exceptions import ConfigurationError

__all__ = ["CARRIER_KEY", "enable", "disable", "enabled"]

LOG = logging.getLogger(__name__)

# The message key that carries the trace context (a dict of text headers).
CARRIER_KEY = "_trace_context"

# Set by enable(); read by every hook as ``tracing.on``.
on = False
_tracer: Any = None
_api: Any = None  # the opentelemetry modules used, once imported


class _Api:
    """The parts of opentelemetry-api the hooks use, imported by enable()."""

    def __init__(self) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.context = context
        self.propagate = propagate
        self.trace = trace
        self.producer = SpanKind.PRODUCER
        self.consumer = SpanKind.CONSUMER
        self.error = Status(StatusCode.ERROR)


def enable(tracer_provider: Any = None) -> None:
    """Trace calls, casts and the requests fastrpc's RPC servers run, with a
    tracer of ``tracer_provider`` (default: the global one the
    application's SDK set up). ConfigurationError without opentelemetry-api."""
    global on, _tracer, _api
    try:
        api = _Api()
    except ImportError as exc:
        raise ConfigurationError(f"tracing needs opentelemetry-api (pip install 'fastrpc[otel]'): {exc}") from exc
    _api = api
    _tracer = api.trace.get_tracer("fastrpc", __version__, tracer_provider)
    on = True


def disable() -> None:
    global on
    on = False


def enabled() -> bool:
    return on


def _attributes(operation: str, exchange: str | None, routing_key: str | None, method: Any,
                msg_id: str | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
    }
    if exchange is not None:
        attrs["messaging.destination.name"] = exchange
    if routing_key:
        attrs["messaging.rabbitmq.destination.routing_key"] = routing_key
    if msg_id is not None:
        attrs["messaging.message.conversation_id"] = msg_id
    if isinstance(method, str):
        attrs["rpc.method"] = method
    return attrs


def _name(operation: str, exchange: str | None) -> str:
    # "{operation} {destination}"; the default exchange ("") has no name to show.
    return f"{operation} {exchange}" if exchange else operation


def error_type(exc: BaseException) -> str:
    """``error.type`` of an exception: its class, module-qualified unless a builtin."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class Span:
    """One send or one request's processing: :meth:`end` once."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any, token: Any = None) -> None:
        self._span = span
        self._token = token

    def end(self, failure: BaseException | None = None) -> None:
        span = self._span
        if failure is not None and span.is_recording():
            span.set_attribute("error.type", error_type(failure))
            span.set_status(_api.error)
        if self._token is not None:
            _api.context.detach(self._token)
        span.end()


def start_send(exchange: str, routing_key: str, message: dict[str, Any],
               msg_id: str | None) -> tuple[Span, dict[str, Any]]:
    """The PRODUCER span of a call (``msg_id``) or cast, and the message to
    send: a copy carrying the span's context (the caller's is left alone)."""
    api = _api
    span = _tracer.start_span(_name("send", exchange), kind=api.producer,
                              attributes=_attributes("send", exchange, routing_key, message.get("method"), msg_id))
    carrier: dict[str, str] = {}
    api.propagate.inject(carrier, context=api.trace.set_span_in_context(span))
    return Span(span), {**message, CARRIER_KEY: carrier}


def start_process(incoming: Any) -> Span:
    """The CONSUMER span of one request an RPC server runs, made current
    (the endpoint's own spans are its children) until :meth:`Span.end`; its
    parent is the context the request carries, if any."""
    api = _api
    message = incoming.message
    carrier = message.get(CARRIER_KEY)
    parent = None
    if isinstance(carrier, dict):
        try:
            parent = api.propagate.extract(carrier)
        except Exception:  # noqa: BLE001 - a peer's bad carrier: a trace of its own, the request still runs
            LOG.debug("Ignored a request's unreadable trace context")
    exchange = getattr(incoming, "exchange", None)
    span = _tracer.start_span(
        _name("process", exchange), context=parent, kind=api.consumer,
        attributes=_attributes("process", exchange, getattr(incoming, "routing_key", None), message.get("method"),
                               getattr(incoming, "msg_id", None)))
    token = api.context.attach(api.trace.set_span_in_context(span))
    return Span(span, token)
