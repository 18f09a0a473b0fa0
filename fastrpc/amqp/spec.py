"""AMQP 0-9-1 facts shared by both codec implementations.

Everything here is data: frame constants, the method table, the basic
properties, the events a ``FrameReader`` returns and the error it raises.
The pure-Python codec (``codec_py``) and the compiled one (``fastrpc._ext.codec``)
both read this module, so the two can never disagree on a field list.
"""

from __future__ import annotations

from typing import Any, NamedTuple

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_HEADER_SIZE = 7  # type (1) + channel (2) + size (4)
FRAME_OVERHEAD = 8  # header + frame-end byte

DEFAULT_FRAME_MAX = 131072
MIN_FRAME_MAX = 4096
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024  # RabbitMQ's own default limit
MAX_TABLE_DEPTH = 32  # nesting of tables/arrays inside one field table

# Field types of method arguments and properties.
BIT = "bit"
OCTET = "octet"
SHORT = "short"
LONG = "long"
LONGLONG = "longlong"
SHORTSTR = "shortstr"
LONGSTR = "longstr"
TABLE = "table"
TIMESTAMP = "timestamp"


class MethodSpec(NamedTuple):
    class_id: int
    method_id: int
    name: str  # "class.method", e.g. "basic.deliver"
    fields: tuple[tuple[str, str], ...]  # (field name, field type) in wire order
    has_content: bool


_RESERVED_TICKET = ("ticket", SHORT)

