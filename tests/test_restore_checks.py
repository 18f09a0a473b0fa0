"""What a reconnect must restore even when the broker forgets it right after.

After a node dies the cluster deletes its queues and their bindings by name,
a fraction of a second after the clients have already declared them again
elsewhere; and a call sent meanwhile finds no queue bound. These tests make
the same situations on one private node: a request nobody can take yet, and
a binding deleted just after a listener was restored."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fastrpc.amqp.connection import Connection
from fastrpc.amqp.exceptions import ConnectionLost
from fastrpc.amqp.url import ConnectionParams
from fastrpc.drivers.amqp import AmqpDriver
from fastrpc.exceptions import MessagingTimeout
from fastrpc.options import Options
from fastrpc.target import Target
from fastrpc.transport import TransportURL

pytestmark = pytest.mark.twins

TIMEOUT = 10.0


def _driver(broker: Any) -> AmqpDriver:
    conf = Options(rabbit_retry_interval=0.05, rabbit_retry_backoff=0.05)
    return AmqpDriver(conf, TransportURL.parse(conf, broker.url), "openstack", [])


def _wait(predicate: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _serve(driver: AmqpDriver, topic: str) -> Any:
    listener = driver.listen(Target(topic=topic, server="s1"))
    listener.dispatch_inline(lambda msg: msg.reply(msg.message["args"]["i"]))
    return listener


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return f"restore_{request.node.name}"


def test_call_sent_before_its_server_listens_is_answered_once_it_does(broker: Any, topic: str) -> None:
    """The broker returns the request (no queue bound): the caller sends it
    again until its deadline, so the server that comes up meanwhile answers."""
    client, server = _driver(broker), _driver(broker)
    try:
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": 7}},
                                           wait_for_reply=True, timeout=TIMEOUT))
            except Exception as exc:
                outcome.append(exc)

        caller = threading.Thread(target=call)
        started = time.monotonic()
        caller.start()
        # Published, and settled by the broker (returned, then acked), before any server exists.
        _wait(lambda: client.waiting_calls and client.sending_connection is not None
              and client.sending_connection.pending_confirms == 0, "the request to be sent")
        _serve(server, topic)
        caller.join(TIMEOUT + 2)
        assert outcome == [7]
        assert time.monotonic() - started < TIMEOUT
    finally:
        client.cleanup()
        server.cleanup()


def test_binding_deleted_after_a_restore_is_made_again(broker: Any, topic: str) -> None:
    """A listener's binding deleted right after it reconnected (as the
    cluster's cleanup of a dead node does) is bound again within seconds,
    and a call sent meanwhile gets through."""
    client, server = _driver(broker), _driver(broker)
    admin = Connection(ConnectionParams(host=broker.host, port=broker.port)).connect()
    try:
        listener = _serve(server, topic)
        assert client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": 1}}, wait_for_reply=True,
                           timeout=TIMEOUT) == 1
        conn = listener.connection
        assert conn is not None
        conn.fail(ConnectionLost("test: forced reconnect"))
        _wait(lambda: listener.reconnects == 1 and listener.connection is not None, "the listener to reconnect")
        admin.channel().queue_unbind(topic, "openstack", topic)
        started = time.monotonic()
        assert client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": 2}}, wait_for_reply=True,
                           timeout=TIMEOUT) == 2
        assert time.monotonic() - started < TIMEOUT
    finally:
        admin.close()
        client.cleanup()
        server.cleanup()


def test_casts_are_not_held_up_behind_the_reply_queue(broker: Any, topic: str) -> None:
    """While the reply queue is being declared (on RabbitMQ 3.x a hung
    cluster member holds such a declaration up for a minute), casts and
    at-least-once casts go out, and a call waits no longer than its timeout."""
    client, server = _driver(broker), _driver(broker)
    try:
        hits: list[int] = []
        listener = server.listen(Target(topic=topic, server="s1"))
        listener.dispatch_inline(lambda msg: hits.append(msg.message["args"]["i"]))
        replies = client._replies
        assert replies._lock.acquire(timeout=TIMEOUT)  # a declaration in progress
        try:
            started = time.monotonic()
            client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": 1}})
            client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": 2}}, at_least_once=True)
            _wait(lambda: hits == [1, 2], "both casts to be handled")
            assert time.monotonic() - started < TIMEOUT / 2
            with pytest.raises(MessagingTimeout):
                client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": 3}}, wait_for_reply=True,
                            timeout=0.5)
            assert time.monotonic() - started < TIMEOUT / 2
        finally:
            replies._lock.release()
    finally:
        client.cleanup()
        server.cleanup()
