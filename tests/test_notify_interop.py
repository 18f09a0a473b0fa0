"""fastrpc's notification API and the real oslo.messaging (its rabbit driver,
``rabbit://`` URLs) on one broker: fastrpc notifier -> oslo listener and oslo
notifier -> fastrpc listener, byte-level envelopes side by side, a pool shared
by listeners of both, and the ``[oslo_messaging_notifications]`` options."""

from __future__ import annotations

import json
import logging
import queue
import re
import uuid

import oslo_messaging
import pytest
from endpoints import notification_listening
from oslo_context import context as oslo_context
from test_notify import (
    METHODS,
    TIMESTAMP,
    WAIT,
    BatchRecorder,
    InfoRecorder,
    Recorder,
    assert_no_queue,
    listening,
    queue_counts,
    wait_settled,
)
from test_oslo_driver import oslo_listening
from test_oslo_interop import oslo_conf, rabbit_url

import fastrpc
from fastrpc import NotificationPayloadError
from fastrpc.amqp.connection import Connection

pytestmark = pytest.mark.twins


@pytest.fixture
def topic(request):
    return "ntfi_" + re.sub(r"\W", "_", request.node.name)[:60]


@pytest.fixture
def fast_transport(broker):
    # rabbit:// selects fastrpc's own AMQP driver in fastrpc's API.
    t = fastrpc.get_notification_transport(url=rabbit_url(broker))
    yield t
    t.cleanup()


@pytest.fixture
def oslo_transport(broker):
    t = oslo_messaging.get_notification_transport(oslo_conf(), url=rabbit_url(broker))
    yield t
    t.cleanup()


def request_context() -> oslo_context.RequestContext:
    return oslo_context.RequestContext(user_id="u1", project_id="p1", request_id="req-1", roles=["member"],
                                       auth_token="very-secret")


def notifiers(fast_transport, oslo_transport, topic: str) -> dict[str, object]:
    """A fastrpc and an oslo Notifier on ``topic``, publisher ids "fast" and "oslo"."""
    return {
        "fast": fastrpc.Notifier(fast_transport, publisher_id="fast", driver="messagingv2", topics=[topic]),
        "oslo": oslo_messaging.Notifier(oslo_transport, publisher_id="oslo", driver="messagingv2", topics=[topic]),
    }


@pytest.mark.parametrize("listener_side", ["oslo", "fastrpc"])
def test_every_priority_crosses_between_fastrpc_and_oslo(broker, fast_transport, oslo_transport, topic,
                                                         listener_side):
    # Both notifiers send the same: whichever listens, an endpoint cannot tell them apart.
    ep = Recorder()
    if listener_side == "oslo":
        listener = oslo_listening(oslo_transport, topic, [ep])
    else:
        listener = listening(fast_transport, topic, [ep])
    with listener:
        for notifier in notifiers(fast_transport, oslo_transport, topic).values():
            for method in METHODS:
                getattr(notifier, method)(request_context(), f"thing.{method}", {"m": method, "n": [1.5, "é", None]})
        records = ep.take(2 * len(METHODS))
    by_publisher: dict[str, dict[str, tuple]] = {"fast": {}, "oslo": {}}
    for priority, ctxt, publisher, event_type, payload, metadata in records:
        by_publisher[publisher][event_type] = (priority, ctxt, payload, sorted(metadata))
        assert str(uuid.UUID(metadata["message_id"])) == metadata["message_id"]
        assert TIMESTAMP.match(metadata["timestamp"]), metadata["timestamp"]
    assert by_publisher["fast"] == by_publisher["oslo"]
    for method, priority in METHODS.items():
        got_priority, ctxt, payload, _ = by_publisher["fast"][f"thing.{method}"]
        assert (got_priority, payload) == (priority, {"m": method, "n": [1.5, "é", None]})
        assert (ctxt["user"], ctxt["project_id"], ctxt["request_id"], ctxt["roles"]) == (
            "u1", "p1", "req-1", ["member"])
        assert "very-secret" not in json.dumps(ctxt)  # redacted, by both notifiers
    wait_settled(broker, *(f"{topic}.{priority}" for priority in set(METHODS.values())))


