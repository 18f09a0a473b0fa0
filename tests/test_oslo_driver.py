"""fastrpc as an oslo.messaging driver: services on oslo's own API with
``transport_url = fastrpc://...``, talking on a real broker to services that
still use oslo's rabbit driver (a rolling upgrade), in both directions.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import math
import queue
import threading
import time

import oslo_messaging
import pytest
from endpoints import failure_of_a_start_ended_by_cleanup, in_thread, notification_listening
from oslo_config import cfg
from test_oslo_interop import THIS_MODULE, WAIT, CustomError, Endpoint, assert_remote_errors_for_oslo, oslo_conf, stop

from fastrpc.amqp.connection import Connection
from fastrpc.oslo_driver import FastrpcDriver
from fastrpc.testing.ports import free_ports

pytestmark = pytest.mark.twins


def url_for(broker, scheme: str, query: str = "") -> str:
    return f"{scheme}://{broker.url.split('://', 1)[1]}{query}"


def oslo_transport(broker, scheme: str, conf=None, exmods=(THIS_MODULE,), query: str = ""):
    return oslo_messaging.get_rpc_transport(conf or oslo_conf(), url=url_for(broker, scheme, query),
                                            allowed_remote_exmods=list(exmods))


def dead_broker_url() -> str:
    """A fastrpc:// URL nobody answers, with short reconnect delays."""
    port = free_ports(1)[0]
    return f"fastrpc://guest:guest@127.0.0.1:{port}/?rabbit_retry_interval=0.1&rabbit_interval_max=0.3"


@pytest.fixture
def topic(request):
    return "odrv_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:60]


def test_the_entry_point_selects_fastrpc(broker):
    transport = oslo_transport(broker, "fastrpc")
    try:
        assert isinstance(transport._driver, FastrpcDriver)
    finally:
        transport.cleanup()


@pytest.mark.parametrize("server_scheme, client_scheme", [
    ("fastrpc", "rabbit"),   # upgraded server, old client
    ("rabbit", "fastrpc"),   # old server, upgraded client
    ("fastrpc", "fastrpc"),  # both upgraded
])
def test_rolling_upgrade_on_oslo_api(broker, topic, server_scheme, client_scheme):
    server_transport = oslo_transport(broker, server_scheme)
    client_transport = oslo_transport(broker, client_scheme)
    plain_transport = oslo_transport(broker, client_scheme, exmods=())
    ep = Endpoint("s1")
    srv = oslo_messaging.get_rpc_server(server_transport, oslo_messaging.Target(topic=topic, server="s1"), [ep])

    srv.start()
    try:
        client = oslo_messaging.get_rpc_client(client_transport, oslo_messaging.Target(topic=topic), timeout=WAIT)
        ctxt = {"user_id": "carol", "roles": ["member"], "request_id": "req-9"}
        assert client.call(ctxt, "echo", value={"n": [1, "é", None]}) == {
            "value": {"n": [1, "é", None]}, "ctxt": {**ctxt, "client_timeout": None}, "server": "s1"}
        assert ep.seen.get(timeout=WAIT) == ("echo", {"n": [1, "é", None]})
        client.cast({}, "note", value="cast-1")
        assert ep.seen.get(timeout=WAIT) == ("note", "cast-1")
        assert client.prepare(server="s1").call({}, "whoami") == "s1"
        assert ep.seen.get(timeout=WAIT) == ("whoami", {})
        client.prepare(fanout=True).cast({}, "note", value="fan-1")
        assert ep.seen.get(timeout=WAIT) == ("note", "fan-1")

        # Failures come back as oslo's drivers rebuild them.
        with pytest.raises(KeyError):
            client.call({}, "fail_builtin")
        with pytest.raises(CustomError, match="custom failure"):
            client.call({}, "fail_custom")
        assert_remote_errors_for_oslo(
            oslo_messaging.get_rpc_client(plain_transport, oslo_messaging.Target(topic=topic), timeout=WAIT))
        with pytest.raises(oslo_messaging.MessagingTimeout):
            client.prepare(timeout=0.5).call({}, "block")
    finally:
        ep.release.set()
        stop(srv)
        for transport in (server_transport, client_transport, plain_transport):
            transport.cleanup()


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        self.some = threading.Event()

    def hit(self, ctxt):
        with self.lock:
            self.count += 1
            if self.count >= 20:
                self.some.set()


