"""TransportURL parsing, formatting and password hiding; transport factory."""

import pytest

import fastrpc
from fastrpc import InvalidTransportURL, Options, TransportHost, TransportURL
from fastrpc.drivers import get_driver_class
from fastrpc.drivers.memory import MemoryDriver


def test_parse_multi_host_with_vhost_and_query():
    url = TransportURL.parse(None, "rabbit://u:p@h1:5672,u2:p2@h2:5673/vhost?heartbeat=10&ssl=1")
    assert url.transport == "rabbit"
    assert url.virtual_host == "vhost"
    assert url.hosts == [
        TransportHost("h1", 5672, "u", "p"),
        TransportHost("h2", 5673, "u2", "p2"),
    ]
    assert url.query == {"heartbeat": "10", "ssl": "1"}


def test_parse_fastrpc_and_memory_schemes():
    assert TransportURL.parse(None, "fastrpc://guest:guest@127.0.0.1:5672/").transport == "fastrpc"
    url = TransportURL.parse(None, "memory://")
    assert url.transport == "memory"
    assert url.hosts == []
    assert url.virtual_host is None


def test_root_vhost_is_empty_and_double_slash_is_slash():
    assert TransportURL.parse(None, "rabbit://h/").virtual_host == ""
    assert TransportURL.parse(None, "rabbit://h//").virtual_host == "/"


def test_host_without_port_or_credentials():
    (host,) = TransportURL.parse(None, "rabbit://broker.example/").hosts
    assert (host.hostname, host.port, host.username, host.password) == ("broker.example", None, None, None)


def test_ipv6_hosts():
    url = TransportURL.parse(None, "rabbit://u:p@[::1]:5672,[fe80::1]/")
    assert [(h.hostname, h.port) for h in url.hosts] == [("::1", 5672), ("fe80::1", None)]
    assert str(url) == "rabbit://u:****@[::1]:5672,[fe80::1]/"


def test_percent_encoded_credentials_are_decoded():
    (host,) = TransportURL.parse(None, "rabbit://us%40er:p%3Aa%2Fss@h:1/").hosts
    assert host.username == "us@er"
    assert host.password == "p:a/ss"


def test_user_may_contain_one_at_sign():
    (host,) = TransportURL.parse(None, "rabbit://user@domain:secret@h:5672/").hosts
    assert host.username == "user@domain"
    assert host.password == "secret"
    assert host.hostname == "h"


def test_str_and_repr_hide_password():
    url = TransportURL.parse(None, "rabbit://admin:s3cr3t-pw@h1:5672,admin:s3cr3t-pw@h2/vh?x=1")
    for text in (str(url), repr(url), repr(url.hosts[0]), repr(url.hosts)):
        assert "s3cr3t-pw" not in text
    assert str(url) == "rabbit://admin:****@h1:5672,admin:****@h2/vh?x=1"
    assert "password='****'" in repr(url.hosts[0])
    # The real password is still available to drivers that must log in.
    assert url.hosts[0].password == "s3cr3t-pw"
    assert url.format(hide_password=False) == "rabbit://admin:s3cr3t-pw@h1:5672,admin:s3cr3t-pw@h2/vh?x=1"


def test_format_round_trips_through_parse():
    text = "rabbit://a%2Fb:p%40ss@h1:5672,c:d@h2:5673/v%2Fh?k=v"
    url = TransportURL.parse(None, text)
    assert TransportURL.parse(None, url.format(hide_password=False)) == url


def test_missing_scheme_and_bad_port_are_rejected():
    with pytest.raises(InvalidTransportURL, match="No scheme"):
        TransportURL.parse(None, "h1:5672/vhost")
    with pytest.raises(InvalidTransportURL, match="port") as info:
        TransportURL.parse(None, "rabbit://u:topsecret@h1:notaport/")
    assert "topsecret" not in str(info.value)
    assert "topsecret" not in repr(vars(info.value))
    with pytest.raises(InvalidTransportURL):
        TransportURL.parse(None, "rabbit://[::1/")


def test_url_defaults_to_conf_transport_url():
    url = TransportURL.parse(Options(transport_url="memory://hostx/vh"))
    assert url.transport == "memory"
    assert url.hosts[0].hostname == "hostx"
    assert url.virtual_host == "vh"


def test_equality_ignores_query():
    a = TransportURL.parse(None, "rabbit://h:1/v?a=1")
    b = TransportURL.parse(None, "rabbit://h:1/v?a=2")
    c = TransportURL.parse(None, "rabbit://h:2/v")
    assert a == b
    assert hash(a) == hash(b)
    assert a != c


def test_mask_url_handles_credentials_in_every_host():
    from fastrpc.transport import mask_url

    assert mask_url("rabbit://u:p@h,u2:p@ss@h2/v") == "rabbit://u:****@h,u2:****@h2/v"
    assert mask_url("memory://") == "memory://"


def test_driver_classes_by_scheme():
    assert get_driver_class("memory") is MemoryDriver
    with pytest.raises(fastrpc.DriverLoadFailure):
        get_driver_class("nosuchscheme")


def test_get_rpc_transport_memory_and_cleanup():
    transport = fastrpc.get_rpc_transport(url="memory:///test_transport_url", allowed_remote_exmods=["x.y"])
    try:
        assert isinstance(transport, fastrpc.RPCTransport)
        assert isinstance(transport._driver, MemoryDriver)
        assert transport._driver.allowed_remote_exmods == ["x.y"]
        assert transport._driver.default_exchange == "openstack"
        assert isinstance(transport.conf, Options)
    finally:
        transport.cleanup()


def test_get_transport_uses_control_exchange_and_unknown_scheme_fails():
    transport = fastrpc.get_transport(Options(control_exchange="nova"), "memory:///x")
    try:
        assert transport._driver.default_exchange == "nova"
    finally:
        transport.cleanup()
    with pytest.raises(fastrpc.DriverLoadFailure, match="bogus"):
        fastrpc.get_rpc_transport(url="bogus://h/")


def test_url_query_options_reach_the_driver():
    transport = fastrpc.get_rpc_transport(url="rabbit://u:secret@h1:5672/?heartbeat_timeout_threshold=9&ssl=1")
    try:
        params = transport._driver.params[0]
        assert (params.heartbeat, params.ssl) == (9, True)
        assert transport.conf.heartbeat_timeout_threshold == 9  # what the driver runs with
    finally:
        transport.cleanup()
    with pytest.raises(InvalidTransportURL, match="ssl takes a boolean") as info:
        fastrpc.get_rpc_transport(url="rabbit://u:secret@h1:5672/?ssl=perhaps")
    assert "secret" not in str(info.value) and "secret" not in str(info.value.url)
