"""amqp:// URL parsing and ConnectionParams (no broker needed)."""

from __future__ import annotations

import pickle

import pytest

from fastrpc.amqp import exceptions as exc
from fastrpc.amqp.url import ConnectionParams, make_params, parse_url

SECRET = "s3cr%t:/@pw"


def test_defaults() -> None:
    p = parse_url("amqp://")
    assert (p.host, p.port, p.username, p.password, p.virtual_host, p.ssl) == (
        "127.0.0.1", 5672, "guest", "guest", "/", False,
    )


def test_full_url_percent_decoding() -> None:
    p = parse_url("amqp://us%40er:s3cr%25t%3A%2F%40pw@broker.example:5673/my%2Fvhost")
    assert p.username == "us@er"
    assert p.password == SECRET
    assert p.host == "broker.example"
    assert p.port == 5673
    assert p.virtual_host == "my/vhost"


@pytest.mark.parametrize(
    "url, vhost",
    [
        ("amqp://h", "/"),
        ("amqp://h/", "/"),
        ("amqp://h/%2F", "/"),
        ("amqp://h/%2f", "/"),
        ("amqp://h/prod", "prod"),
        ("amqp://h/a%20b", "a b"),
    ],
)
def test_vhost(url: str, vhost: str) -> None:
    assert parse_url(url).virtual_host == vhost


def test_amqps_default_port_and_tls_options() -> None:
    p = parse_url("amqps://u:p@h/?cafile=/ca.pem&certfile=/c.pem&keyfile=/k.pem&verify=false&server_hostname=x")
    assert p.ssl is True
    assert p.port == 5671
    assert (p.cafile, p.certfile, p.keyfile, p.verify, p.server_hostname) == ("/ca.pem", "/c.pem", "/k.pem", False, "x")


def test_query_options() -> None:
    p = parse_url(
        "amqp://h:1234/v?heartbeat=7&connection_timeout=2.5&frame_max=8192&channel_max=10"
        "&connection_name=svc%20a&auth_mechanism=EXTERNAL&blocked_timeout=3&operation_timeout=4"
    )
    assert p.heartbeat == 7
    assert p.connect_timeout == 2.5
    assert p.frame_max == 8192
    assert p.channel_max == 10
    assert p.connection_name == "svc a"
    assert p.auth_mechanism == "EXTERNAL"
    assert p.blocked_timeout == 3.0
    assert p.operation_timeout == 4.0


def test_ipv6_host() -> None:
    p = parse_url("amqp://u:p@[::1]:5680/")
    assert p.host == "::1"
    assert p.address == "[::1]:5680"


@pytest.mark.parametrize(
    "url",
    [
        "http://h/",
        "amqp://h/?nosuchoption=1",
        "amqp://h/?heartbeat=abc",
        "amqp://h/?verify=maybe",
        "amqp://h/?frame_max=100",
        "amqp://h:99999/",
        "amqp://h/?blocked_timeout=0",
        "amqp://h/?blocked_timeout=inf",
        "amqp://h/?blocked_timeout=nan",
        "amqp://h/?operation_timeout=1e12",
    ],
)
def test_invalid_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_malformed_url_error_does_not_echo_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_url(f"amqp://user:{SECRET}@host:notaport/")
    assert "s3cr" not in str(info.value)


def test_repr_and_str_hide_password() -> None:
    p = parse_url("amqp://user:hunter2secret@host:5672/vh")
    assert "hunter2secret" not in repr(p)
    assert "hunter2secret" not in str(p)
    assert str(p) == "amqp://user:***@host:5672/vh"
    assert p.to_url(hide_password=False) == "amqp://user:hunter2secret@host:5672/vh"
    assert parse_url(p.to_url(hide_password=False)) == p


def test_make_params_overrides() -> None:
    p = make_params("amqp://u:p@h:1/", heartbeat=3)
    assert p.heartbeat == 3 and p.port == 1
    q = make_params(p, port=2)
    assert q.port == 2 and q.heartbeat == 3 and p.port == 1
    assert make_params(None, host="x").host == "x"
    with pytest.raises(TypeError):
        make_params(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        make_params(p, no_such_field=1)


def test_params_validation() -> None:
    with pytest.raises(ValueError):
        ConnectionParams(auth_mechanism="AMQPLAIN")
    with pytest.raises(ValueError):
        ConnectionParams(heartbeat=-1)
    with pytest.raises(ValueError):
        ConnectionParams(connect_timeout=0)


def test_exceptions_pickle_and_format() -> None:
    closed = exc.ChannelClosed(406, "PRECONDITION_FAILED - inequivalent arg", 50, 10)
    again = pickle.loads(pickle.dumps(closed))
    assert isinstance(again, exc.ChannelClosed)
    assert (again.reply_code, again.reply_text, again.class_id, again.method_id) == (406, closed.reply_text, 50, 10)
    assert "406" in str(closed) and "50.10" in str(closed)
    returned = pickle.loads(pickle.dumps(exc.MessageReturned(312, "NO_ROUTE", "ex", "rk", {"a": 1}, b"x")))
    assert (returned.reply_code, returned.exchange, returned.routing_key, returned.body) == (312, "ex", "rk", b"x")
    assert issubclass(exc.HeartbeatTimeout, exc.ConnectionLost)
    assert issubclass(exc.OperationTimeout, TimeoutError)
    assert isinstance(pickle.loads(pickle.dumps(exc.HeartbeatTimeout("x"))), exc.HeartbeatTimeout)


def test_login_refusals_pickle_with_the_brokers_reply() -> None:
    refused = exc.VirtualHostError("cannot open virtual host 'x': 530 NOT_ALLOWED", 530, "NOT_ALLOWED")
    again = pickle.loads(pickle.dumps(refused))
    assert isinstance(again, exc.VirtualHostError) and isinstance(again, exc.LoginRefused)
    assert (str(again), again.reply_code, again.reply_text) == (str(refused), 530, "NOT_ALLOWED")
    assert exc.AuthenticationFailed("hung up").reply_code == 0
