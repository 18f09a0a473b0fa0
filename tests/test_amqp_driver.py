"""AmqpDriver against a real broker: topology, calls, casts, fanout, replies."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time

import pytest

from fastrpc import envelope
from fastrpc.amqp.connection import Connection
from fastrpc.drivers.amqp import DEDUP_WINDOW, AmqpDriver
from fastrpc.drivers.amqp import incoming as incoming_module
from fastrpc.drivers.topology import Topology, publish_properties
from fastrpc.exceptions import CallInterrupted, MessagingTimeout, RemoteError
from fastrpc.options import Options
from fastrpc.target import Target
from fastrpc.transport import TransportURL

pytestmark = pytest.mark.twins

WAIT = 10.0


def make_driver(broker, **options) -> AmqpDriver:
    conf = Options(**options)
    return AmqpDriver(conf, TransportURL.parse(conf, broker.url), "openstack", [])


class Served:
    """A listener polled by one thread; each request answered by ``handler``."""

    def __init__(self, driver: AmqpDriver, target: Target, handler) -> None:
        self.listener = driver.listen(target)
        self.handler = handler
        self.received: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            batch = self.listener.poll(timeout=0.5, batch_size=16)
            if not batch and self.listener._stopped.is_set():
                return
            for msg in batch:
                self.received.put(msg)
                threading.Thread(target=self.handler, args=(msg,), daemon=True).start()

    def close(self) -> None:
        self.listener.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        self.listener.cleanup()


def echo(msg) -> None:
    msg.reply({"method": msg.message["method"], "args": msg.message["args"], "ctxt": msg.ctxt})


@pytest.fixture
def topic(request):
    return "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:60]


# ---- topology (no broker) -------------------------------------------------------


def test_topology_defaults_match_oslo():
    topo = Topology(Options())
    assert topo.topic_exchange("openstack").__dict__ == {"name": "openstack", "type": "topic",
                                                         "durable": False, "auto_delete": False}
    assert topo.fanout_exchange("t").__dict__ == {"name": "t_fanout", "type": "fanout",
                                                  "durable": False, "auto_delete": True}
    q = topo.topic_queue("t", "s")
    assert (q.name, q.durable, q.auto_delete, q.arguments, q.exclusive) == ("t.s", False, False, {}, False)
    fq = topo.fanout_queue("t")
    assert fq.name.startswith("t_fanout_") and len(fq.name) == len("t_fanout_") + 32
    assert (fq.durable, fq.auto_delete, fq.arguments) == (False, False, {"x-expires": 1800000})
    rq = topo.reply_queue()
    assert rq.name.startswith("reply_") and rq.arguments == {"x-expires": 1800000}
    assert publish_properties("application/json", 2.5) == {
        "content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2,
        "priority": 0, "expiration": "2500"}


def test_topology_quorum_and_ha_options():
    topo = Topology(Options(rabbit_quorum_queue=True, rabbit_quorum_delivery_limit=3,
                            rabbit_transient_queues_ttl=60))
    q = topo.topic_queue("t")
    assert q.durable is True
    assert q.arguments == {"x-queue-type": "quorum", "x-delivery-limit": 3}
    assert topo.fanout_queue("t").arguments == {"x-expires": 60000}
    assert Topology(Options(rabbit_ha_queues=True)).reply_queue().arguments == {
        "x-ha-policy": "all", "x-expires": 1800000}
    with pytest.raises(ValueError):
        Topology(Options(rabbit_ha_queues=True, rabbit_quorum_queue=True))


# ---- against the broker ------------------------------------------------------------


def test_declares_what_oslo_declares(broker, topic):
    driver = make_driver(broker)
    served = Served(driver, Target(topic=topic, server="s1"), echo)
    try:
        out = broker.ctl("list_queues", "name", "durable", "auto_delete", "exclusive", "arguments",
                         "--formatter", "json")
        rows = {row["name"]: row for row in json.loads(out)}
        assert rows[topic]["durable"] is False and rows[topic]["auto_delete"] is False
        assert rows[topic]["arguments"] in ({}, [])
        assert f"{topic}.s1" in rows
        fanout = [r for n, r in rows.items() if n.startswith(f"{topic}_fanout_")]
        assert len(fanout) == 1
        # 32-bit signed, as py-amqp (oslo) encodes it
        assert fanout[0]["arguments"] == [["x-expires", "signedint", 1800000]]
        exchanges = json.loads(broker.ctl("list_exchanges", "name", "type", "durable", "auto_delete",
                                          "--formatter", "json"))
        ex = {row["name"]: row for row in exchanges}
        assert ex["openstack"]["type"] == "topic" and ex["openstack"]["durable"] is False
        assert ex[f"{topic}_fanout"]["type"] == "fanout" and ex[f"{topic}_fanout"]["auto_delete"] is True
    finally:
        served.close()
        driver.cleanup()


@pytest.mark.parametrize("serialization", ["json", "msgpack"])
def test_call_cast_fanout(broker, topic, serialization):
    server_driver = make_driver(broker)
    client = make_driver(broker, serialization=serialization)
    served = Served(server_driver, Target(topic=topic, server="s1"), echo)
    try:
        result = client.send(Target(topic=topic), {"user": "u"}, {"method": "m", "args": {"a": [1, "x"]}},
                             wait_for_reply=True, timeout=WAIT)
        assert result == {"method": "m", "args": {"a": [1, "x"]}, "ctxt": {"user": "u", "client_timeout": None}}
        msg = served.received.get(timeout=WAIT)
        assert msg.binary is (serialization == "msgpack")  # replies follow the request's encoding

        client.send(Target(topic=topic), {}, {"method": "cast1", "args": {}})
        assert served.received.get(timeout=WAIT).message["method"] == "cast1"
        client.send(Target(topic=topic, server="s1"), {}, {"method": "direct", "args": {}})
        assert served.received.get(timeout=WAIT).message["method"] == "direct"
        client.send(Target(topic=topic, fanout=True), {}, {"method": "fan", "args": {}})
        got = served.received.get(timeout=WAIT)
        assert got.message["method"] == "fan" and got.msg_id is None
    finally:
        served.close()
        client.cleanup()
        server_driver.cleanup()


def test_many_concurrent_calls_share_one_reply_queue(broker, topic):
    server_driver = make_driver(broker)
    client = make_driver(broker)
    served = Served(server_driver, Target(topic=topic, server="s1"), echo)
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def caller(i: int) -> None:
        try:
            for j in range(20):
                r = client.send(Target(topic=topic), {}, {"method": "m", "args": {"i": i, "j": j}},
                                wait_for_reply=True, timeout=WAIT)
                assert r["args"] == {"i": i, "j": j}
            results[i] = True
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        assert len(results) == 8
        assert client.reply_queue is not None and client.reply_queue.startswith("reply_")
        assert client.waiting_calls == {}
    finally:
        served.close()
        client.cleanup()
        server_driver.cleanup()


def test_remote_exception_and_timeout_and_late_reply(broker, topic):
    server_driver = make_driver(broker)
    client = make_driver(broker)
    release = threading.Event()

    def handler(msg) -> None:
        method = msg.message["method"]
        if method == "fail":
            try:
                raise LookupError("no such thing")
            except LookupError as exc:
                msg.reply(failure=exc)
        elif method == "custom":
            msg.reply(failure=RuntimeErrorSubclass("x"))
        elif method == "slow":
            assert release.wait(WAIT)
            msg.reply("late")

    served = Served(server_driver, Target(topic=topic, server="s1"), handler)
    try:
        with pytest.raises(LookupError, match="no such thing"):
            client.send(Target(topic=topic), {}, {"method": "fail", "args": {}}, wait_for_reply=True,
                        timeout=WAIT)
        with pytest.raises(RemoteError) as info:
            client.send(Target(topic=topic), {}, {"method": "custom", "args": {}}, wait_for_reply=True,
                        timeout=WAIT)
        assert info.value.exc_type == "RuntimeErrorSubclass"
        with pytest.raises(MessagingTimeout):
            client.send(Target(topic=topic), {}, {"method": "slow", "args": {}}, wait_for_reply=True,
                        timeout=0.5)
        assert client.late_replies == 0
        release.set()
        deadline = time.monotonic() + WAIT
        while client.late_replies == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.late_replies == 1
    finally:
        release.set()
        served.close()
        client.cleanup()
        server_driver.cleanup()


class RuntimeErrorSubclass(RuntimeError):
    pass


def test_call_monitor_keepalives_extend_the_wait(broker, topic):
    server_driver = make_driver(broker)
    client = make_driver(broker)
    beats = 10

    def handler(msg) -> None:
        # Longer in total than the call-monitor timeout, but never silent
        # for longer than it (by 1.3 s: a loaded machine may delay a beat).
        for _ in range(beats):
            time.sleep(0.2)
            msg.heartbeat()
        msg.reply("done")

    served = Served(server_driver, Target(topic=topic, server="s1"), handler)
    try:
        started = time.monotonic()
        assert client.send(Target(topic=topic), {}, {"method": "m", "args": {}}, wait_for_reply=True,
                           timeout=WAIT, call_monitor_timeout=1.5) == "done"
        assert time.monotonic() - started >= 0.2 * beats
        # without keepalives the monitor gives up before the overall timeout
        silent = threading.Event()

        def quiet(msg) -> None:
            silent.wait(WAIT)
            msg.reply("never seen")

        served.handler = quiet
        with pytest.raises(MessagingTimeout):
            client.send(Target(topic=topic), {}, {"method": "m", "args": {}}, wait_for_reply=True,
                        timeout=WAIT, call_monitor_timeout=0.5)
        silent.set()
    finally:
        served.close()
        client.cleanup()
        server_driver.cleanup()


def test_duplicate_unique_id_dispatched_once(broker, topic):
    server_driver = make_driver(broker)
    served = Served(server_driver, Target(topic=topic, server="s1"), lambda msg: None)
    conn = Connection(broker.url)
    conn.connect()
    try:
        ch = conn.channel()
        env = envelope
        body = env.encode_request({"method": "dup", "args": {}}, {}, "same-unique-id")
        props = publish_properties("application/json")
        for _ in range(3):
            ch.basic_publish("openstack", topic, body, props)
        ch.basic_publish("openstack", topic, env.encode_request({"method": "after", "args": {}}, {}, "u2"), props)
        assert served.received.get(timeout=WAIT).message["method"] == "dup"
        assert served.received.get(timeout=WAIT).message["method"] == "after"
        assert served.received.empty()
        assert served.listener.duplicates == 2
        assert DEDUP_WINDOW >= 1000
    finally:
        conn.close()
        served.close()
        server_driver.cleanup()


def test_cleanup_removes_fanout_queue(broker, topic):
    driver = make_driver(broker)
    listener = driver.listen(Target(topic=topic, server="s1"))
    name = listener.fanout_queue
    assert name in broker.ctl("list_queues", "name")
    listener.stop()
    assert listener.poll(timeout=0.1) == []
    listener.cleanup()
    driver.cleanup()
    assert name not in broker.ctl("list_queues", "name")


class HoldingPair:
    """A server and a client driver (fast reconnects) on ``topic``: the
    server answers each request with its method name, and "hold" only once
    ``proceed`` is set. ``hold_in_flight()`` starts such a call in a thread."""

    def __init__(self, broker, topic: str) -> None:
        self.topic = topic
        self.server_driver = make_driver(broker, rabbit_retry_interval=0.2, rabbit_retry_backoff=0.2)
        self.client = make_driver(broker, rabbit_retry_interval=0.2, rabbit_retry_backoff=0.2)
        self.started = threading.Event()
        self.proceed = threading.Event()
        self.served = Served(self.server_driver, Target(topic=topic, server="s1"), self._handle)
        self.result: dict[str, object] = {}
        self._caller: threading.Thread | None = None

    def _handle(self, msg) -> None:
        if msg.message["method"] == "hold":
            self.started.set()
            assert self.proceed.wait(WAIT)
        msg.reply(msg.message["method"])

    def call(self, method: str, server: str | None = None, at_least_once: bool = False) -> object:
        return self.client.send(Target(topic=self.topic, server=server), {}, {"method": method, "args": {}},
                                wait_for_reply=True, timeout=WAIT * 2, at_least_once=at_least_once)

    def hold_in_flight(self, at_least_once: bool = False) -> None:
        def run() -> None:
            try:
                self.result["value"] = self.call("hold", at_least_once=at_least_once)
            except BaseException as exc:  # reported by the test's assert on result
                self.result["error"] = exc

        self._caller = threading.Thread(target=run)
        self._caller.start()
        assert self.started.wait(WAIT)

    def release_in_flight(self) -> object:
        assert self._caller is not None
        self.proceed.set()
        self._caller.join(WAIT * 2)
        return self.result

    def close(self) -> None:
        self.proceed.set()
        self.served.close()
        self.client.cleanup()
        self.server_driver.cleanup()


@pytest.mark.parametrize("at_least_once", [False, True])
def test_survives_connections_closed_by_broker(broker, topic, at_least_once):
    """Listener and caller reconnect; a call in flight whose request the
    broker confirmed (it is in its queue) still gets its reply."""
    pair = HoldingPair(broker, topic)
    try:
        assert pair.call("before") == "before"
        reply_q = pair.client.reply_queue
        pair.hold_in_flight(at_least_once=at_least_once)
        broker.ctl("close_all_connections", "test: simulated failover")
        assert pair.release_in_flight() == {"value": "hold"}
        assert pair.client.reply_queue == reply_q  # the same reply queue, consumed again
        assert pair.call("after") == "after"
        assert pair.served.listener.reconnects >= 1
    finally:
        pair.close()


def test_unconfirmed_call_fails_at_once_when_its_connection_dies(private_node, topic):
    """A request the broker never confirmed (it froze first) may or may not
    have reached its queue: when the connection is found dead the call fails
    at once with CallInterrupted, not at its timeout; later calls work."""
    server = make_driver(private_node)
    client = make_driver(private_node, probe_after=0.5, probe_timeout=1.0, rabbit_retry_interval=0.2)
    served = Served(server, Target(topic=topic, server="s1"), echo)
    try:
        target = Target(topic=topic)
        assert client.send(target, {}, {"method": "m", "args": {}}, wait_for_reply=True, timeout=WAIT)["method"] == "m"
        outcome: queue.SimpleQueue = queue.SimpleQueue()

        def waiting_call() -> None:
            try:
                outcome.put(client.send(target, {}, {"method": "late", "args": {}}, wait_for_reply=True,
                                        timeout=60, retry=0))
            except BaseException as exc:
                outcome.put(exc)

        private_node.pause()
        try:
            started = time.monotonic()
            threading.Thread(target=waiting_call, daemon=True).start()
            error = outcome.get(timeout=WAIT)
            assert time.monotonic() - started < 0.5 + 1.0 + 3.0  # the probe's bounds plus margin
        finally:
            private_node.resume()
        assert isinstance(error, CallInterrupted), error
        assert "may or may not have run" in str(error)
        assert client.send(target, {}, {"method": "m", "args": {}}, wait_for_reply=True, timeout=WAIT)["method"] == "m"
    finally:
        served.close()
        client.cleanup()
        server.cleanup()


def _wait_consumed(broker, name: str) -> None:
    """Until queue ``name`` exists again with one consumer (bounded)."""
    deadline = time.monotonic() + WAIT * 2
    while True:
        rows = [line.split() for line in broker.ctl("list_queues", "name", "consumers").splitlines()]
        if [name, "1"] in rows:
            return
        assert time.monotonic() < deadline, f"queue {name} not consumed again: {rows}"
        time.sleep(0.2)


def test_queues_deleted_under_consumers_are_declared_again(broker, topic):
    """Deleting a queue (an operator, or the loss of the node holding it)
    makes the broker cancel its consumers: the reply consumer and the
    listener declare their queues again and consume them; a call in flight
    still gets its reply, as the reply queue keeps its name."""
    pair = HoldingPair(broker, topic)
    try:
        assert pair.call("before") == "before"
        reply_q = pair.client.reply_queue
        assert reply_q is not None
        pair.hold_in_flight()
        broker.ctl("delete_queue", reply_q)
        _wait_consumed(broker, reply_q)
        assert pair.release_in_flight() == {"value": "hold"}
        assert pair.client.reply_queue == reply_q

        reconnects = pair.served.listener.reconnects
        broker.ctl("delete_queue", f"{topic}.s1")
        _wait_consumed(broker, f"{topic}.s1")
        assert pair.served.listener.reconnects == reconnects + 1
        assert pair.call("after") == "after"
        assert pair.call("direct", server="s1") == "direct"
    finally:
        pair.close()


def test_a_reconnect_finishing_after_cleanup_consumes_nothing(broker, topic, monkeypatch):
    """A listener stopped and cleaned up while its reconnect is still
    connecting: the new connection is closed, no consumer is left behind."""
    import fastrpc.drivers.amqp.consumer as amqp_module  # where listeners connect

    driver = make_driver(broker, rabbit_retry_interval=0.2, rabbit_retry_backoff=0.2)
    listener = driver.listen(Target(topic=topic, server="s1"))
    connecting, proceed = threading.Event(), threading.Event()
    opened: list[Connection] = []
    real_open = amqp_module.open_connection

    def slow_open(params, lost=None):
        conn = real_open(params, lost)
        opened.append(conn)
        connecting.set()
        assert proceed.wait(WAIT)
        return conn

    monkeypatch.setattr(amqp_module, "open_connection", slow_open)
    try:
        broker.ctl("close_all_connections", "test: lost while stopping")
        assert connecting.wait(WAIT)  # the reconnect is under way
        listener.stop()
        listener.cleanup()
    finally:
        proceed.set()
    deadline = time.monotonic() + WAIT
    while opened[0].is_open:
        assert time.monotonic() < deadline, "the late connection stayed open"
        time.sleep(0.05)
    rows = [line.split() for line in broker.ctl("list_queues", "name", "consumers").splitlines()]
    assert [f"{topic}.s1", "0"] in rows, rows
    driver.cleanup()


def test_unique_id_window_of_accepted_requests(broker, topic, monkeypatch):
    # The listener's own check of each request's _unique_id (written out in
    # RequestIntake.accept) keeps the window seen_before keeps, read from the same place.
    monkeypatch.setattr(incoming_module, "DEDUP_WINDOW", 3)
    server_driver = make_driver(broker)
    served = Served(server_driver, Target(topic=topic, server="s1"), lambda msg: None)
    listener = served.listener
    try:
        requests = [envelope.decode_request(envelope.encode_request({"method": "m", "args": {}}, {}, f"u{i}"))
                    for i in range(5)]
        assert all(listener.intake.accept(req) is not None for req in requests)
        assert listener.intake.accept(requests[4]) is None  # remembered: a duplicate
        assert listener.duplicates == 1
        assert len(listener._seen) == 3
        assert listener.intake.accept(requests[0]) is not None  # forgotten beyond the window
        assert listener.seen_before("u0", remember=False) and not listener.seen_before("u1", remember=False)
    finally:
        served.close()
        server_driver.cleanup()


def test_unique_id_window_under_concurrent_takers(broker, topic):
    # Workers take requests at once: each _unique_id must be new to exactly
    # one of them, and the window forgets the oldest beyond DEDUP_WINDOW.
    server_driver = make_driver(broker)
    served = Served(server_driver, Target(topic=topic, server="s1"), lambda msg: None)
    listener = served.listener
    try:
        uids = [f"uid-{i}" for i in range(2000)]
        firsts: list[int] = []
        start = threading.Barrier(8)

        def take() -> None:
            start.wait(timeout=WAIT)
            firsts.append(sum(not listener.seen_before(uid) for uid in uids))

        threads = [threading.Thread(target=take) for _ in range(8)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=WAIT)
        finally:
            sys.setswitchinterval(interval)
        assert sum(firsts) == len(uids)
        assert listener.duplicates == 7 * len(uids)
        assert listener.seen_before("uid-0", remember=False)
        for i in range(DEDUP_WINDOW):
            listener.seen_before(f"later-{i}")
        assert not listener.seen_before("uid-0", remember=False)
        assert listener.seen_before(f"later-{DEDUP_WINDOW - 1}", remember=False)
    finally:
        served.close()
        server_driver.cleanup()
