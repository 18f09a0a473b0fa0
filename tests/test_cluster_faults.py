"""RPC through the loss of a broker node, on a real 3-node cluster.

Each test runs a server and a client the way a service does, with numbered
calls every 0.1 s, hits a node, and asserts what an operator cares about:
calls resume within a bound, no call outlives its deadline, nothing
confirmed is lost, no handler sees a duplicate. The shared cluster has
net_ticktime 10, so the broker itself notices a silent node in 10-12 s; the
plugin restores the cluster after each test. The long repeated runs that
give the figures in docs/RELIABILITY.md are in bench/drills.py.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from fastrpc import Target, TransportOptions, get_rpc_client, get_rpc_server, get_rpc_transport
from fastrpc.testing import RabbitCluster

TIMEOUT = 5.0  # each call's timeout
LATE = TIMEOUT + 1.0  # a call that takes longer outlived its deadline
FAST_RETRY = "rabbit_retry_interval=0.2&rabbit_retry_backoff=0.2&rabbit_interval_max=2"
QUORUM = "rabbit_quorum_queue=true&rabbit_transient_quorum_queue=true"
# Quorum queues make the topic exchange durable: an exchange of their own.
QUORUM_EXCHANGE = "fastrpc_quorum"


def _url(cluster: RabbitCluster, order: list[int], query: str = "") -> str:
    """A transport URL over the cluster's nodes, in ``order`` (index 0 = node 1)."""
    hosts = ",".join(f"guest:guest@127.0.0.1:{cluster.nodes[i].port}" for i in order)
    return f"rabbit://{hosts}/?{FAST_RETRY}" + (f"&{query}" if query else "")


class Echo:
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.on_call: Any = None

    def echo(self, ctxt: dict, n: int) -> int:
        self.seen.append(n)
        if self.on_call is not None:
            self.on_call(n)
        return n


@dataclass
class Call:
    n: int
    started: float
    ended: float
    outcome: str  # "ok" or the exception's class name

    @property
    def took(self) -> float:
        return self.ended - self.started


class Service:
    """A server (its own transport) and a client calling it every ``period``
    seconds from a thread, recording every call."""

    def __init__(self, server_url: str, client_url: str, topic: str, period: float = 0.1,
                 exchange: str | None = None) -> None:
        self.endpoint = Echo()
        self.server_transport = get_rpc_transport(url=server_url)
        self.client_transport = get_rpc_transport(url=client_url)
        self.server = get_rpc_server(self.server_transport, Target(exchange=exchange, topic=topic, server="s1"),
                                     [self.endpoint], executor="threading")
        self.server.start()
        self.client = get_rpc_client(self.client_transport, Target(exchange=exchange, topic=topic),
                                     timeout=TIMEOUT)
        self.period = period
        self.calls: list[Call] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def call_once(self, n: int) -> Call:
        started = time.monotonic()
        try:
            assert self.client.call({}, "echo", n=n) == n
            outcome = "ok"
        except Exception as exc:
            outcome = type(exc).__name__
        call = Call(n, started, time.monotonic(), outcome)
        self.calls.append(call)
        return call

    def start_calling(self) -> None:
        def loop() -> None:
            n = 0
            while not self._stop.is_set() and n < 100_000:
                n += 1
                self.call_once(n)
                self._stop.wait(self.period)

        self._thread = threading.Thread(target=loop, name="calls", daemon=True)
        self._thread.start()

    def wait_healthy(self, since: float, within: float, streak: int = 10) -> float:
        """Seconds from ``since`` to the first of ``streak`` successful calls
        in a row that started after ``since``; fails after ``within``."""
        deadline = since + within + LATE
        while time.monotonic() < deadline:
            run = 0
            for call in list(self.calls):
                if call.started < since:
                    continue
                run = run + 1 if call.outcome == "ok" else 0
                if run == 1:
                    first = call.started
                if run >= streak:
                    took = first - since
                    assert took <= within, f"healthy after {took:.1f}s, more than {within}s"
                    return took
            time.sleep(0.1)
        raise AssertionError(f"calls not healthy within {within}s: {self.summary(since)}")

    def summary(self, since: float) -> str:
        after = [c for c in self.calls if c.started >= since - LATE]
        return ", ".join(f"{c.n}:{c.outcome}:{c.took:.1f}s" for c in after[:80])

    def late_calls(self) -> list[Call]:
        return [c for c in self.calls if c.took > LATE]

    def failed_since(self, since: float) -> list[Call]:
        return [c for c in self.calls if c.ended >= since and c.outcome != "ok"]

    def sender_health(self) -> dict[str, Any]:
        return next(h for h in self.client_transport.health() if h["name"] == "sending connection")

    def abandoned_within(self, since: float, within: float, before: dict[str, Any]) -> float:
        """Seconds from ``since`` until the client's sending connection left
        the state ``before`` described (lost; maybe already connected again)."""
        deadline = since + within + 2
        while time.monotonic() < deadline:
            if self.sender_health()["since"] != before["since"]:
                return time.monotonic() - since
            time.sleep(0.05)
        raise AssertionError(f"the client kept its dead connection for more than {within}s: "
                             f"{self.client_transport.health()}")

    def survive(self, fault: Any, abandon_within: float, healthy_within: float) -> None:
        """Call steadily, apply ``fault()``, and check the outcome: the
        client leaves its connection within ``abandon_within``, calls are
        healthy again within ``healthy_within``, none outlives its deadline."""
        self.start_calling()
        self.wait_healthy(time.monotonic() - 1, within=10)
        before = self.sender_health()
        hit_at = time.monotonic()
        fault()
        assert self.abandoned_within(hit_at, abandon_within, before) <= abandon_within
        self.wait_healthy(hit_at, within=healthy_within)
        assert not self.late_calls(), self.summary(hit_at)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(LATE + 5)
        try:
            self.server.stop()
            self.server.wait()
        finally:
            self.client_transport.cleanup()
            self.server_transport.cleanup()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    return f"faults_{request.node.name.replace('[', '_').replace(']', '')}"