def test_a_server_stopped_mid_stream_loses_nothing(broker, topic, caplog):
    # Stopped while casts arrive: each cast was either run, or is still in
    # the queue for the next server; none was taken and dropped.
    server_transport = oslo_transport(broker, "fastrpc")
    client_transport = oslo_transport(broker, "fastrpc")
    counter = Counter()
    srv = oslo_messaging.get_rpc_server(server_transport, oslo_messaging.Target(topic=topic, server="s1"),
                                        [counter])
    srv.start()
    try:
        client = oslo_messaging.get_rpc_client(client_transport, oslo_messaging.Target(topic=topic))
        for _ in range(300):
            client.cast({}, "hit")
        assert counter.some.wait(WAIT)
    finally:
        stop(srv)
        server_transport.cleanup()
        client_transport.cleanup()
    assert counter.count + queue_depth(broker, topic) == 300
    assert "refused a message" not in caplog.text


def test_call_monitor_heartbeats_through_oslos_dispatcher(broker, topic):
    # oslo's dispatcher sends the keepalives of a long call through the
    # driver's message: the fastrpc caller must see them (monitor 4 s, call 6.5 s).
    server_transport = oslo_transport(broker, "fastrpc")
    client_transport = oslo_transport(broker, "fastrpc")
    srv = oslo_messaging.get_rpc_server(server_transport, oslo_messaging.Target(topic=topic, server="s1"),
                                        [Endpoint("s1")])
    srv.start()
    try:
        client = oslo_messaging.get_rpc_client(client_transport, oslo_messaging.Target(topic=topic), timeout=WAIT,
                                               call_monitor_timeout=4)
        assert client.call({}, "slow", seconds=6.5) == "finished"
    finally:
        stop(srv)
        server_transport.cleanup()
        client_transport.cleanup()


def test_options_from_config_file_and_url_query(broker, tmp_path):
    path = tmp_path / "service.conf"
    path.write_text("[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 17\n"
                    "rabbit_qos_prefetch_count = 5\n[fastrpc]\nserialization = msgpack\n")
    conf = oslo_conf()
    conf(args=["--config-file", str(path)], project="fastrpc-test")
    transport = oslo_transport(broker, "fastrpc", conf=conf)
    try:
        inner = transport._driver._driver
        assert inner.params[0].heartbeat == 17
        assert inner.topology.prefetch_count == 5
        assert inner.binary
        assert conf.oslo_messaging_rabbit.heartbeat_timeout_threshold == 17  # the rabbit driver's group
    finally:
        transport.cleanup()
    # The URL's query string overrides the file, as with oslo's drivers.
    transport = oslo_transport(broker, "fastrpc", conf=conf, query="?heartbeat_timeout_threshold=9")
    try:
        assert transport._driver._driver.params[0].heartbeat == 9
    finally:
        transport.cleanup()
    secret_url = "fastrpc://user:s3cret@127.0.0.1:1/?ssl=perhaps"
    with pytest.raises(oslo_messaging.InvalidTransportURL, match="ssl takes a boolean") as info:
        oslo_messaging.get_rpc_transport(oslo_conf(), url=secret_url)
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(info.value.url)


@pytest.mark.parametrize("scheme", ["rabbit", "fastrpc"])
def test_an_unknown_url_option_is_refused_by_either_driver(broker, scheme):
    # oslo's rabbit driver refuses a query key that is no option of its group;
    # an option of the group that fastrpc does not use is accepted by both.
    with pytest.raises(cfg.NoSuchOptError, match="heartbeat_timeout_treshold"):
        oslo_transport(broker, scheme, query="?heartbeat_timeout_treshold=9")
    oslo_transport(broker, scheme, query="?kombu_compression=gzip&heartbeat_rate=3").cleanup()


class NotificationEndpoint:
    def __init__(self, requeue_first: int = 0, seen: queue.SimpleQueue | None = None) -> None:
        self.seen: queue.SimpleQueue = seen if seen is not None else queue.SimpleQueue()
        self.requeue_first = requeue_first  # answer REQUEUE to the first N

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.seen.put((event_type, publisher_id, payload, dict(ctxt)))
        if self.requeue_first > 0:
            self.requeue_first -= 1
            return oslo_messaging.NotificationResult.REQUEUE
        return oslo_messaging.NotificationResult.HANDLED


