"""Malformed requests published raw into a fastrpc server's queue.

Each case: the reason is logged (never the body), the message is not requeued
in a loop, a caller whose reply queue is known gets an error reply instead of a
timeout, and the server still answers a normal call afterwards.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid

import msgpack
import pytest

from fastrpc import envelope
from fastrpc.amqp.connection import Connection
from fastrpc.client import get_rpc_client
from fastrpc.drivers.topology import publish_properties
from fastrpc.exceptions import MessageDeliveryFailure, RemoteError
from fastrpc.failures import deserialize_remote_exception
from fastrpc.options import Options
from fastrpc.server import get_rpc_server
from fastrpc.target import Target
from fastrpc.transport import get_rpc_transport

pytestmark = pytest.mark.twins

WAIT = 10.0
SECRET = "hunter2-do-not-log"


class LogWatch(logging.Handler):
    """Collects fastrpc's warnings and lets a test wait for one to appear.

    The bad message and the good call travel on different connections and may
    be handled by different workers, so the log line can come after the reply.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._cond = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._cond:
            self.messages.append(record.getMessage())
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = WAIT) -> list[str]:
        with self._cond:
            self._cond.wait_for(lambda: any(text in m for m in self.messages), timeout)
            return [m for m in self.messages if text in m]


@pytest.fixture
def logwatch():
    watch = LogWatch()
    logger = logging.getLogger("fastrpc")
    logger.addHandler(watch)
    old = logger.level
    logger.setLevel(min(old or logging.WARNING, logging.WARNING))
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(old)


class Endpoint:
    def ping(self, ctxt, n):
        return n + 1


@pytest.fixture
def served(broker, request):
    topic = "bad_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:60]
    transport = get_rpc_transport(Options(), url=broker.url)
    srv = get_rpc_server(transport, Target(topic=topic, server="s1"), [Endpoint()], executor="threading")
    srv.start()
    client = get_rpc_client(transport, Target(topic=topic), timeout=WAIT)
    assert client.call({}, "ping", n=1) == 2
    yield topic, client, transport
    srv.stop()
    srv.wait()
    transport.cleanup()


@pytest.fixture
def raw(broker):
    """A raw connection with its own reply queue, to play a broken caller."""
    conn = Connection(broker.url)
    conn.connect()
    ch = conn.channel()
    reply_q = "reply_" + uuid.uuid4().hex
    ch.queue_declare(reply_q, durable=False, auto_delete=False, exclusive=False,
                     arguments={"x-expires": 1800000})
    replies: queue.SimpleQueue = queue.SimpleQueue()
    ch.basic_consume(reply_q, replies.put, no_ack=True)
    yield ch, reply_q, replies
    conn.close()


def wrap(inner: dict | str, version: str = "2.0") -> bytes:
    text = inner if isinstance(inner, str) else json.dumps(inner)
    return json.dumps({"oslo.version": version, "oslo.message": text}).encode()


def error_reply(replies, msg_id):
    delivery = replies.get(timeout=WAIT)
    reply = envelope.decode_reply(delivery.body, delivery.properties.get("content_type"))
    assert reply.msg_id == msg_id and reply.ending is True and reply.result is None
    return reply


# (case id, inner-message builder given (msg_id, reply_q), content type, expected reason)
REPLYABLE = [
    ("missing-method", lambda m, q: wrap({"args": {"password": SECRET}, "_msg_id": m, "_reply_q": q}),
     "application/json", "missing method"),
    ("args-not-mapping", lambda m, q: wrap({"method": "ping", "args": [SECRET], "_msg_id": m, "_reply_q": q}),
     "application/json", "args is not a mapping"),
    ("method-not-string", lambda m, q: wrap({"method": 42, "args": {}, "_msg_id": m, "_reply_q": q}),
     "application/json", "method is not a non-empty string"),
    ("msgpack-args-not-mapping",
     lambda m, q: msgpack.packb({"oslo.version": "2.0", "oslo.message": {"method": "ping", "args": 5,
                                                                         "_msg_id": m, "_reply_q": q}}),
     "application/msgpack", "args is not a mapping"),
]


