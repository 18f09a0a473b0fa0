"""Options: oslo names and defaults, oslo.config input, validation, secrecy."""

import pytest
from oslo_config import cfg

from fastrpc import Options


def test_defaults_match_oslo():
    o = Options()
    assert o.control_exchange == "openstack"
    assert o.rpc_response_timeout == 60
    assert o.executor_thread_pool_size == 64
    assert o.transport_url == "rabbit://"
    assert o.rpc_ping_enabled is False
    assert o.heartbeat_timeout_threshold == 60
    assert o.heartbeat_rate == 3
    assert o.rabbit_qos_prefetch_count == 0
    assert o.rabbit_transient_queues_ttl == 1800
    assert o.amqp_durable_queues is False
    assert o.amqp_auto_delete is False
    assert o.rabbit_ha_queues is False
    assert o.rabbit_quorum_queue is False
    assert o.direct_mandatory_flag is True
    assert o.kombu_reconnect_delay == 1.0
    assert o.rabbit_retry_interval == 1
    assert o.rabbit_retry_backoff == 2
    assert o.rabbit_interval_max == 30
    assert o.ssl is False
    assert o.ssl_ca_file == ""
    assert o.serialization == "json"


def test_defaults_equal_oslo_messagings_registered_defaults():
    from oslo_messaging._drivers import amqp as oslo_amqp
    from oslo_messaging._drivers import impl_rabbit

    ours = Options()
    for opt in list(impl_rabbit.rabbit_opts) + list(oslo_amqp.amqp_opts):
        if opt.name in ("hostname", "processname"):
            continue
        assert hasattr(ours, opt.name), opt.name
        assert getattr(ours, opt.name) == opt.default, opt.name


def test_overrides_and_group_alias():
    o = Options(rabbit_quorum_queue=True, serialization="msgpack", rpc_response_timeout=5)
    assert o.rabbit_quorum_queue is True
    assert o.oslo_messaging_rabbit.rabbit_quorum_queue is True
    assert o.serialization == "msgpack"
    assert o.rpc_response_timeout == 5


def test_unknown_option_and_bad_values_rejected():
    with pytest.raises(TypeError, match="no_such_option"):
        Options(no_such_option=1)
    with pytest.raises(ValueError, match="serialization"):
        Options(serialization="pickle")
    with pytest.raises(ValueError):
        Options(executor_thread_pool_size=0)
    with pytest.raises(ValueError):
        Options(rpc_response_timeout=0)
    with pytest.raises(ValueError, match="max_message_size"):
        Options(max_message_size=100)
    with pytest.raises(ValueError, match="max_message_size"):
        Options(max_message_size=256 * 1024 * 1024)
    assert Options(max_message_size=4096).max_message_size == 4096
    for bad in (0, -1, float("inf"), float("nan"), 1e12):
        with pytest.raises(ValueError, match="blocked_timeout"):
            Options(blocked_timeout=bad)
    assert Options(blocked_timeout=0.5).blocked_timeout == 0.5


def test_reads_oslo_config_groups_and_keeps_defaults_for_unregistered():
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt("control_exchange", default="openstack"),
                        cfg.IntOpt("rpc_response_timeout", default=60)])
    conf.register_opts([cfg.IntOpt("heartbeat_timeout_threshold", default=60),
                        cfg.BoolOpt("rabbit_quorum_queue", default=False)],
                       group="oslo_messaging_rabbit")
    conf.register_opts([cfg.StrOpt("serialization", default="json")], group="fastrpc")
    conf([], project="fastrpc-test", default_config_files=[])
    conf.set_override("control_exchange", "nova")
    conf.set_override("rpc_response_timeout", 7)
    conf.set_override("heartbeat_timeout_threshold", 20, group="oslo_messaging_rabbit")
    conf.set_override("rabbit_quorum_queue", True, group="oslo_messaging_rabbit")
    conf.set_override("serialization", "msgpack", group="fastrpc")

    o = Options(conf)
    assert o.control_exchange == "nova"
    assert o.rpc_response_timeout == 7
    assert o.heartbeat_timeout_threshold == 20
    assert o.rabbit_quorum_queue is True
    assert o.serialization == "msgpack"
    # Not registered in conf: the defaults.
    assert o.executor_thread_pool_size == 64
    assert o.rabbit_transient_queues_ttl == 1800
    # Keyword overrides win over conf.
    assert Options(conf, control_exchange="cinder").control_exchange == "cinder"


def test_coerce_and_replace():
    o = Options(control_exchange="a")
    assert Options.coerce(o) is o
    assert Options.coerce(None) == Options()
    r = o.replace(control_exchange="b")
    assert r.control_exchange == "b"
    assert o.control_exchange == "a"
    assert r != o


def test_repr_hides_transport_url_password():
    o = Options(transport_url="rabbit://admin:hunter2@h1:5672,admin:hunter2@h2/")
    text = repr(o)
    assert "hunter2" not in text
    assert "admin:****@h1" in text


def test_url_query_sets_broker_options_with_their_types(caplog):
    base = Options(heartbeat_timeout_threshold=30)
    o = base.with_url_query({"heartbeat_timeout_threshold": "7", "ssl": "TRUE", "kombu_reconnect_delay": "0.5",
                             "serialization": "msgpack", "rabbit_ha_queues": "off", "no_such_option": "1",
                             "control_exchange": "nova", "rabbit_retry_interval": "0.2"})
    assert (o.heartbeat_timeout_threshold, o.ssl, o.kombu_reconnect_delay) == (7, True, 0.5)
    assert (o.serialization, o.rabbit_ha_queues) == ("msgpack", False)
    assert o.rabbit_retry_interval == 0.2  # reconnect delays take fractions of a second
    # Only the broker's group: service-wide options are not the URL's to set.
    assert o.control_exchange == "openstack"
    assert "no_such_option" in caplog.text and "control_exchange" in caplog.text
    assert base.heartbeat_timeout_threshold == 30 and base.ssl is False  # a copy
    assert base.with_url_query({}) is base


@pytest.mark.parametrize("query, message", [
    ({"ssl": "maybe"}, "ssl takes a boolean"),
    ({"heartbeat_timeout_threshold": "soon"}, "heartbeat_timeout_threshold takes an integer"),
    ({"kombu_reconnect_delay": "x"}, "kombu_reconnect_delay takes a number"),
    ({"serialization": "xml"}, "serialization must be one of"),
    ({"blocked_timeout": "inf"}, "blocked_timeout must be a positive number"),
    ({"blocked_timeout": "nan"}, "blocked_timeout must be a positive number"),
    ({"blocked_timeout": "soon"}, "blocked_timeout takes a number"),
])
def test_url_query_bad_values_are_refused(query, message):
    with pytest.raises(ValueError, match=message):
        Options().with_url_query(query)
