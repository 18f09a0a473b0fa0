"""Queue types on a real broker: RPC calls, casts, fanout and notifications
with each queue-type option, the queues and exchanges the broker then holds
(type, durability, arguments), and each configuration beside oslo.messaging's
rabbit driver configured the same way (RabbitMQ refuses a redeclaration with
other arguments, so a call each way proves the declarations match).

One node is enough for quorum queues to be declared and used.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import oslo_messaging
import pytest
from oslo_messaging import transport as oslo_transport_module
from oslo_messaging._drivers import impl_rabbit
from test_oslo_interop import WAIT, Endpoint, oslo_conf, stop

import fastrpc
from fastrpc.drivers import broker_rules
from fastrpc.drivers.topology import QueueSpec, Topology
from fastrpc.options import Options

TTL_MS = 1_800_000  # rabbit_transient_queues_ttl's default, as x-expires
LIMITS = {"rabbit_quorum_delivery_limit": 5, "rabbit_quorum_max_memory_length": 100,
          "rabbit_quorum_max_memory_bytes": 1 << 20}

CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "durable": {"amqp_durable_queues": True},
    "quorum": {"rabbit_quorum_queue": True, **LIMITS},
    "quorum_transient_quorum": {"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True, **LIMITS},
    "durable_transient_quorum": {"amqp_durable_queues": True, "rabbit_transient_quorum_queue": True},
    "ha": {"rabbit_ha_queues": True},
}
# What the README's table calls 4.3-safe.
SAFE_43 = {"quorum_transient_quorum", "durable_transient_quorum"}


# ---- what oslo declares, per option (oslo_messaging/_drivers/impl_rabbit.py) ---------


def expected_queue(settings: dict[str, Any], private: bool) -> dict[str, Any]:
    """Type, durability and arguments of a topic queue (``private`` False) or of
    a reply or fanout queue, as oslo's rabbit driver declares them."""
    quorum = settings.get("rabbit_transient_quorum_queue" if private else "rabbit_quorum_queue", False)
    durable = quorum if private else bool(settings.get("amqp_durable_queues") or quorum)
    args: dict[str, Any] = {}
    if settings.get("rabbit_ha_queues"):
        args["x-ha-policy"] = "all"
    if quorum:
        args["x-queue-type"] = "quorum"
        for option, arg in (("rabbit_quorum_delivery_limit", "x-delivery-limit"),
                            ("rabbit_quorum_max_memory_length", "x-max-in-memory-length"),
                            ("rabbit_quorum_max_memory_bytes", "x-max-in-memory-bytes")):
            if settings.get(option):
                args[arg] = settings[option]
    if private:
        args["x-expires"] = TTL_MS
    return {"type": "quorum" if quorum else "classic", "durable": durable, "auto_delete": False,
            "exclusive": False, "arguments": args}


def expected_exchange(settings: dict[str, Any], fanout: bool) -> dict[str, Any]:
    if fanout:  # durable as the transient queues, auto-delete
        return {"type": "fanout", "durable": bool(settings.get("rabbit_transient_quorum_queue")),
                "auto_delete": True}
    return {"type": "topic", "durable": bool(settings.get("amqp_durable_queues")
                                             or settings.get("rabbit_quorum_queue")), "auto_delete": False}


@pytest.mark.parametrize("name", CONFIGS)
def test_declare_arguments_are_oslos(name):
    # oslo's own function for the arguments, against fastrpc's topology.
    settings = CONFIGS[name]
    opts = Options(**settings)
    topo = Topology(opts)
    quorum_config = impl_rabbit.QuorumMemConfig(opts.rabbit_quorum_delivery_limit,
                                                opts.rabbit_quorum_max_memory_length,
                                                opts.rabbit_quorum_max_memory_bytes)
    oslo_topic = impl_rabbit._get_queue_arguments(opts.rabbit_ha_queues, 0, opts.rabbit_quorum_queue,
                                                  quorum_config, False)
    oslo_private = impl_rabbit._get_queue_arguments(opts.rabbit_ha_queues, opts.rabbit_transient_queues_ttl,
                                                    opts.rabbit_transient_quorum_queue, quorum_config, False)
    assert topo.topic_queue("t").arguments == oslo_topic == expected_queue(settings, False)["arguments"]
    assert topo.topic_queue("t", "s").arguments == oslo_topic
    assert topo.reply_queue().arguments == oslo_private == expected_queue(settings, True)["arguments"]
    assert topo.fanout_queue("t").arguments == oslo_private
    for spec, private in ((topo.topic_queue("t"), False), (topo.reply_queue(), True), (topo.fanout_queue("t"), True)):
        want = expected_queue(settings, private)
        assert (spec.durable, spec.auto_delete, spec.exclusive) == (want["durable"], False, False)
    for spec, fanout in ((topo.topic_exchange("x"), False), (topo.fanout_exchange("t"), True)):
        want = expected_exchange(settings, fanout)
        assert (spec.type, spec.durable, spec.auto_delete) == (want["type"], want["durable"], want["auto_delete"])