def notify_both_ways(broker, topic: str) -> None:
    """Send from oslo's rabbit driver and from fastrpc, in both formats: 4 notifications."""
    for scheme in ("rabbit", "fastrpc"):
        transport = oslo_messaging.get_notification_transport(oslo_conf(), url=url_for(broker, scheme))
        try:
            for driver in ("messagingv2", "messaging"):  # envelope 2.0, and the bare 1.0 format
                notifier = oslo_messaging.Notifier(transport, publisher_id=f"{scheme}.host1", driver=driver,
                                                   topics=[topic])
                notifier.info({"user_id": "dave"}, f"thing.{driver}", {"size": 3, "name": "é"})
        finally:
            transport.cleanup()


def receive(ep: NotificationEndpoint, count: int) -> dict[str, list]:
    got: dict[str, list] = {"rabbit.host1": [], "fastrpc.host1": []}
    for _ in range(count):
        event_type, publisher, payload, ctxt = ep.seen.get(timeout=WAIT)
        got[publisher].append((event_type, payload, ctxt))
    return got


def queue_depth(broker, name: str) -> int:
    with Connection(broker.url) as conn:
        return conn.channel().queue_declare(name, passive=True)[1]


def publish_raw(broker, queue_name: str, *bodies: bytes) -> None:
    """Straight into a queue, past any driver (JSON content type)."""
    with Connection(broker.url) as conn:
        ch = conn.channel()
        for body in bodies:
            ch.basic_publish("", queue_name, body, {"content_type": "application/json"})


# An oslo notification listener on a topic, started; stopped and waited for after.
oslo_listening = functools.partial(notification_listening, oslo_messaging)


@contextlib.contextmanager
def listening(broker, scheme: str, topic: str, endpoints: list, batch: dict | None = None, **kwargs):
    """:func:`oslo_listening` on a transport of its own with oslo's ``scheme`` driver, cleaned up after."""
    transport = oslo_messaging.get_notification_transport(oslo_conf(), url=url_for(broker, scheme))
    try:
        with oslo_listening(transport, topic, endpoints, batch, **kwargs) as listener:
            yield listener
    finally:
        transport.cleanup()


@pytest.mark.parametrize("listener_scheme", ["rabbit", "fastrpc"])
def test_notifications_between_fastrpc_and_oslo(broker, topic, listener_scheme):
    # Sent before anyone listens (the queue the sender declares keeps them).
    # Whichever driver listens gets fastrpc's notifications exactly as oslo's own.
    notify_both_ways(broker, topic)
    ep = NotificationEndpoint()
    with listening(broker, listener_scheme, topic, [ep]):
        got = receive(ep, 4)
        assert sorted(e for e, _, _ in got["fastrpc.host1"]) == ["thing.messaging", "thing.messagingv2"]
        assert all(payload == {"size": 3, "name": "é"} for _, payload, _ in got["fastrpc.host1"])
        assert sorted(got["fastrpc.host1"], key=repr) == sorted(got["rabbit.host1"], key=repr)
    assert queue_depth(broker, f"{topic}.info") == 0  # every one acknowledged


def test_fastrpc_and_oslo_listeners_hand_endpoints_the_same(broker, topic):
    # One listener on each driver, each with its own pool (so both get every
    # notification): endpoints see the same event types, payloads and contexts.
    eps = {scheme: NotificationEndpoint() for scheme in ("rabbit", "fastrpc")}
    with contextlib.ExitStack() as stack:
        for scheme, ep in eps.items():
            stack.enter_context(listening(broker, scheme, topic, [ep], pool=f"{topic}_{scheme}"))
        notify_both_ways(broker, topic)
        got = {scheme: receive(ep, 4) for scheme, ep in eps.items()}
        for publisher in ("rabbit.host1", "fastrpc.host1"):
            assert sorted(got["fastrpc"][publisher], key=repr) == sorted(got["rabbit"][publisher], key=repr)


def test_fastrpc_notification_listener_requeues_and_shares_a_pool(broker, topic):
    # Two listeners of one pool share its queue; REQUEUE gives a notification back.
    seen: queue.SimpleQueue = queue.SimpleQueue()
    eps = [NotificationEndpoint(requeue_first=1, seen=seen) for _ in range(2)]
    with contextlib.ExitStack() as stack:
        for ep in eps:
            stack.enter_context(listening(broker, "fastrpc", topic, [ep], allow_requeue=True, pool=topic + "_pool"))
        notify_both_ways(broker, topic)
        # 4 notifications, and again the two that each listener requeued once.
        got = collections.Counter((publisher, event_type) for event_type, publisher, _, _ in
                                  (seen.get(timeout=WAIT) for _ in range(6)))
        assert set(got) == {(f"{scheme}.host1", f"thing.{driver}") for scheme in ("rabbit", "fastrpc")
                            for driver in ("messagingv2", "messaging")}
        assert sum(got.values()) == 6
        assert [ep.requeue_first for ep in eps] == [0, 0]  # both listeners of the pool got some
    assert queue_depth(broker, topic + "_pool") == 0
    # The pool's queue took them; the default one was declared by the senders and holds its copies.
    assert queue_depth(broker, f"{topic}.info") == 4


