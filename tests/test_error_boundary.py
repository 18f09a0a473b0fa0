"""The driver's error boundary: what the broker refuses reaches callers as
fastrpc exceptions (oslo's classes on oslo's API) that carry the broker's
reply code and text, never as an AMQP-layer class; a refused declaration
fails at once, and wrong credentials, a missing virtual host and a refused
connection are told apart."""

from __future__ import annotations

import logging
import time
import uuid

import oslo_messaging
import pytest
from endpoints import Gate
from oslo_messaging import transport as oslo_transport
from test_oslo_interop import oslo_conf

import fastrpc
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.url import make_params
from fastrpc.exceptions import (
    AuthenticationError,
    BrokerError,
    DeclarationRefused,
    MessageDeliveryFailure,
    MessagingTimeout,
    VirtualHostRefused,
)
from fastrpc.oslo_driver import ListenRefused, OsloBrokerError
from fastrpc.testing.ports import free_ports

pytestmark = pytest.mark.twins

# A refusal must come back well before the calls' own timeout: no retry loop.
CALL_TIMEOUT = 30.0
AT_ONCE = 10.0


def _netloc(broker, password: str = "guest") -> str:
    return f"guest:{password}@{broker.host}:{broker.port}"


@pytest.fixture
def durable_exchange(broker):
    """A topic exchange declared durable, which fastrpc and oslo declare
    transient (their default): any declaration of it is refused (406)."""
    name = "refused_" + uuid.uuid4().hex[:12]
    conn = Connection(make_params(broker.url))
    conn.connect()
    try:
        conn.channel().exchange_declare(name, "topic", durable=True)
        yield name
        conn.channel().exchange_delete(name)
    finally:
        conn.close()


def _assert_refused_declaration(exc: BaseException | None, exchange: str) -> None:
    assert isinstance(exc, DeclarationRefused), repr(exc)
    assert not isinstance(exc, amqp_exc.AMQPError)
    assert exc.reply_code == 406
    assert exc.kind == "exchange" and exc.name == exchange
    assert "PRECONDITION_FAILED" in exc.reply_text and "durable" in exc.reply_text
    assert exchange in str(exc) and "durable" in str(exc)


def _fastrpc_transport(url: str, **options):
    return fastrpc.get_rpc_transport(fastrpc.Options(**options), url=url)


def test_refused_declaration_from_fastrpc_calls_casts_servers_and_notifications(broker, durable_exchange):
    transport = _fastrpc_transport(broker.url, control_exchange=durable_exchange)
    try:
        target = fastrpc.Target(topic="t", exchange=durable_exchange)
        client = fastrpc.get_rpc_client(transport, target, timeout=CALL_TIMEOUT)
        started = time.monotonic()
        with pytest.raises(fastrpc.ClientSendError) as call:
            client.call({}, "ping")
        assert time.monotonic() - started < AT_ONCE
        _assert_refused_declaration(call.value.ex, durable_exchange)
        with pytest.raises(fastrpc.ClientSendError) as cast:
            client.cast({}, "ping")
        _assert_refused_declaration(cast.value.ex, durable_exchange)

        server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic="t", server="s1",
                                                                  exchange=durable_exchange), [Gate()])
        with pytest.raises(fastrpc.ServerListenError) as start:
            server.start()
        _assert_refused_declaration(start.value.ex, durable_exchange)

        with pytest.raises(DeclarationRefused) as notify:
            transport._driver.send_notification(fastrpc.Target(topic="n.info"), {}, {"event_type": "x"}, 2.0)
        _assert_refused_declaration(notify.value, durable_exchange)
    finally:
        transport.cleanup()