@pytest.mark.parametrize("settings", [
    {"rabbit_quorum_queue": True, "rabbit_ha_queues": True},
    {"rabbit_transient_quorum_queue": True, "rabbit_ha_queues": True},
])
def test_quorum_with_ha_queues_is_refused_as_oslo_refuses_it(settings):
    opts = Options(**settings)
    with pytest.raises(RuntimeError):  # oslo, when it computes a queue's arguments
        impl_rabbit._get_queue_arguments(True, 1800, True, impl_rabbit.QuorumMemConfig(0, 0, 0), False)
    with pytest.raises(ValueError, match="rabbit_ha_queues"):
        Topology(opts)


# ---- on the broker ---------------------------------------------------------------------


def broker_queues(broker, prefix: str) -> dict[str, dict[str, Any]]:
    out = broker.ctl("list_queues", "--formatter", "json", "name", "type", "durable", "auto_delete",
                     "exclusive", "arguments")
    found = {}
    for row in json.loads(out):
        if row["name"].startswith(prefix) or row["name"].startswith("reply_"):
            args = row["arguments"]
            if isinstance(args, list):  # [[key, AMQP type, value], ...]
                args = {arg[0]: arg[-1] for arg in args}
            found[row["name"]] = {"type": row["type"], "durable": row["durable"],
                                  "auto_delete": row["auto_delete"] is True,
                                  "exclusive": row["exclusive"] is True,  # "" for quorum queues
                                  "arguments": dict(args)}
    return found


def broker_exchanges(broker, names: set[str]) -> dict[str, dict[str, Any]]:
    out = broker.ctl("list_exchanges", "--formatter", "json", "name", "type", "durable", "auto_delete")
    return {row["name"]: {"type": row["type"], "durable": row["durable"], "auto_delete": row["auto_delete"]}
            for row in json.loads(out) if row["name"] in names}


def oslo_url(broker, scheme: str, settings: dict[str, Any]) -> str:
    query = "&".join(f"{k}={str(v).lower()}" for k, v in settings.items())
    return f"{scheme}://{broker.url.split('://', 1)[1]}" + (f"?{query}" if query else "")


def oslo_conf_with_exchange(exchange: str):
    conf = oslo_conf()
    conf.register_opts(oslo_transport_module._transport_opts)
    conf.set_override("control_exchange", exchange)
    return conf


class Notifications:
    def __init__(self) -> None:
        self.seen = Endpoint("n").seen

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.seen.put((publisher_id, event_type, payload))
        return oslo_messaging.NotificationResult.HANDLED


@contextlib.contextmanager
def notification_listener(broker, scheme: str, settings: dict[str, Any], exchange: str, topic: str,
                          pool: str | None) -> Iterator[Notifications]:
    transport = oslo_messaging.get_notification_transport(oslo_conf_with_exchange(exchange),
                                                          url=oslo_url(broker, scheme, settings))
    ep = Notifications()
    listener = oslo_messaging.get_notification_listener(transport, [oslo_messaging.Target(topic=topic)], [ep],
                                                        pool=pool)
    listener.start()
    try:
        yield ep
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()


def notify(broker, scheme: str, settings: dict[str, Any], exchange: str, topic: str, event: str) -> None:
    transport = oslo_messaging.get_notification_transport(oslo_conf_with_exchange(exchange),
                                                          url=oslo_url(broker, scheme, settings))
    try:
        oslo_messaging.Notifier(transport, publisher_id=scheme, driver="messagingv2",
                                topics=[topic]).info({}, event, {"n": 1})
    finally:
        transport.cleanup()


def wait_for(ep: Endpoint, wanted: set[tuple[str, Any]]) -> None:
    """Take what ``ep`` saw until every one of ``wanted`` was among it."""
    missing = set(wanted)
    while missing:
        seen = ep.seen.get(timeout=WAIT)
        if seen[0] == "note":
            missing.discard(seen)


def check_declarations(broker, name: str, prefix: str, exchange: str, topic: str,
                       servers: list[str], reply_queues: list[str], notification_queues: list[str]) -> None:
    settings = CONFIGS[name]
    queues = broker_queues(broker, prefix)
    shared = [topic] + [f"{topic}.{s}" for s in servers] + notification_queues
    fanout = [q for q in queues if q.startswith(f"{topic}_fanout_")]
    assert len(fanout) == len(servers), queues
    for queue in shared:
        assert queues[queue] == expected_queue(settings, private=False), queue
    for queue in fanout + reply_queues:
        assert queues[queue] == expected_queue(settings, private=True), queue
    exchanges = broker_exchanges(broker, {exchange, f"{topic}_fanout"})
    assert exchanges == {exchange: expected_exchange(settings, fanout=False),
                         f"{topic}_fanout": expected_exchange(settings, fanout=True)}
    # What the broker holds, against RabbitMQ 4.3's rules.
    refused = [v for queue in shared + fanout + reply_queues
               for v in broker_rules.queue_violations(QueueSpec(
                   queue, queues[queue]["durable"], queues[queue]["auto_delete"], queues[queue]["arguments"],
                   queues[queue]["exclusive"])) if v.refused]
    assert not refused if name in SAFE_43 else refused