def test_malformed_notifications_are_rejected_and_listening_goes_on(broker, topic, caplog):
    ep = NotificationEndpoint()
    with listening(broker, "fastrpc", topic, [ep]):
        # straight into the queue the listener declared
        publish_raw(broker, f"{topic}.info", b"not json", b"[1, 2]", b'{"oslo.version": "9.0", "oslo.message": "{}"}')
        notify_both_ways(broker, topic)
        got = receive(ep, 4)
        assert sorted(e for e, _, _ in got["fastrpc.host1"]) == ["thing.messaging", "thing.messagingv2"]
    assert queue_depth(broker, f"{topic}.info") == 0  # rejected without requeue, the others acknowledged
    for reason in ("body is not valid JSON", "envelope is not a mapping", "unsupported oslo.version"):
        assert reason in caplog.text


def test_malformed_nan_and_infinity_notifications_are_read_as_oslo_reads_them(broker, topic):
    # oslo's JSON writer puts NaN and Infinity in bodies; such a notification
    # must not be thrown away as malformed.
    ep = NotificationEndpoint()
    with listening(broker, "fastrpc", topic, [ep]):
        inner = '{"event_type": "m.x", "publisher_id": "p", "priority": "INFO", "payload": {"v": NaN, "w": Infinity}}'
        publish_raw(broker, f"{topic}.info", json.dumps({"oslo.version": "2.0", "oslo.message": inner}).encode())
        event_type, publisher, payload, _ctxt = ep.seen.get(timeout=WAIT)
        assert (event_type, publisher, math.isnan(payload["v"]), payload["w"]) == ("m.x", "p", True, math.inf)


def test_a_notification_delivered_again_after_its_ack_is_not_run_twice(broker, topic):
    # oslo's listeners remember the _unique_id of what they acknowledged: a
    # redelivery (its ack lost to a reconnect, say) is acknowledged, not run.
    def body(event_type: str, unique_id: str) -> bytes:
        inner = {"event_type": event_type, "publisher_id": "p", "priority": "INFO", "payload": {},
                 "_unique_id": unique_id}
        return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()

    ep = NotificationEndpoint()
    with listening(broker, "fastrpc", topic, [ep]):
        publish_raw(broker, f"{topic}.info", body("dup.first", "u1"))
        assert ep.seen.get(timeout=WAIT)[0] == "dup.first"
        deadline = time.monotonic() + WAIT
        while f"{topic}.info\t0" not in broker.ctl("list_queues", "name", "messages_unacknowledged"):
            assert time.monotonic() < deadline, "the first one was never acknowledged"
            time.sleep(0.05)
        publish_raw(broker, f"{topic}.info", body("dup.again", "u1"), body("dup.marker", "u2"))
        assert ep.seen.get(timeout=WAIT)[0] == "dup.marker"  # the one in between was skipped
        assert ep.seen.empty()
    assert queue_depth(broker, f"{topic}.info") == 0  # the duplicate was acknowledged too


class BatchEndpoint:
    def __init__(self) -> None:
        self.batches: queue.SimpleQueue = queue.SimpleQueue()

    def info(self, messages):
        self.batches.put(sorted(m["payload"]["n"] for m in messages))


def test_batch_listener_fills_its_batches_then_times_out(broker, topic):
    sender = oslo_messaging.get_notification_transport(oslo_conf(), url=url_for(broker, "fastrpc"))
    ep = BatchEndpoint()
    try:
        with listening(broker, "fastrpc", topic, [ep], batch={"batch_size": 3, "batch_timeout": 4}):
            notifier = oslo_messaging.Notifier(sender, publisher_id="p", driver="messagingv2", topics=[topic])
            for n in range(4):  # one message per read: the batch is filled across reads
                notifier.info({}, "batch.x", {"n": n})
            assert ep.batches.get(timeout=WAIT) == [0, 1, 2]
            assert ep.batches.get(timeout=WAIT) == [3]  # what the batch timeout found
    finally:
        sender.cleanup()
    assert queue_depth(broker, f"{topic}.info") == 0