def test_an_oslo_1_0_notifier_reaches_a_fastrpc_listener(broker, oslo_transport, fast_transport, topic):
    # oslo's `messaging` driver: the bare 1.0 format, no envelope.
    ep = Recorder()
    with listening(fast_transport, topic, [ep]):
        notifier = oslo_messaging.Notifier(oslo_transport, publisher_id="old", driver="messaging", topics=[topic])
        for method in METHODS:
            getattr(notifier, method)(request_context(), f"old.{method}", {"m": method, "n": [1.5, "é", None]})
        records = {event_type: (priority, ctxt, publisher, payload)
                   for priority, ctxt, publisher, event_type, payload, _md in ep.take(len(METHODS))}
        wait_settled(broker, *(f"{topic}.{priority}" for priority in set(METHODS.values())))
    assert sorted(records) == sorted(f"old.{method}" for method in METHODS)
    for method, priority in METHODS.items():
        got_priority, ctxt, publisher, payload = records[f"old.{method}"]
        assert (got_priority, publisher, payload) == (priority, "old", {"m": method, "n": [1.5, "é", None]})
        assert (ctxt["user"], ctxt["request_id"]) == ("u1", "req-1")
        assert "very-secret" not in json.dumps(ctxt)
    assert ep.seen.empty()


def get_body(broker, queue_name: str) -> tuple[dict, bytes]:
    with Connection(broker.url) as conn:
        got = conn.channel().basic_get(queue_name, no_ack=True)
    assert got is not None, f"nothing in {queue_name}"
    return got.properties, got.body


