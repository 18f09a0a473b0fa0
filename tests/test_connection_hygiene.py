"""Nothing grows with use: channels across many calls and reconnects, memory,
threads and sockets across many reconnect cycles, and queues at cleanup."""

from __future__ import annotations

import gc
import os
import threading
import time

import pytest

from fastrpc.amqp.exceptions import ConnectionLost
from fastrpc.drivers.amqp import AmqpDriver
from fastrpc.options import Options
from fastrpc.target import Target
from fastrpc.transport import TransportURL

pytestmark = pytest.mark.twins

WAIT = 10.0


def _driver(broker) -> AmqpDriver:
    conf = Options(rabbit_retry_interval=0.05, rabbit_retry_backoff=0.05)
    return AmqpDriver(conf, TransportURL.parse(conf, broker.url), "openstack", [])


class _Echo:
    """A listener answered in its reader thread."""

    def __init__(self, driver: AmqpDriver, topic: str) -> None:
        self.listener = driver.listen(Target(topic=topic, server="s1"))
        self.listener.dispatch_inline(lambda msg: msg.reply(msg.message["args"]))


def _call(client: AmqpDriver, topic: str, i: int) -> object:
    return client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": i}}, wait_for_reply=True,
                       timeout=WAIT)


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open_fds() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def _reconnect(client: AmqpDriver) -> None:
    """Kill the sending connection from our side; the next call reconnects."""
    conn = client.sending_connection
    assert conn is not None
    conn.fail(ConnectionLost("test: forced reconnect"))


def _broker_channels(broker) -> list[int]:
    return [int(line) for line in broker.ctl("list_connections", "channels").split() if line.isdigit()]


@pytest.fixture
def topic(request) -> str:
    return f"hyg_{request.node.name}"


def test_channels_constant_over_many_calls_and_reconnects(broker, topic) -> None:
    server, client = _driver(broker), _driver(broker)
    _Echo(server, topic)
    try:
        assert _call(client, topic, -1) == {"i": -1}
        conn = client.sending_connection
        baseline = conn.channel_count
        for i in range(10_000):
            assert _call(client, topic, i) == {"i": i}
        assert client.sending_connection is conn and conn.channel_count == baseline
        for i in range(100):
            _reconnect(client)
            assert _call(client, topic, i) == {"i": i}
        conn = client.sending_connection
        assert conn.channel_count == baseline, "channels leak across reconnects"
        # The broker agrees: no connection of ours holds more than the baseline.
        assert max(_broker_channels(broker)) <= max(baseline, 2)
    finally:
        client.cleanup()
        server.cleanup()


def test_memory_threads_and_sockets_flat_over_1000_reconnects(broker, topic) -> None:
    server, client = _driver(broker), _driver(broker)
    _Echo(server, topic)
    try:
        assert _call(client, topic, -1) == {"i": -1}

        def cycles(n: int) -> None:
            for i in range(n):
                _reconnect(client)
                assert _call(client, topic, i) == {"i": i}

        cycles(200)  # warm up: caches, the allocator's arenas
        gc.collect()
        rss, fds, threads = _rss_kib(), _open_fds(), threading.active_count()
        cycles(800)
        gc.collect()
        # Joined threads of dead connections may take a moment to go.
        deadline = time.monotonic() + WAIT
        while threading.active_count() > threads + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        grown = _rss_kib() - rss
        assert grown < 8 * 1024, f"RSS grew by {grown} KiB over 800 reconnects"
        assert _open_fds() <= fds + 2
        assert threading.active_count() <= threads + 2
    finally:
        client.cleanup()
        server.cleanup()


def test_reply_and_fanout_queues_deleted_at_cleanup(broker, topic) -> None:
    server, client = _driver(broker), _driver(broker)
    echo = _Echo(server, topic)
    assert _call(client, topic, 1) == {"i": 1}
    reply_q, fanout_q = client.reply_queue, echo.listener.fanout_queue
    names = broker.ctl("list_queues", "name").split()
    assert reply_q in names and fanout_q in names
    client.cleanup()
    server.cleanup()
    names = broker.ctl("list_queues", "name").split()
    assert reply_q not in names
    assert fanout_q not in names