_METHODS: list[tuple[int, int, str, tuple[tuple[str, str], ...], bool]] = [
    # connection
    (10, 10, "connection.start", (("version_major", OCTET), ("version_minor", OCTET), ("server_properties", TABLE), ("mechanisms", LONGSTR), ("locales", LONGSTR)), False),
    (10, 11, "connection.start-ok", (("client_properties", TABLE), ("mechanism", SHORTSTR), ("response", LONGSTR), ("locale", SHORTSTR)), False),
    (10, 20, "connection.secure", (("challenge", LONGSTR),), False),
    (10, 21, "connection.secure-ok", (("response", LONGSTR),), False),
    (10, 30, "connection.tune", (("channel_max", SHORT), ("frame_max", LONG), ("heartbeat", SHORT)), False),
    (10, 31, "connection.tune-ok", (("channel_max", SHORT), ("frame_max", LONG), ("heartbeat", SHORT)), False),
    (10, 40, "connection.open", (("virtual_host", SHORTSTR), ("capabilities", SHORTSTR), ("insist", BIT)), False),
    (10, 41, "connection.open-ok", (("known_hosts", SHORTSTR),), False),
    (10, 50, "connection.close", (("reply_code", SHORT), ("reply_text", SHORTSTR), ("class_id", SHORT), ("method_id", SHORT)), False),
    (10, 51, "connection.close-ok", (), False),
    (10, 60, "connection.blocked", (("reason", SHORTSTR),), False),
    (10, 61, "connection.unblocked", (), False),
    (10, 70, "connection.update-secret", (("new_secret", LONGSTR), ("reason", SHORTSTR)), False),
    (10, 71, "connection.update-secret-ok", (), False),
    # channel
    (20, 10, "channel.open", (("out_of_band", SHORTSTR),), False),
    (20, 11, "channel.open-ok", (("channel_id", LONGSTR),), False),
    (20, 20, "channel.flow", (("active", BIT),), False),
    (20, 21, "channel.flow-ok", (("active", BIT),), False),
    (20, 40, "channel.close", (("reply_code", SHORT), ("reply_text", SHORTSTR), ("class_id", SHORT), ("method_id", SHORT)), False),
    (20, 41, "channel.close-ok", (), False),
    # exchange
    (40, 10, "exchange.declare", (_RESERVED_TICKET, ("exchange", SHORTSTR), ("type", SHORTSTR), ("passive", BIT), ("durable", BIT), ("auto_delete", BIT), ("internal", BIT), ("nowait", BIT), ("arguments", TABLE)), False),
    (40, 11, "exchange.declare-ok", (), False),
    (40, 20, "exchange.delete", (_RESERVED_TICKET, ("exchange", SHORTSTR), ("if_unused", BIT), ("nowait", BIT)), False),
    (40, 21, "exchange.delete-ok", (), False),
    (40, 30, "exchange.bind", (_RESERVED_TICKET, ("destination", SHORTSTR), ("source", SHORTSTR), ("routing_key", SHORTSTR), ("nowait", BIT), ("arguments", TABLE)), False),
    (40, 31, "exchange.bind-ok", (), False),
    (40, 40, "exchange.unbind", (_RESERVED_TICKET, ("destination", SHORTSTR), ("source", SHORTSTR), ("routing_key", SHORTSTR), ("nowait", BIT), ("arguments", TABLE)), False),
    (40, 51, "exchange.unbind-ok", (), False),
    # queue
    (50, 10, "queue.declare", (_RESERVED_TICKET, ("queue", SHORTSTR), ("passive", BIT), ("durable", BIT), ("exclusive", BIT), ("auto_delete", BIT), ("nowait", BIT), ("arguments", TABLE)), False),
    (50, 11, "queue.declare-ok", (("queue", SHORTSTR), ("message_count", LONG), ("consumer_count", LONG)), False),
    (50, 20, "queue.bind", (_RESERVED_TICKET, ("queue", SHORTSTR), ("exchange", SHORTSTR), ("routing_key", SHORTSTR), ("nowait", BIT), ("arguments", TABLE)), False),
    (50, 21, "queue.bind-ok", (), False),
    (50, 30, "queue.purge", (_RESERVED_TICKET, ("queue", SHORTSTR), ("nowait", BIT)), False),
    (50, 31, "queue.purge-ok", (("message_count", LONG),), False),
    (50, 40, "queue.delete", (_RESERVED_TICKET, ("queue", SHORTSTR), ("if_unused", BIT), ("if_empty", BIT), ("nowait", BIT)), False),
    (50, 41, "queue.delete-ok", (("message_count", LONG),), False),
    (50, 50, "queue.unbind", (_RESERVED_TICKET, ("queue", SHORTSTR), ("exchange", SHORTSTR), ("routing_key", SHORTSTR), ("arguments", TABLE)), False),
    (50, 51, "queue.unbind-ok", (), False),
    # basic
    (60, 10, "basic.qos", (("prefetch_size", LONG), ("prefetch_count", SHORT), ("global_", BIT)), False),
    (60, 11, "basic.qos-ok", (), False),
    (60, 20, "basic.consume", (_RESERVED_TICKET, ("queue", SHORTSTR), ("consumer_tag", SHORTSTR), ("no_local", BIT), ("no_ack", BIT), ("exclusive", BIT), ("nowait", BIT), ("arguments", TABLE)), False),
    (60, 21, "basic.consume-ok", (("consumer_tag", SHORTSTR),), False),
    (60, 30, "basic.cancel", (("consumer_tag", SHORTSTR), ("nowait", BIT)), False),
    (60, 31, "basic.cancel-ok", (("consumer_tag", SHORTSTR),), False),
    (60, 40, "basic.publish", (_RESERVED_TICKET, ("exchange", SHORTSTR), ("routing_key", SHORTSTR), ("mandatory", BIT), ("immediate", BIT)), True),
    (60, 50, "basic.return", (("reply_code", SHORT), ("reply_text", SHORTSTR), ("exchange", SHORTSTR), ("routing_key", SHORTSTR)), True),
    (60, 60, "basic.deliver", (("consumer_tag", SHORTSTR), ("delivery_tag", LONGLONG), ("redelivered", BIT), ("exchange", SHORTSTR), ("routing_key", SHORTSTR)), True),
    (60, 70, "basic.get", (_RESERVED_TICKET, ("queue", SHORTSTR), ("no_ack", BIT)), False),
    (60, 71, "basic.get-ok", (("delivery_tag", LONGLONG), ("redelivered", BIT), ("exchange", SHORTSTR), ("routing_key", SHORTSTR), ("message_count", LONG)), True),
    (60, 72, "basic.get-empty", (("cluster_id", SHORTSTR),), False),
    (60, 80, "basic.ack", (("delivery_tag", LONGLONG), ("multiple", BIT)), False),
    (60, 90, "basic.reject", (("delivery_tag", LONGLONG), ("requeue", BIT)), False),
    (60, 100, "basic.recover-async", (("requeue", BIT),), False),
    (60, 110, "basic.recover", (("requeue", BIT),), False),
    (60, 111, "basic.recover-ok", (), False),
    (60, 120, "basic.nack", (("delivery_tag", LONGLONG), ("multiple", BIT), ("requeue", BIT)), False),
    # confirm
    (85, 10, "confirm.select", (("nowait", BIT),), False),
    (85, 11, "confirm.select-ok", (), False),
    # tx
    (90, 10, "tx.select", (), False),
    (90, 11, "tx.select-ok", (), False),
    (90, 20, "tx.commit", (), False),
    (90, 21, "tx.commit-ok", (), False),
    (90, 30, "tx.rollback", (), False),
    (90, 31, "tx.rollback-ok", (), False),
]