def test_kill_of_the_node_client_and_server_are_on(rabbit_cluster: RabbitCluster, topic: str) -> None:
    url = _url(rabbit_cluster, [0, 1, 2])
    svc = Service(url, url, topic)
    try:
        svc.start_calling()
        svc.wait_healthy(time.monotonic() - 1, within=10)
        killed_at = time.monotonic()
        rabbit_cluster.kill(0)
        took = svc.wait_healthy(killed_at, within=10)
        assert not svc.late_calls(), svc.summary(killed_at)
        assert len(svc.failed_since(killed_at)) <= 2, svc.summary(killed_at)
        assert took <= 10
    finally:
        svc.close()


@pytest.mark.parametrize("fault", ["freeze", "cut_off"])
def test_hung_or_cut_off_node_with_quorum_queues(rabbit_cluster: RabbitCluster, topic: str, fault: str) -> None:
    """The node freezes (or vanishes from the network): the client abandons
    its connection within 10 s whatever the heartbeat (oslo's default 60 here),
    no call outlives its deadline, and calls are healthy again within 20 s."""
    url = _url(rabbit_cluster, [0, 1, 2], QUORUM + "&heartbeat_timeout_threshold=60")
    svc = Service(url, url, topic, exchange=QUORUM_EXCHANGE)
    try:
        svc.survive(lambda: getattr(rabbit_cluster, fault)(0), abandon_within=10.0, healthy_within=20)
    finally:
        svc.close()


def test_hung_node_with_classic_queues_recovers_once_the_cluster_drops_it(
        rabbit_cluster: RabbitCluster, topic: str) -> None:
    """Classic queues live on one node: while the cluster still counts a
    frozen node as up (net_ticktime), its queues cannot be used from another.
    Calls recover within 10 s of the cluster dropping it (10-12 s here), and
    none outlives its deadline meanwhile."""
    url = _url(rabbit_cluster, [0, 1, 2])
    svc = Service(url, url, topic)
    try:
        svc.survive(lambda: rabbit_cluster.freeze(0), abandon_within=10.0, healthy_within=13 + 10)
    finally:
        svc.close()


def test_blackholed_connection_is_abandoned_by_the_probe(
        rabbit_cluster: RabbitCluster, tcp_proxy_factory: Any, topic: str) -> None:
    """One connection goes silent (a stateful firewall forgot it), the broker
    is fine: the client leaves it within probe_after + probe_timeout and the
    next host serves the calls."""
    proxy = tcp_proxy_factory("127.0.0.1", rabbit_cluster.nodes[0].port)
    server_url = _url(rabbit_cluster, [1, 2, 0])
    client_url = (f"rabbit://guest:guest@127.0.0.1:{proxy.port},"
                  f"guest:guest@127.0.0.1:{rabbit_cluster.nodes[1].port}/?{FAST_RETRY}")
    svc = Service(server_url, client_url, topic)
    try:
        assert svc.call_once(0).outcome == "ok"
        assert len(proxy.connections) == 1
        assert svc.sender_health()["host"] == f"127.0.0.1:{proxy.port}"
        svc.survive(proxy.blackhole, abandon_within=9.0, healthy_within=10)
    finally:
        svc.close()


