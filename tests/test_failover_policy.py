"""How the driver fails over: the order hosts are tried in, reconnect delays,
the process-wide bound on connection attempts during an outage, and the
log lines and health an operator reads while it happens."""

from __future__ import annotations

import logging
import socket
import statistics
import threading
import time
from typing import Any

import pytest

from fastrpc import Target, get_rpc_client, get_rpc_transport
from fastrpc.amqp.url import ConnectionParams
from fastrpc.drivers.amqp.connecting import MAX_ATTEMPTS_PER_SECOND, AttemptPacer, Backoff, HostOrder
from fastrpc.drivers.amqp.link import Link
from fastrpc.exceptions import MessageDeliveryFailure, MessagingTimeout
from fastrpc.options import Options

pytestmark = pytest.mark.twins

HOSTS = [ConnectionParams(port=p) for p in (5001, 5002, 5003)]


class _Lost:
    def __init__(self, params: ConnectionParams) -> None:
        self.params = params


def _ports(order: list[ConnectionParams]) -> list[int]:
    return [p.port for p in order]


def test_round_robin_tries_the_host_after_the_lost_one_first() -> None:
    order = HostOrder(HOSTS, "round-robin")
    assert _ports(order.after(None)) == [5001, 5002, 5003]
    assert _ports(order.after(_Lost(HOSTS[0]))) == [5002, 5003, 5001]  # type: ignore[arg-type]
    assert _ports(order.after(_Lost(HOSTS[2]))) == [5001, 5002, 5003]  # type: ignore[arg-type]


def test_shuffle_spreads_owners_over_the_hosts() -> None:
    firsts = [HostOrder(HOSTS, "shuffle").after(None)[0].port for _ in range(600)]
    counts = {port: firsts.count(port) for port in (5001, 5002, 5003)}
    # 200 each on average; a fair shuffle stays far above 100.
    assert min(counts.values()) > 100, counts
    order = HostOrder(HOSTS, "shuffle")
    first = order.after(None)
    # After a loss: the one after the lost host in this owner's own order.
    assert order.after(_Lost(first[0])) == first[1:] + first[:1]  # type: ignore[arg-type]


def test_unknown_failover_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="kombu_failover_strategy"):
        HostOrder(HOSTS, "random")
    with pytest.raises(ValueError, match="kombu_failover_strategy"):
        Options(kombu_failover_strategy="random").validate()


def test_backoff_next_host_at_once_then_full_jitter_up_to_the_limit() -> None:
    conf = Options(rabbit_retry_interval=1, rabbit_retry_backoff=2, rabbit_interval_max=8)
    backoff = Backoff(conf)
    assert backoff.next() == 0.0  # the next host, at once
    ceilings = [1, 3, 6, 8, 8, 8]  # +2 or doubled, whichever is more, up to 8
    for ceiling in ceilings:
        assert 0.0 <= backoff.next() <= ceiling
    samples = []
    for _ in range(400):
        b = Backoff(conf)
        for _ in range(5):
            b.next()
        samples.append(b.next())  # ceiling 8 by now
    # Full jitter: uniform over [0, 8], so spread over the whole range.
    assert min(samples) < 1.0 and max(samples) > 7.0
    assert 3.0 < statistics.mean(samples) < 5.0


def test_attempt_pacer_bounds_failed_attempts_and_refunds_successes() -> None:
    pacer = AttemptPacer(5.0)
    started = time.monotonic()
    for _ in range(5):
        assert pacer.take(None)  # a burst of five at once
    assert time.monotonic() - started < 0.15
    assert not pacer.take(time.monotonic() + 0.05)  # the sixth needs 0.2 s
    assert pacer.take(time.monotonic() + 1.0)
    assert time.monotonic() - started >= 0.15
    for _ in range(5):
        pacer.give_back()  # successful connects cost nothing
    before = time.monotonic()
    for _ in range(5):
        assert pacer.take(None)
    assert time.monotonic() - before < 0.15


