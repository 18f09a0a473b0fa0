"""fastrpc as an oslo.messaging driver: services on oslo's own API with
``transport_url = fastrpc://...``, talking on a real broker to services that
still use oslo's rabbit driver (a rolling upgrade), in both directions.
"""

from __future__ import annotations

import queue

import oslo_messaging
import pytest
from oslo_config import cfg
from test_oslo_interop import THIS_MODULE, WAIT, CustomError, Endpoint, assert_remote_errors_for_oslo, oslo_conf, stop

from fastrpc.oslo_driver import FastrpcDriver


def url_for(broker, scheme: str, query: str = "") -> str:
    return f"{scheme}://{broker.url.split('://', 1)[1]}{query}"


def oslo_transport(broker, scheme: str, conf=None, exmods=(THIS_MODULE,), query: str = ""):
    return oslo_messaging.get_rpc_transport(conf or oslo_conf(), url=url_for(broker, scheme, query),
                                            allowed_remote_exmods=list(exmods))


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


class NotificationEndpoint:
    def __init__(self) -> None:
        self.seen: queue.SimpleQueue = queue.SimpleQueue()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.seen.put((event_type, publisher_id, payload, dict(ctxt)))


def test_notifications_sent_with_fastrpc_reach_an_oslo_listener(broker, topic):
    # Sent by oslo's rabbit driver and by fastrpc, in both formats, before
    # anyone listens (the queue the sender declares keeps them): an oslo
    # listener must get fastrpc's exactly as it gets oslo's own.
    senders = {scheme: oslo_messaging.get_notification_transport(oslo_conf(), url=url_for(broker, scheme))
               for scheme in ("rabbit", "fastrpc")}
    receiver = oslo_messaging.get_notification_transport(oslo_conf(), url=url_for(broker, "rabbit"))
    listener = None
    try:
        for scheme, transport in senders.items():
            for driver in ("messagingv2", "messaging"):  # envelope 2.0, and the bare 1.0 format
                notifier = oslo_messaging.Notifier(transport, publisher_id=f"{scheme}.host1", driver=driver,
                                                   topics=[topic])
                notifier.info({"user_id": "dave"}, f"thing.{driver}", {"size": 3, "name": "é"})
        ep = NotificationEndpoint()
        listener = oslo_messaging.get_notification_listener(receiver, [oslo_messaging.Target(topic=topic)], [ep])
        listener.start()
        got: dict[str, list] = {"rabbit.host1": [], "fastrpc.host1": []}
        for _ in range(4):
            event_type, publisher, payload, ctxt = ep.seen.get(timeout=WAIT)
            got[publisher].append((event_type, payload, ctxt))
        assert sorted(e for e, _, _ in got["fastrpc.host1"]) == ["thing.messaging", "thing.messagingv2"]
        assert all(payload == {"size": 3, "name": "é"} for _, payload, _ in got["fastrpc.host1"])
        assert sorted(got["fastrpc.host1"], key=repr) == sorted(got["rabbit.host1"], key=repr)
    finally:
        if listener is not None:
            listener.stop()
            listener.wait()
        for transport in (*senders.values(), receiver):
            transport.cleanup()


def test_notification_listeners_are_refused_with_a_reason(broker):
    transport = oslo_messaging.get_notification_transport(oslo_conf(), url=url_for(broker, "fastrpc"))
    try:
        with pytest.raises(NotImplementedError, match="oslo_messaging_notifications"):
            oslo_messaging.get_notification_listener(transport, [oslo_messaging.Target(topic="n")],
                                                     [NotificationEndpoint()]).start()
    finally:
        transport.cleanup()


def test_fastrpc_options_register_beside_the_rabbit_drivers(broker):
    # Both drivers in one process (an rpc and a notification transport, say)
    # register the same [oslo_messaging_rabbit] options without conflict.
    conf = oslo_conf()
    old = oslo_transport(broker, "rabbit", conf=conf)
    new = oslo_transport(broker, "fastrpc", conf=conf)
    try:
        assert isinstance(conf.oslo_messaging_rabbit.heartbeat_timeout_threshold, int)
        assert conf.fastrpc.serialization == "json"
        with pytest.raises(cfg.NoSuchOptError):
            conf.fastrpc.no_such_option  # noqa: B018
    finally:
        old.cleanup()
        new.cleanup()