def shape(value):
    """Types only, keys kept: what two messages of the same format share."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


@pytest.mark.parametrize("driver", ["messagingv2", "messaging"])
def test_the_bytes_on_the_wire_are_oslos(broker, fast_transport, oslo_transport, topic, driver):
    # No listener: each notifier's own queue keeps what it sent, read raw.
    ctxt = request_context()
    payload = {"size": 3, "name": "é", "tags": ["a"], "ratio": 0.5, "none": None}
    fastrpc.Notifier(fast_transport, "pub", driver=driver, topics=[topic + "_fast"]).info(ctxt, "e.x", payload)
    oslo_messaging.Notifier(oslo_transport, "pub", driver=driver, topics=[topic + "_oslo"]).info(ctxt, "e.x", payload)
    fast_props, fast_body = get_body(broker, f"{topic}_fast.info")
    oslo_props, oslo_body = get_body(broker, f"{topic}_oslo.info")
    # kombu writes an empty header table; none is the same to any reader.
    assert fast_props == {key: value for key, value in oslo_props.items() if not (key == "headers" and not value)}
    assert fast_props["content_type"] == "application/json"
    fast_outer, oslo_outer = json.loads(fast_body), json.loads(oslo_body)
    if driver == "messagingv2":
        assert sorted(fast_outer) == sorted(oslo_outer) == ["oslo.message", "oslo.version"]
        assert fast_outer["oslo.version"] == oslo_outer["oslo.version"] == "2.0"
        assert isinstance(fast_outer["oslo.message"], str)  # the inner message as a JSON string
        fast, oslo = json.loads(fast_outer["oslo.message"]), json.loads(oslo_outer["oslo.message"])
    else:
        fast, oslo = fast_outer, oslo_outer  # 1.0: the message itself
    assert shape(fast) == shape(oslo)
    for message in (fast, oslo):
        assert (message["priority"], message["event_type"], message["publisher_id"]) == ("INFO", "e.x", "pub")
        assert message["payload"] == payload
        assert TIMESTAMP.match(message["timestamp"])
        assert str(uuid.UUID(message["message_id"])) == message["message_id"]
        assert message["_context_auth_token"] is None  # redacted
    same = {key: value for key, value in fast.items() if key.startswith("_context_")}
    assert same == {key: value for key, value in oslo.items() if key.startswith("_context_")}
    assert same["_context_user"] == "u1"


def one_batch(broker, topic: str, listener_lib, listener_transport, notifier_lib, notifier_transport,
              publisher: str, event_type: str, size: int) -> list:
    """``size`` info notifications ``{"n": 0..size-1}`` from a ``notifier_lib``
    Notifier to a ``listener_lib`` batch listener of ``size``: the one batch
    it received, once the queue has settled."""
    ep = BatchRecorder()
    with notification_listening(listener_lib, listener_transport, topic, [ep],
                                batch={"batch_size": size, "batch_timeout": 5}):
        notifier = notifier_lib.Notifier(notifier_transport, publisher, driver="messagingv2", topics=[topic])
        for n in range(size):
            notifier.info(request_context(), event_type, {"n": n})
        batch = ep.batches.get(timeout=WAIT)
        wait_settled(broker, f"{topic}.info")
    return batch


def test_oslo_notifier_to_fastrpc_batch_listener(broker, fast_transport, oslo_transport, topic):
    batch = one_batch(broker, topic, fastrpc, fast_transport, oslo_messaging, oslo_transport, "oslo", "b.x", 3)
    assert [(event_type, n, publisher) for event_type, n, publisher, _md, _ctxt in batch] == [
        ("b.x", 0, "oslo"), ("b.x", 1, "oslo"), ("b.x", 2, "oslo")]
    assert all(ctxt["user"] == "u1" for *_, ctxt in batch)


def test_fastrpc_notifier_to_oslo_batch_listener(broker, fast_transport, oslo_transport, topic):
    batch = one_batch(broker, topic, oslo_messaging, oslo_transport, fastrpc, fast_transport, "fast", "b.y", 2)
    assert sorted(n for _, n, *_ in batch) == [0, 1]


def test_fastrpc_and_oslo_listeners_share_a_pool(broker, fast_transport, oslo_transport, topic):
    # The same queue declared by either side (same arguments): the pool's
    # listeners split its notifications, whichever library they use.
    seen: queue.SimpleQueue = queue.SimpleQueue()
    fast_ep, oslo_ep = InfoRecorder(seen=queue.SimpleQueue()), InfoRecorder(seen=queue.SimpleQueue())
    pool = f"{topic}_pool"
    with listening(fast_transport, topic, [fast_ep], pool=pool), \
            oslo_listening(oslo_transport, topic, [oslo_ep], pool=pool):
        notifier = fastrpc.Notifier(fast_transport, "fast", driver="messagingv2", topics=[topic])
        for n in range(10):
            notifier.info({}, "p.x", {"n": n})
        wait_settled(broker, pool)
        for ep in (fast_ep, oslo_ep):
            while not ep.seen.empty():
                seen.put((ep, ep.seen.get_nowait()[1]["n"]))
    got = [seen.get_nowait() for _ in range(seen.qsize())]
    assert sorted(n for _, n in got) == list(range(10))
    assert {ep for ep, _ in got} == {fast_ep, oslo_ep}  # both took some


def test_the_notifications_section_of_an_oslo_config(broker, tmp_path, topic):
    # [oslo_messaging_notifications] as oslo reads it: its URL beats the RPC
    # one (here a broker that does not exist), and it sets the notifier's
    # driver, topics and retry.
    conf_file = tmp_path / "service.conf"
    conf_file.write_text(
        "[DEFAULT]\ntransport_url = rabbit://nobody:wrong@127.0.0.1:1/\n"
        f"[oslo_messaging_notifications]\ntransport_url = {rabbit_url(broker)}\n"
        f"driver = messaging\ntopics = {topic}_a,{topic}_b\nretry = 2\n")
    conf = oslo_conf()
    conf(["--config-file", str(conf_file)], project="fastrpc-test")
    transport = fastrpc.get_notification_transport(conf)
    ep_a, ep_b = InfoRecorder(), InfoRecorder()
    try:
        notifier = fastrpc.Notifier(transport, "cfg")
        assert (notifier.topics, notifier.retry, repr(notifier).split()[2]) == (
            [f"{topic}_a", f"{topic}_b"], 2, "driver=messaging")
        with listening(transport, f"{topic}_a", [ep_a]), listening(transport, f"{topic}_b", [ep_b]):
            notifier.info({}, "from.config", {"ok": True})
            assert ep_a.seen.get(timeout=WAIT) == ("from.config", {"ok": True})
            assert ep_b.seen.get(timeout=WAIT) == ("from.config", {"ok": True})
        assert transport._driver.url.hosts[0].port == broker.port  # not the RPC URL's
        # oslo.messaging registers the same definitions again without conflict, and reads the same.
        oslo_transport = oslo_messaging.get_notification_transport(conf)
        try:
            assert oslo_transport.conf.oslo_messaging_notifications.topics == [f"{topic}_a", f"{topic}_b"]
        finally:
            oslo_transport.cleanup()
    finally:
        transport.cleanup()


def test_oslos_default_configuration_sends_nothing(broker, topic, caplog):
    # [oslo_messaging_notifications] driver is empty by default: oslo loads
    # no driver and sends nothing; so does fastrpc (no notifications.<priority>
    # queue filling up on a broker nobody reads them from).
    caplog.set_level(logging.INFO, logger="fastrpc.notify")
    conf = oslo_conf()
    transport = fastrpc.get_notification_transport(conf, url=rabbit_url(broker))
    oslo_transport = oslo_messaging.get_notification_transport(conf, url=rabbit_url(broker))
    try:
        notifier = fastrpc.Notifier(transport, "p", topics=[topic + "_fast"])
        notifier.info(request_context(), "default.conf", {"n": 1})
        assert not notifier.is_enabled()
        oslo_messaging.Notifier(oslo_transport, "p", topics=[topic + "_oslo"]).info({}, "default.conf", {"n": 1})
    finally:
        transport.cleanup()
        oslo_transport.cleanup()
    assert_no_queue(broker, f"{topic}_fast.info")
    assert_no_queue(broker, f"{topic}_oslo.info")
    assert "Notifications on" in caplog.text and "none configured" in caplog.text


def test_configured_drivers_unknown_skipped_each_on_its_own(broker, tmp_path, topic, caplog):
    # Several drivers from the configuration: an unknown name is logged and
    # skipped (as oslo's stevedore does); a payload one driver refuses still
    # goes through the others, then raises.
    caplog.set_level(logging.INFO)
    conf_file = tmp_path / "service.conf"
    conf_file.write_text(f"[oslo_messaging_notifications]\ntransport_url = {rabbit_url(broker)}\n"
                         "driver = messagingv2\ndriver = no_such_driver\ndriver = log\n")
    conf = oslo_conf()
    conf(["--config-file", str(conf_file)], project="fastrpc-test")
    transport = fastrpc.get_notification_transport(conf)
    ep = InfoRecorder()
    try:
        notifier = fastrpc.Notifier(transport, "cfg", topics=[topic])
        assert repr(notifier).split()[2] == "driver=messagingv2,log"
        assert "driver: unknown notification driver 'no_such_driver'" in caplog.text
        with listening(transport, topic, [ep]):
            notifier.info({}, "both.drivers", {"n": 1})
            assert ep.seen.get(timeout=WAIT) == ("both.drivers", {"n": 1})
            with pytest.raises(NotificationPayloadError, match="cannot encode"):
                notifier.info({}, "not.json", {"obj": object()})  # messagingv2 refuses it first
        with pytest.raises(ValueError, match="unknown notification driver"):
            fastrpc.Notifier(transport, driver="no_such_driver")  # given in code: a typo to fix
    finally:
        transport.cleanup()
    logged = [r.name for r in caplog.records if r.name.startswith("oslo.messaging.notification.")]
    assert logged == ["oslo.messaging.notification.both.drivers", "oslo.messaging.notification.not.json"]
    assert queue_counts(broker, f"{topic}.info") == (0, 0) and ep.seen.empty()  # the refused one was not sent
