"""A broker that blocks publishing (a memory alarm) on a real node.

RabbitMQ stops reading a connection that publishes during an alarm and tells
it with connection.blocked. Nothing may hang on that: a call ends within its
own timeout (MessagingTimeout), a cast waits up to ``blocked_timeout`` for
the alarm to clear and then fails with MessageDeliveryFailure (it was not
sent), and once the alarm clears everything works again. Both APIs: fastrpc's
own and oslo.messaging's on ``fastrpc://``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import oslo_messaging
import pytest
from test_oslo_interop import oslo_conf

import fastrpc
from fastrpc.testing.node import RabbitNode

pytestmark = pytest.mark.twins

CALL_TIMEOUT = 1.0
BLOCKED_TIMEOUT = 1.5
SLACK = 1.5  # scheduling and the broker's answer on a loaded machine


class Echo:
    def echo(self, ctxt: Any, x: Any) -> Any:
        return x


@pytest.fixture
def alarm(private_node: RabbitNode) -> Iterator[RabbitNode]:
    """The node, with its memory alarm raised by the test and always cleared after."""
    try:
        yield private_node
    finally:
        private_node.set_memory_watermark(0.4)


def _blocked_call(call: Any, timeout_error: type[BaseException]) -> str:
    """Calls until one meets the blocked connection (the first publish of the
    alarm may still go out, and time out waiting for its reply); each ends in
    its own timeout. The last error's text."""
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(timeout_error) as info:
            call()
        assert time.monotonic() - started < CALL_TIMEOUT + SLACK
        if "blocked publishing" in str(info.value):
            return str(info.value)
    raise AssertionError(f"no call met the blocked connection; last error: {info.value}")


def test_fastrpc_calls_time_out_and_casts_fail_while_publishing_is_blocked(alarm: RabbitNode) -> None:
    url = alarm.url.replace("amqp://", "rabbit://")
    server_transport = fastrpc.get_rpc_transport(url=url)
    client_transport = fastrpc.get_rpc_transport(url=f"{url}?blocked_timeout={BLOCKED_TIMEOUT}")
    server = fastrpc.get_rpc_server(server_transport, fastrpc.Target(topic="blocked", server="s1"), [Echo()],
                                    executor="threading")
    server.start()
    try:
        client = fastrpc.get_rpc_client(client_transport, fastrpc.Target(topic="blocked"), timeout=CALL_TIMEOUT)
        assert client.call({}, "echo", x=1) == 1
        alarm.set_memory_watermark(0.00001)
        text = _blocked_call(lambda: client.call({}, "echo", x=2), fastrpc.MessagingTimeout)
        assert "low on memory" in text
        started = time.monotonic()
        with pytest.raises(fastrpc.MessageDeliveryFailure, match="blocked publishing"):
            client.cast({}, "echo", x=3)
        assert BLOCKED_TIMEOUT - 0.1 <= time.monotonic() - started < BLOCKED_TIMEOUT + SLACK
        # A call waits for the alarm up to its own timeout, even past blocked_timeout.
        started = time.monotonic()
        with pytest.raises(fastrpc.MessagingTimeout, match="blocked publishing"):
            client.prepare(timeout=BLOCKED_TIMEOUT + 1.5).call({}, "echo", x=4)
        assert BLOCKED_TIMEOUT + 1.4 <= time.monotonic() - started < BLOCKED_TIMEOUT + 1.5 + SLACK
        alarm.set_memory_watermark(0.4)
        # Publishing resumes once the broker says so; the call waits for that.
        assert client.prepare(timeout=30).call({}, "echo", x=5) == 5
    finally:
        server.stop()
        server.wait()
        server_transport.cleanup()
        client_transport.cleanup()


def test_oslo_api_on_fastrpc_while_publishing_is_blocked(alarm: RabbitNode) -> None:
    url = alarm.url.replace("amqp://", "fastrpc://")
    conf = oslo_conf()
    server_transport = oslo_messaging.get_rpc_transport(conf, url=url)
    client_transport = oslo_messaging.get_rpc_transport(conf, url=f"{url}?blocked_timeout={BLOCKED_TIMEOUT}")
    server = oslo_messaging.get_rpc_server(server_transport, oslo_messaging.Target(topic="blocked-oslo", server="s1"),
                                           [Echo()], executor="threading")
    server.start()
    try:
        client = oslo_messaging.get_rpc_client(client_transport, oslo_messaging.Target(topic="blocked-oslo"),
                                               timeout=CALL_TIMEOUT)
        assert client.call({}, "echo", x=1) == 1
        alarm.set_memory_watermark(0.00001)
        _blocked_call(lambda: client.call({}, "echo", x=2), oslo_messaging.MessagingTimeout)
        started = time.monotonic()
        with pytest.raises(oslo_messaging.MessageDeliveryFailure, match="blocked publishing"):
            client.cast({}, "echo", x=3)
        assert BLOCKED_TIMEOUT - 0.1 <= time.monotonic() - started < BLOCKED_TIMEOUT + SLACK
        alarm.set_memory_watermark(0.4)
        assert client.prepare(timeout=30).call({}, "echo", x=4) == 4
    finally:
        server.stop()
        server.wait()
        server_transport.cleanup()
        client_transport.cleanup()