def test_refused_declaration_on_oslos_api(broker, durable_exchange, caplog):
    conf = oslo_conf()
    conf.register_opts(oslo_transport._transport_opts)  # control_exchange, as get_transport does
    conf.set_override("control_exchange", durable_exchange)
    transport = oslo_messaging.get_rpc_transport(conf, url=f"fastrpc://{_netloc(broker)}/")
    try:
        target = oslo_messaging.Target(topic="t")
        client = oslo_messaging.get_rpc_client(transport, target, timeout=CALL_TIMEOUT)
        with pytest.raises(oslo_messaging.ClientSendError) as call:
            client.call({}, "ping")
        assert isinstance(call.value.ex, OsloBrokerError)
        assert call.value.ex.reply_code == 406
        _assert_refused_declaration(call.value.ex.cause, durable_exchange)

        server = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic="t", server="s1"),
                                               [Gate()], executor="threading")
        # A delivery failure (oslo's RPC server cannot raise ServerListenError:
        # it reads an attribute it never sets), with fastrpc's error as cause.
        with pytest.raises(ListenRefused) as start:
            server.start()
        assert isinstance(start.value, oslo_messaging.MessageDeliveryFailure)
        assert start.value.reply_code == 406
        _assert_refused_declaration(start.value.cause, durable_exchange)

        notified = _oslo_notification_error(transport, caplog)
        assert isinstance(notified, OsloBrokerError)
        _assert_refused_declaration(notified.cause, durable_exchange)
    finally:
        transport.cleanup()


def test_wrong_credentials_fail_at_once_and_say_so(broker):
    secret = "wrong-" + uuid.uuid4().hex[:8]
    transport = _fastrpc_transport(f"rabbit://{_netloc(broker, secret)}/")
    try:
        client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic="t"), timeout=CALL_TIMEOUT)
        started = time.monotonic()
        with pytest.raises(fastrpc.ClientSendError) as call:
            client.call({}, "ping")
        assert time.monotonic() - started < AT_ONCE
        exc = call.value.ex
        assert isinstance(exc, AuthenticationError) and exc.reply_code == 403
        assert "guest" in str(exc) and secret not in str(call.value)

        server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic="t", server="s1"), [Gate()])
        with pytest.raises(fastrpc.ServerListenError) as start:
            server.start()  # no wait for a broker that answers "no"
        assert isinstance(start.value.ex, AuthenticationError)
    finally:
        transport.cleanup()


def _oslo_notification_error(transport, caplog) -> BaseException:
    """What oslo's notifier logged (it logs what the driver raised and goes on)."""
    notifier = oslo_messaging.Notifier(transport, publisher_id="p", driver="messagingv2", topics=["n"])
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="oslo_messaging.notify"):
        notifier.info({}, "event", {"x": 1})
    raised = [r.exc_info[1] for r in caplog.records if r.name.startswith("oslo_messaging.notify") and r.exc_info]
    assert len(raised) == 1, raised
    assert raised[0] is not None
    return raised[0]


@pytest.mark.parametrize("case", ["credentials", "vhost"])
def test_login_refusals_on_oslos_api(broker, case, caplog):
    """Wrong credentials and a missing vhost from oslo's call, cast, server
    start and notifier: oslo's classes, fastrpc's error (and the broker's
    reply code) as their cause."""
    expected = {"credentials": AuthenticationError, "vhost": VirtualHostRefused}[case]
    url = (f"fastrpc://{_netloc(broker, 'nope')}/" if case == "credentials"
           else f"fastrpc://{_netloc(broker)}/missing_{uuid.uuid4().hex[:8]}")
    transport = oslo_messaging.get_rpc_transport(oslo_conf(), url=url)
    try:
        client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="t"), timeout=CALL_TIMEOUT)
        started = time.monotonic()
        with pytest.raises(oslo_messaging.ClientSendError) as call:
            client.call({}, "ping")
        assert time.monotonic() - started < AT_ONCE
        with pytest.raises(oslo_messaging.ClientSendError) as cast:
            client.cast({}, "ping")
        for raised in (call.value.ex, cast.value.ex):
            assert isinstance(raised, OsloBrokerError) and isinstance(raised.cause, expected)
            assert raised.reply_code == raised.cause.reply_code != 0
        server = oslo_messaging.get_rpc_server(transport, oslo_messaging.Target(topic="t", server="s1"),
                                               [Gate()], executor="threading")
        with pytest.raises(ListenRefused) as start:
            server.start()
        assert isinstance(start.value.cause, expected)
        notified = _oslo_notification_error(transport, caplog)
        assert isinstance(notified, OsloBrokerError) and isinstance(notified.cause, expected)
    finally:
        transport.cleanup()