@pytest.mark.parametrize("case, build, ctype, reason", REPLYABLE, ids=[c[0] for c in REPLYABLE])
def test_bad_call_gets_error_reply(served, raw, caplog, case, build, ctype, reason):
    topic, client, _transport = served
    ch, reply_q, replies = raw
    msg_id = uuid.uuid4().hex
    caplog.set_level(logging.WARNING, logger="fastrpc")
    ch.basic_publish("openstack", topic, build(msg_id, reply_q), publish_properties(ctype))
    reply = error_reply(replies, msg_id)
    failure = json.loads(reply.failure)
    assert failure["class"] == "EnvelopeError"
    assert reason in failure["message"]
    assert SECRET not in reply.failure
    exc = deserialize_remote_exception(reply.failure, [])
    assert isinstance(exc, RemoteError) and reason in str(exc)
    # logged with its reason, never with the body
    logged = [r.getMessage() for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(logged) == 1 and reason in logged[0]
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert client.call({}, "ping", n=41) == 42
    # rejected, not requeued: it was seen exactly once
    assert len([r for r in caplog.records if "malformed request" in r.getMessage()]) == 1


UNREPLYABLE = [
    ("not-json", b"\x00\x01\x02 not json " + SECRET.encode(), "application/json", "body is not valid JSON"),
    ("not-msgpack", b"\xc1\xc1", "application/msgpack", "body is not valid msgpack"),
    ("unknown-content-type", b"{}", "text/plain", "unsupported content type"),
    ("unknown-version", wrap({"method": "ping", "args": {}}, version="9.0"), "application/json",
     "unsupported oslo.version"),
    ("message-not-json", wrap("{" + SECRET), "application/json", "oslo.message is not valid JSON"),
    ("envelope-not-mapping", b"[1, 2, 3]", "application/json", "envelope is not a mapping"),
    ("cast-missing-method", wrap({"args": {}}), "application/json", "missing method"),
]


@pytest.mark.parametrize("case, body, ctype, reason", UNREPLYABLE, ids=[c[0] for c in UNREPLYABLE])
def test_bad_message_is_logged_and_dropped(served, raw, logwatch, broker, case, body, ctype, reason):
    topic, client, _transport = served
    ch, _reply_q, _replies = raw
    ch.basic_publish("openstack", topic, body, publish_properties(ctype))
    assert client.call({}, "ping", n=1) == 2
    logged = logwatch.wait_for("malformed request")
    assert len(logged) == 1 and reason in logged[0]
    assert all(SECRET not in m for m in logwatch.messages)
    assert client.call({}, "ping", n=2) == 3
    assert len(logwatch.wait_for("malformed request")) == 1
    # nothing left behind in the server's queue
    rows = [line.split("\t") for line in broker.ctl("list_queues", "name", "messages").splitlines()]
    assert [topic, "0"] in [row[:2] for row in rows]


def test_oversized_body_rejected(served, raw, logwatch):
    topic, client, transport = served
    ch, reply_q, replies = raw
    # a small limit keeps the test light; the check is the same at any size
    limit = transport._driver.max_body = 4096
    msg_id = uuid.uuid4().hex
    body = wrap({"method": "ping", "args": {"n": 1, "pad": "x" * (limit + 1)}, "_msg_id": msg_id,
                 "_reply_q": reply_q})
    ch.basic_publish("openstack", topic, body, publish_properties("application/json"))
    assert client.call({}, "ping", n=1) == 2
    logged = logwatch.wait_for("malformed request")
    assert len(logged) == 1 and "exceeds the limit" in logged[0]
    # too big to read, so nobody to answer: the caller is not known
    assert replies.empty()


class BigReplies:
    def ping(self, ctxt, n):
        return n + 1

    def blob(self, ctxt, size):
        return "x" * size


def test_max_message_size_option_limits_both_directions(broker, request, logwatch):
    """max_message_size: a request over it is refused before sending, a reply
    over it becomes an error reply (not a timeout), a request received over it
    is rejected; the server keeps serving."""
    limit = 4096
    topic = "bad_max_" + request.node.name[:40]
    small = get_rpc_transport(Options(max_message_size=limit), url=broker.url)
    large = get_rpc_transport(Options(), url=broker.url)
    srv = get_rpc_server(small, Target(topic=topic, server="s1"), [BigReplies()], executor="threading")
    srv.start()
    try:
        big_client = get_rpc_client(large, Target(topic=topic), timeout=WAIT)
        small_client = get_rpc_client(small, Target(topic=topic), timeout=WAIT)
        # refused before it is sent: a clear error at once, nothing published
        with pytest.raises(MessageDeliveryFailure, match="max_message_size"):
            small_client.call({}, "ping", n=1, pad="x" * limit)
        with pytest.raises(MessageDeliveryFailure, match="max_message_size"):
            small_client.cast({}, "ping", n=1, pad="x" * limit)
        # a reply that would be too big: the caller learns why
        with pytest.raises(ValueError, match="max_message_size"):
            big_client.call({}, "blob", size=2 * limit)
        assert small_client.call({}, "blob", size=10) == "x" * 10
        # received over the server's limit (sent by a peer with a larger one):
        # rejected and logged; too big to read, so no reply either
        big_client.cast({}, "ping", n=1, pad="x" * (limit + 1))
        logged = logwatch.wait_for("malformed request")
        assert len(logged) == 1 and "exceeds the limit" in logged[0]
        assert big_client.call({}, "ping", n=1) == 2
    finally:
        srv.stop()
        srv.wait()
        small.cleanup()
        large.cleanup()


class Unencodable:
    """Results that no body can hold: the caller is told why, at once."""

    def opaque(self, ctxt):
        return object()

    def broken(self, ctxt):
        class Broken:
            def to_dict(self):
                raise KeyError("no such field")
        return {"ok": [1, Broken()]}

    def ping(self, ctxt, n):
        return n + 1


@pytest.mark.parametrize("serialization", ["json", "msgpack"])
def test_a_result_that_cannot_be_encoded_is_an_error_reply(broker, request, logwatch, serialization):
    topic = "bad_result_" + request.node.name[-20:].replace("[", "_").replace("]", "")
    transport = get_rpc_transport(Options(serialization=serialization), url=broker.url)
    srv = get_rpc_server(transport, Target(topic=topic, server="s1"), [Unencodable()], executor="threading")
    srv.start()
    try:
        client = get_rpc_client(transport, Target(topic=topic), timeout=WAIT)
        # a ValueError from the server, not a MessagingTimeout
        with pytest.raises(ValueError, match="the result could not be encoded: cannot encode message"):
            client.call({}, "opaque")
        # the value's to_dict() raised: orjson reports it as a value it cannot
        # encode, the msgpack writer passes the KeyError on
        with pytest.raises(ValueError, match="could not be encoded: (KeyError|cannot encode message)"):
            client.call({}, "broken")
        assert len(logwatch.wait_for("could not be encoded")) == 2
        assert client.call({}, "ping", n=1) == 2
    finally:
        srv.stop()
        srv.wait()
        transport.cleanup()