def test_link_logs_one_line_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    link = Link("listener for t")
    caplog.set_level(logging.DEBUG, logger="fastrpc.drivers.amqp")
    link.connected("h1:1")
    assert link.health().state == "connected"
    link.lost("h1:1", "connection reset")
    link.lost("h1:1", "connection reset")  # a second report of the same loss
    refused = ConnectionRefusedError("refused")
    for _ in range(5):
        link.attempt_failed(refused, "h2:2", 0.5)
    health = link.health()
    assert (health.state, health.host, health.attempt) == ("reconnecting", "h2:2", 5)
    assert "refused" in str(health.error)
    link.attempt_failed(TimeoutError("timed out"), "h3:3", 1.0)  # another kind of failure
    link.connected("h3:3")
    link.restored("consumers of t")
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len([m for m in loud if "lost the connection" in m]) == 1
    assert len([m for m in loud if "cannot connect" in m]) == 2  # one per kind, not per attempt
    assert len([m for m in loud if "connected to h3:3 again" in m]) == 1
    assert len([m for m in loud if "restored" in m]) == 1
    assert len(loud) == 5
    assert link.health().as_dict()["state"] == "connected"


class _RefusingBroker:
    """A loopback port that accepts TCP and closes at once (a broker that is
    not there yet): counts the connection attempts reaching it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_outage_costs_at_most_five_connection_attempts_per_second() -> None:
    """Eight caller threads and a retrying cast during an outage: the process
    makes at most MAX_ATTEMPTS_PER_SECOND attempts a second (plus one burst),
    and every call ends by its deadline."""
    dead = _RefusingBroker()
    transport = get_rpc_transport(
        url=f"rabbit://guest:guest@127.0.0.1:{dead.port}/?rabbit_retry_interval=0.05&rabbit_retry_backoff=0.05")
    try:
        client = get_rpc_client(transport, Target(topic="nobody"), timeout=3)
        late: list[float] = []
        errors: list[BaseException] = []

        def caller() -> None:
            started = time.monotonic()
            try:
                client.call({}, "ping")
            except (MessagingTimeout, MessageDeliveryFailure) as exc:
                errors.append(exc)
            if time.monotonic() - started > 3 + 1:
                late.append(time.monotonic() - started)

        threads = [threading.Thread(target=caller) for _ in range(8)]
        window_start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        window = time.monotonic() - window_start
        assert not late, f"calls past their deadline: {late}"
        assert len(errors) == 8
        attempts = [a for a in dead.accepted if a >= window_start]
        allowed = MAX_ATTEMPTS_PER_SECOND * (window + 1)  # the rate, plus the initial burst
        assert 1 <= len(attempts) <= allowed, (len(attempts), window)
        health: list[dict[str, Any]] = transport.health()
        assert [h["state"] for h in health] == ["reconnecting"]
        assert not transport.healthy
    finally:
        transport.cleanup()
        dead.close()


def test_health_reports_each_connection_and_recovers(broker: Any) -> None:
    """One entry per connection; after the broker closes them all, each is
    reported reconnecting until it is back and consuming, then connected."""
    url = broker.url.replace("amqp://", "rabbit://") + "?rabbit_retry_interval=0.1&rabbit_retry_backoff=0.1"
    transport = get_rpc_transport(url=url)
    server = None
    try:
        from fastrpc import get_rpc_server

        class Echo:
            def echo(self, ctxt: dict, x: int) -> int:
                return x

        server = get_rpc_server(transport, Target(topic="health", server="s1"), [Echo()], executor="threading")
        server.start()
        client = get_rpc_client(transport, Target(topic="health"), timeout=10)
        assert client.call({}, "echo", x=1) == 1
        health = transport.health()
        assert [h["name"] for h in health] == ["sending connection", "listener for health"]
        assert transport.healthy
        assert all(h["host"] == broker.url.split("@")[1].rstrip("/") for h in health)
        before = {h["name"]: h["since"] for h in health}
        broker.ctl("close_all_connections", "test: health")
        deadline = time.monotonic() + 20

        def recovered() -> bool:
            # Each connection went through a change of state and is back.
            return all(h["state"] == "connected" and h["since"] > before[h["name"]]
                       for h in transport.health())

        while not recovered():
            assert time.monotonic() < deadline, transport.health()
            time.sleep(0.01)
        assert client.call({}, "echo", x=2) == 2
        assert transport.healthy
    finally:
        if server is not None:
            server.stop()
            server.wait()
        transport.cleanup()