def test_a_missing_virtual_host_is_its_own_error(broker):
    vhost = "missing_" + uuid.uuid4().hex[:8]
    transport = _fastrpc_transport(f"rabbit://{_netloc(broker)}/{vhost}")
    try:
        client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic="t"), timeout=CALL_TIMEOUT)
        with pytest.raises(fastrpc.ClientSendError) as call:
            client.call({}, "ping")
        exc = call.value.ex
        assert isinstance(exc, VirtualHostRefused) and not isinstance(exc, AuthenticationError)
        assert vhost in str(exc) and exc.reply_code in (402, 403, 530)
        server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic="t", server="s1"), [Gate()])
        with pytest.raises(fastrpc.ServerListenError) as start:
            server.start()
        assert isinstance(start.value.ex, VirtualHostRefused)
    finally:
        transport.cleanup()


def test_a_refused_connection_is_a_delivery_problem_not_a_refusal():
    port = free_ports(1)[0]
    transport = _fastrpc_transport(f"rabbit://guest:guest@127.0.0.1:{port}/", rabbit_retry_interval=0.1,
                                   rabbit_interval_max=0.2)
    try:
        client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic="t"), timeout=1.0)
        with pytest.raises(MessagingTimeout) as call:
            client.call({}, "ping")
        assert "127.0.0.1" in str(call.value)
        with pytest.raises(MessageDeliveryFailure) as cast:
            client.prepare(retry=0).cast({}, "ping")
        assert not isinstance(cast.value, BrokerError) and "127.0.0.1" in str(cast.value)
    finally:
        transport.cleanup()


@pytest.mark.parametrize("refusing_first", [True, False])
def test_a_login_refusal_on_any_host_is_not_waited_out(broker, refusing_first):
    """Two hosts, one down and one refusing the password: the refusal is what
    start() reports, at once, whichever host comes first."""
    dead = f"guest:guest@127.0.0.1:{free_ports(1)[0]}"
    refusing = _netloc(broker, "wrong")
    hosts = [refusing, dead] if refusing_first else [dead, refusing]
    transport = _fastrpc_transport(f"rabbit://{','.join(hosts)}/", rabbit_retry_interval=0.1)
    try:
        server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic="t", server="s1"), [Gate()])
        with pytest.raises(fastrpc.ServerListenError) as start:
            server.start()
        assert isinstance(start.value.ex, AuthenticationError)
    finally:
        transport.cleanup()


class RaisesAmqpError:
    def fail(self, ctxt):
        raise amqp_exc.ConsumerCancelled("raised by the endpoint itself")


def test_a_remote_exception_of_an_amqp_class_is_the_callers_not_the_boundarys(broker):
    """The boundary converts what the connection layer raises, not what a
    remote endpoint raised (rebuilt as its own class when its module is allowed)."""
    topic = "boundary_remote_" + uuid.uuid4().hex[:8]
    server_t = _fastrpc_transport(broker.url)
    client_t = fastrpc.get_rpc_transport(fastrpc.Options(), url=broker.url,
                                         allowed_remote_exmods=["fastrpc.amqp.exceptions"])
    server = fastrpc.get_rpc_server(server_t, fastrpc.Target(topic=topic, server="s1"), [RaisesAmqpError()])
    server.start()
    try:
        client = fastrpc.get_rpc_client(client_t, fastrpc.Target(topic=topic), timeout=CALL_TIMEOUT)
        with pytest.raises(amqp_exc.ConsumerCancelled) as call:
            client.call({}, "fail")
        assert "raised by the endpoint itself" in str(call.value)
    finally:
        server.stop()
        server.wait()
        client_t.cleanup()
        server_t.cleanup()


def test_a_refused_connection_on_oslos_api():
    port = free_ports(1)[0]
    url = f"fastrpc://guest:guest@127.0.0.1:{port}/?rabbit_retry_interval=0.1&rabbit_interval_max=0.2"
    transport = oslo_messaging.get_rpc_transport(oslo_conf(), url=url)
    try:
        client = oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic="t"), timeout=1.0)
        with pytest.raises(oslo_messaging.MessagingTimeout):
            client.call({}, "ping")
        with pytest.raises(oslo_messaging.MessageDeliveryFailure) as cast:
            client.prepare(retry=0).cast({}, "ping")
        assert not isinstance(cast.value, oslo_messaging.ClientSendError) and "127.0.0.1" in str(cast.value)
    finally:
        transport.cleanup()