def test_call_whose_handler_kills_the_reply_queue_node_still_returns(
        rabbit_cluster: RabbitCluster, topic: str) -> None:
    """The caller and its reply queue are on node 2, the server on node 3;
    the handler kills node 2 before it answers. The request was confirmed, so
    the call waits; the server publishes its reply again while the broker
    returns it, until the caller has declared its reply queue on node 3."""
    # Quorum reply queues: a classic one dies with node 2, and a reply the
    # server publishes before the cluster has removed it is routed to the
    # dead queue and lost (RabbitMQ 3.10 neither returns nor nacks it).
    svc = Service(_url(rabbit_cluster, [2, 0, 1], QUORUM), _url(rabbit_cluster, [1, 2, 0], QUORUM), topic,
                  exchange=QUORUM_EXCHANGE)
    try:
        assert svc.call_once(1).outcome == "ok"
        conn = svc.client_transport._driver.sending_connection

        def kill_once_confirmed(n: int) -> None:
            # A quorum queue delivers a request once it is committed, and the
            # confirm travels to the caller on its own: the handler can run
            # before the caller has the confirm. Killing the node then is the
            # unconfirmed case (CallInterrupted), tested elsewhere.
            if n == 2:
                deadline = time.monotonic() + 5
                while conn.pending_confirms and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert conn.pending_confirms == 0, "the request was never confirmed"
                rabbit_cluster.kill(1)

        svc.endpoint.on_call = kill_once_confirmed
        started = time.monotonic()
        assert svc.client.prepare(timeout=30).call({}, "echo", n=2) == 2
        assert time.monotonic() - started < 30
        assert svc.call_once(3).outcome == "ok"
        assert svc.endpoint.seen.count(2) == 1  # run once, answered once
    finally:
        svc.close()


def test_rolling_restart_loses_no_confirmed_cast(rabbit_cluster: RabbitCluster, topic: str) -> None:
    """Quorum queues and at-least-once casts through a restart of every node
    in turn: every cast the broker confirmed reaches the handler, none twice."""
    url = _url(rabbit_cluster, [0, 1, 2], QUORUM)
    svc = Service(url, url, topic, exchange=QUORUM_EXCHANGE)
    caster = svc.client.prepare(transport_options=TransportOptions(at_least_once=True), retry=3)
    confirmed: list[int] = []
    durations: list[float] = []
    stop = threading.Event()

    def cast_loop() -> None:
        n = 0
        while not stop.is_set() and n < 100_000:
            n += 1
            started = time.monotonic()
            try:
                caster.cast({}, "echo", n=n)
                confirmed.append(n)
            except Exception:
                pass  # not confirmed: may be lost, the caller knows
            durations.append(time.monotonic() - started)
            stop.wait(0.05)

    thread = threading.Thread(target=cast_loop, daemon=True)
    try:
        thread.start()
        for i in range(3):
            rabbit_cluster.restart(i)
        stop.set()
        thread.join(LATE + 10)
        assert not thread.is_alive()
        assert len(confirmed) > 50
        # Bounded by the retry count: never stuck on a node that went away.
        assert max(durations) < 20, max(durations)
        deadline = time.monotonic() + 30
        while not set(confirmed) <= set(svc.endpoint.seen) and time.monotonic() < deadline:
            time.sleep(0.1)
        missing = sorted(set(confirmed) - set(svc.endpoint.seen))
        assert not missing, f"confirmed casts lost: {missing[:20]} ({len(missing)})"
        seen = svc.endpoint.seen
        duplicates = sorted({n for n in seen if seen.count(n) > 1})
        assert not duplicates, f"handler saw duplicates: {duplicates[:20]}"
    finally:
        stop.set()
        svc.close()


def test_durable_classic_queue_whose_home_node_is_down_comes_back(
        rabbit_cluster: RabbitCluster, topic: str) -> None:
    """amqp_durable_queues: the server's queues live on node 1, which dies.
    Declaring them elsewhere is refused (NOT_FOUND, home node down) until it
    returns; the server keeps trying and consumes again once it is back."""
    durable = "amqp_durable_queues=true"
    svc = Service(_url(rabbit_cluster, [0, 1, 2], durable), _url(rabbit_cluster, [1, 2, 0], durable), topic,
                  exchange="fastrpc_durable")
    try:
        svc.start_calling()
        svc.wait_healthy(time.monotonic() - 1, within=10)
        rabbit_cluster.kill(0)
        health = svc.server_transport.health()
        deadline = time.monotonic() + 30
        while not any(h["attempt"] >= 2 for h in health if h["name"].startswith("listener")):
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
            health = svc.server_transport.health()
        assert "home node" in str([h["error"] for h in health])
        rabbit_cluster.restart(0)
        back_at = time.monotonic()
        svc.wait_healthy(back_at, within=15)
        assert not svc.late_calls(), svc.summary(back_at)
    finally:
        svc.close()