def test_incoming_notifications_carry_the_attributes_of_oslos():
    # _Incoming sets oslo's IncomingMessage attributes itself (it skips
    # oslo's __init__): an attribute a newer oslo adds must show up here.
    from oslo_messaging._drivers import base as oslo_base

    from fastrpc.drivers.base import IncomingMessage
    from fastrpc.oslo_driver import _Incoming, _RpcIncoming

    class Taken(IncomingMessage):  # what a fastrpc listener hands the adapter
        def acknowledge(self):
            pass

        requeue = heartbeat = acknowledge

        def reply(self, reply=None, failure=None):
            pass

    for oslo_cls, wrap in ((oslo_base.IncomingMessage, _Incoming), (oslo_base.RpcIncomingMessage, _RpcIncoming)):
        # oslo's classes are abstract: a subclass with their abstract methods, through oslo's own __init__.
        concrete = type("Concrete", (oslo_cls,), {name: lambda self, *args, **kwargs: None
                                                  for name in oslo_cls.__abstractmethods__})
        oslo_names = set(vars(concrete("ctxt", {}, None)))
        assert {"ctxt", "message", "msg_id", "client_timeout"} <= oslo_names
        ours = set(vars(wrap(Taken({"user": "u"}, {"payload": {}}, None)))) - {"_incoming"}
        assert ours == oslo_names, wrap.__name__


def test_retry_minus_one_retries_until_the_transport_is_cleaned_up(caplog):
    # oslo: retry None or -1 means for ever (the notifier's default is -1).
    caplog.set_level(logging.DEBUG, logger="fastrpc.drivers.amqp")
    transport = oslo_messaging.get_rpc_transport(oslo_conf(), url=dead_broker_url())
    client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="nowhere"), retry=-1)
    thread, raised = in_thread(lambda: client.cast({}, "x"))
    try:
        thread.join(2.0)
        assert thread.is_alive() and not raised  # still trying after 2 s
        attempts = [r for r in caplog.records if "attempt" in r.getMessage()]
        assert len(attempts) >= 2
        # One warning for the outage, not one per attempt.
        assert len([r for r in attempts if r.levelno >= logging.WARNING]) == 1
    finally:
        transport.cleanup()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], oslo_messaging.MessageDeliveryFailure), raised


def test_a_server_started_before_its_broker_waits_for_it(rabbit_node_factory, topic):
    # oslo's servers wait at start() for the broker (services may boot first).
    node = rabbit_node_factory(autostart=False)
    url = f"fastrpc://{node.url.split('://', 1)[1]}?rabbit_retry_interval=0.2&rabbit_interval_max=0.5"
    transport = oslo_messaging.get_rpc_transport(oslo_conf(), url=url)
    srv = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic=topic, server="s1"),
                                        [Endpoint("s1")])
    started, failed = in_thread(srv.start)
    try:
        started.join(1.0)
        assert started.is_alive(), failed  # waiting for the broker
        node.start()
        started.join(WAIT * 6)
        assert not started.is_alive() and not failed, failed
        client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=topic), timeout=WAIT)
        assert client.call({}, "whoami") == "s1"
    finally:
        if not started.is_alive():
            stop(srv)
        transport.cleanup()


def test_a_server_waiting_for_its_broker_gives_up_at_cleanup(topic):
    # Long reconnect delays: the cleanup must end the wait at once, not after them.
    url = dead_broker_url().split("?")[0] + "?rabbit_retry_interval=30&rabbit_interval_max=30"
    transport = oslo_messaging.get_rpc_transport(oslo_conf(), url=url)
    srv = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic=topic, server="s1"), [Endpoint("s1")])
    failed = failure_of_a_start_ended_by_cleanup(srv, transport)
    assert len(failed) == 1 and isinstance(failed[0], oslo_messaging.MessageDeliveryFailure), failed


@pytest.mark.parametrize("first, second", [("rabbit", "fastrpc"), ("fastrpc", "rabbit")])
def test_fastrpc_options_register_beside_the_rabbit_drivers(broker, first, second):
    # Both drivers in one process (an rpc and a notification transport, say),
    # in either order, register the same [oslo_messaging_rabbit] options
    # without conflict.
    conf = oslo_conf()
    transports = [oslo_transport(broker, first, conf=conf), oslo_transport(broker, second, conf=conf)]
    try:
        assert isinstance(conf.oslo_messaging_rabbit.heartbeat_timeout_threshold, int)
        assert conf.fastrpc.serialization == "json"
        with pytest.raises(cfg.NoSuchOptError):
            conf.fastrpc.no_such_option  # noqa: B018
    finally:
        for transport in transports:
            transport.cleanup()