@pytest.mark.parametrize("name", CONFIGS)
def test_rpc_and_notifications_on_the_broker(broker, name):
    settings = CONFIGS[name]
    prefix = f"qt{uuid.uuid4().hex[:8]}"
    exchange, topic, ntopic = f"{prefix}_exchange", f"{prefix}_rpc", f"{prefix}_notes"
    transport = fastrpc.get_rpc_transport(Options(control_exchange=exchange, **settings), url=broker.url)
    ep = Endpoint("s1")
    server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic=topic, server="s1"), [ep])
    server.start()
    try:
        client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic=topic), timeout=WAIT)
        assert client.call({}, "whoami") == "s1"
        assert client.prepare(server="s1").call({}, "echo", value=2)["value"] == 2
        client.cast({}, "note", value="cast")
        client.prepare(fanout=True).cast({}, "note", value="fanout")
        seen = sorted(repr(ep.seen.get(timeout=WAIT)) for _ in range(4))
        assert seen == sorted(repr(s) for s in [("whoami", {}), ("echo", 2), ("note", "cast"), ("note", "fanout")])
        # Notifications, through oslo's API on fastrpc's driver: to the default
        # queue (declared by the notifier) and a pool's.
        notify(broker, "fastrpc", settings, exchange, ntopic, "before")
        with notification_listener(broker, "fastrpc", settings, exchange, ntopic, f"{prefix}_pool") as nep:
            notify(broker, "fastrpc", settings, exchange, ntopic, "during")
            assert nep.seen.get(timeout=WAIT)[1] == "during"
        check_declarations(broker, name, prefix, exchange, topic, ["s1"], [transport._driver.reply_queue],
                           [f"{ntopic}.info", f"{prefix}_pool"])
    finally:
        stop(server)
        transport.cleanup()


@pytest.mark.parametrize("name", CONFIGS)
def test_beside_oslo_configured_the_same(broker, name):
    # Servers of both drivers on one topic and clients of both: every queue and
    # exchange is declared by both, with the same settings, and calls go each way.
    settings = CONFIGS[name]
    prefix = f"qo{uuid.uuid4().hex[:8]}"
    exchange, topic, ntopic = f"{prefix}_exchange", f"{prefix}_rpc", f"{prefix}_notes"
    oslo_transport = oslo_messaging.get_rpc_transport(oslo_conf_with_exchange(exchange),
                                                      url=oslo_url(broker, "rabbit", settings))
    fast_transport = fastrpc.get_rpc_transport(Options(control_exchange=exchange, **settings), url=broker.url)
    oslo_ep, fast_ep = Endpoint("oslo-s"), Endpoint("fast-s")
    oslo_server = oslo_messaging.get_rpc_server(oslo_transport, oslo_messaging.Target(topic=topic, server="oslo-s"),
                                                [oslo_ep], executor="threading")
    fast_server = fastrpc.get_rpc_server(fast_transport, fastrpc.Target(topic=topic, server="fast-s"), [fast_ep])
    oslo_server.start()
    fast_server.start()
    try:
        oslo_client = oslo_messaging.get_rpc_client(oslo_transport, oslo_messaging.Target(topic=topic), timeout=WAIT)
        fast_client = fastrpc.get_rpc_client(fast_transport, fastrpc.Target(topic=topic), timeout=WAIT)
        assert oslo_client.prepare(server="fast-s").call({}, "whoami") == "fast-s"
        assert fast_client.prepare(server="oslo-s").call({}, "whoami") == "oslo-s"
        assert oslo_client.call({}, "echo", value=1)["value"] == 1
        assert fast_client.call({}, "echo", value=2)["value"] == 2
        oslo_client.prepare(fanout=True).cast({}, "note", value="from oslo")
        fast_client.prepare(fanout=True).cast({}, "note", value="from fastrpc")
        for ep in (oslo_ep, fast_ep):  # each server gets both broadcasts
            wait_for(ep, {("note", "from oslo"), ("note", "from fastrpc")})
        # Notifications: each driver's listener (its own pool) gets each driver's.
        with notification_listener(broker, "rabbit", settings, exchange, ntopic, f"{prefix}_oslo") as oslo_nep, \
                notification_listener(broker, "fastrpc", settings, exchange, ntopic, f"{prefix}_fast") as fast_nep:
            notify(broker, "rabbit", settings, exchange, ntopic, "e")
            notify(broker, "fastrpc", settings, exchange, ntopic, "e")
            for nep in (oslo_nep, fast_nep):
                assert sorted(nep.seen.get(timeout=WAIT)[0] for _ in range(2)) == ["fastrpc", "rabbit"]
        check_declarations(broker, name, prefix, exchange, topic, ["oslo-s", "fast-s"],
                           [fast_transport._driver.reply_queue, oslo_transport._driver._reply_q],
                           [f"{ntopic}.info", f"{prefix}_oslo", f"{prefix}_fast"])
    finally:
        stop(oslo_server, fast_server)
        oslo_transport.cleanup()
        fast_transport.cleanup()