METHODS: dict[tuple[int, int], MethodSpec] = {
    (c, m): MethodSpec(c, m, name, fields, content) for c, m, name, fields, content in _METHODS
}
METHODS_BY_NAME: dict[str, MethodSpec] = {spec.name: spec for spec in METHODS.values()}

CLASS_BASIC = 60

# Basic properties in wire order; property i is flagged by bit (15 - i) of the
# first property-flags word.
BASIC_PROPERTIES: tuple[tuple[str, str], ...] = (
    ("content_type", SHORTSTR),
    ("content_encoding", SHORTSTR),
    ("headers", TABLE),
    ("delivery_mode", OCTET),
    ("priority", OCTET),
    ("correlation_id", SHORTSTR),
    ("reply_to", SHORTSTR),
    ("expiration", SHORTSTR),
    ("message_id", SHORTSTR),
    ("timestamp", TIMESTAMP),
    ("type", SHORTSTR),
    ("user_id", SHORTSTR),
    ("app_id", SHORTSTR),
    ("cluster_id", SHORTSTR),
)
BASIC_PROPERTY_NAMES = frozenset(name for name, _ in BASIC_PROPERTIES)

# Reply codes the broker uses in connection.close / channel.close.
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR_CODE = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541


class FrameError(ValueError):
    """Malformed or unacceptable AMQP input.

    ``channel`` is the frame's channel when known (else None), ``offset`` the
    byte offset in the whole stream fed to the reader where the problem was
    found, ``reason`` a short description.
    """

    def __init__(self, reason: str, channel: int | None = None, offset: int | None = None) -> None:
        self.reason = reason
        self.channel = channel
        self.offset = offset
        where = []
        if channel is not None:
            where.append(f"channel {channel}")
        if offset is not None:
            where.append(f"offset {offset}")
        prefix = f"AMQP frame error ({', '.join(where)}): " if where else "AMQP frame error: "
        super().__init__(prefix + reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.channel, self.offset))


# ---- events returned by FrameReader.feed(), in stream order ----------------


class Delivery(NamedTuple):
    """basic.deliver with its content header and body, reassembled."""

    channel: int
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    properties: dict[str, Any]  # only the properties present on the wire
    body: bytes


class Returned(NamedTuple):
    """basic.return (an unroutable mandatory publish) with its content."""

    channel: int
    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str
    properties: dict[str, Any]
    body: bytes


class ContentMethod(NamedTuple):
    """Any other content-carrying method (basic.publish, basic.get-ok)."""

    channel: int
    name: str
    args: dict[str, Any]
    properties: dict[str, Any]
    body: bytes


class Method(NamedTuple):
    """A method without content: name like "basic.ack", args by field name."""

    channel: int
    name: str
    args: dict[str, Any]


class Heartbeat(NamedTuple):
    channel: int = 0


Event = Delivery | Returned | ContentMethod | Method | Heartbeat


# ---- FrameError conventions shared by both readers ---------------------------
#
# Offsets are absolute: counted from the first byte ever fed to the reader.
# "frame start" is the offset of the frame's type octet; "payload" starts 7
# bytes later.  Each malformed case reports the offset below and a reason that
# contains the phrase in quotes (tests match it case-insensitively):
#
#   bad frame-end octet            end octet itself        "frame-end"
#   frame larger than frame_max    frame start             "frame_max"
#     (size + FRAME_OVERHEAD > frame_max; detected from the 7-byte frame
#     header alone, before the payload arrives, so nothing is allocated)
#   unknown frame type             frame start             "unknown frame type"
#   broker sent a protocol header  frame start             "protocol header"
#     (channel is None: the bytes after "AMQP" are not a channel number)
#   truncated field                position of the read    "truncated"
#     that overran its bound: the payload end for method/header fields, the
#     enclosing table/array end for values inside it (for a string, the read
#     of its bytes starts right after the length prefix)
#   unknown class / method         payload start           "unknown method"
#   bad table/array field type     the type octet          "field type"
#   table nesting too deep         type octet of the       "nesting"
#     ('F'/'A') container that would be level MAX_TABLE_DEPTH + 1; the
#     outermost table of a method argument or property is level 1
#   header body size over          the body-size field     "max_message_size"
#     max_message_size               (payload start + 4)
#   body frames exceeding the      frame start of the      "body size"
#     header's body size             offending body frame
#   content header / body with     frame start             "without"
#     no content method pending
#   body frame before the header,  frame start             "unexpected"
#     or a second header
#   method frame while content     frame start             "middle of content"
#     is pending on that channel
#
# Channel is the frame's channel in every case except the protocol header.

MAX_SHORTSTR = 255  # bytes of a shortstr
