"""Several hosts in the transport URL: when the node in use dies, servers and
clients move to the next host and calls go on (two independent private nodes,
so whoever moves must declare everything again on the other one)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from endpoints import failure_of_a_start_ended_by_cleanup, in_thread

from fastrpc import Target, get_rpc_client, get_rpc_server, get_rpc_transport
from fastrpc.drivers.amqp import connection_params, open_connection
from fastrpc.exceptions import MessageDeliveryFailure, MessagingTimeout, ServerListenError
from fastrpc.options import Options
from fastrpc.testing.ports import free_ports
from fastrpc.transport import TransportURL

pytestmark = pytest.mark.twins

WAIT = 10.0
# A node that dies takes the calls in flight with it; the first calls after
# it may also be published before the server consumes on the next node.
RECOVERY = 60.0


def _netloc(node: Any) -> str:
    return str(node.url).split("//", 1)[1].rstrip("/")


class Echo:
    def echo(self, ctxt: dict, x: int) -> int:
        return x


def _call_until_answered(client: Any, x: int) -> int:
    """Call until one call is answered (bounded): the way through a failover."""
    deadline = time.monotonic() + RECOVERY
    while True:
        try:
            return int(client.prepare(timeout=2).call({}, "echo", x=x))
        except (MessagingTimeout, MessageDeliveryFailure):
            assert time.monotonic() < deadline, "calls did not get through after the failover"


def _port(conn: Any) -> int:
    assert conn is not None and conn.is_open
    return int(conn.params.port)


def test_rpc_moves_to_the_next_host_and_back(rabbit_node_factory: Any) -> None:
    n1, n2 = rabbit_node_factory(), rabbit_node_factory()
    url = f"rabbit://{_netloc(n1)},{_netloc(n2)}/?rabbit_retry_interval=0.2&rabbit_retry_backoff=0.2"
    server_transport = get_rpc_transport(url=url)
    client_transport = get_rpc_transport(url=url)
    server = get_rpc_server(server_transport, Target(topic="fo", server="s1"), [Echo()], executor="threading")
    server.start()
    try:
        client = get_rpc_client(client_transport, Target(topic="fo"), timeout=WAIT)
        assert client.call({}, "echo", x=1) == 1
        listener = server.listener
        sender = client_transport._driver
        assert _port(listener._conn) == n1.port and _port(sender.sending_connection) == n1.port

        n1.halt(graceful=False)
        assert _call_until_answered(client, 2) == 2
        assert _port(listener._conn) == n2.port and _port(sender.sending_connection) == n2.port
        assert listener.reconnects >= 1

        # The first host is back, the second dies: round the list to the first.
        n1.start()
        n2.halt(graceful=False)
        assert _call_until_answered(client, 3) == 3
        assert _port(listener._conn) == n1.port and _port(sender.sending_connection) == n1.port
        assert client.call({}, "echo", x=4) == 4
    finally:
        server.stop()
        server.wait()
        server_transport.cleanup()
        client_transport.cleanup()


def test_reconnect_starts_after_the_host_that_was_lost(rabbit_node_factory: Any) -> None:
    """A host that hangs rather than refuses costs a connect timeout per try:
    after losing a host, the next connection tries the others first."""
    n1, n2 = rabbit_node_factory(), rabbit_node_factory()
    conf = Options()
    url = TransportURL.parse(conf, f"rabbit://{_netloc(n1)},{_netloc(n2)}/")
    params = connection_params(conf, url)
    first = open_connection(params)
    assert _port(first) == n1.port
    second = open_connection(params, lost=first)
    assert _port(second) == n2.port
    third = open_connection(params, lost=second)  # wraps around
    assert _port(third) == n1.port
    for conn in (first, second, third):
        conn.close()


@pytest.mark.parametrize("executor", ["threading", "blocking"])
def test_a_server_started_before_its_broker_waits_for_it(rabbit_node_factory: Any, executor: str) -> None:
    # As oslo's servers do: a service may boot before its broker.
    node = rabbit_node_factory(autostart=False)
    transport = get_rpc_transport(url=f"rabbit://{_netloc(node)}/?rabbit_retry_interval=0.2&rabbit_interval_max=0.5")
    server = get_rpc_server(transport, Target(topic="early", server="s1"), [Echo()], executor=executor)
    starting, failed = in_thread(server.start)
    try:
        starting.join(1.0)
        assert starting.is_alive(), failed  # still waiting for the broker
        node.start()
        starting.join(RECOVERY)
        assert not starting.is_alive() and not failed, failed
        client = get_rpc_client(transport, Target(topic="early"), timeout=WAIT)
        assert client.call({}, "echo", x=5) == 5
    finally:
        if not starting.is_alive():
            server.stop()
            server.wait()
        transport.cleanup()
        starting.join(WAIT)
    assert not starting.is_alive()


def test_a_server_waiting_for_its_broker_gives_up_when_its_transport_is_cleaned_up() -> None:
    port = free_ports(1)[0]
    # Long reconnect delays: the cleanup must end the wait at once, not after them.
    transport = get_rpc_transport(
        url=f"rabbit://guest:guest@127.0.0.1:{port}/?rabbit_retry_interval=30&rabbit_interval_max=30")
    server = get_rpc_server(transport, Target(topic="never", server="s1"), [Echo()])
    failed = failure_of_a_start_ended_by_cleanup(server, transport)
    assert len(failed) == 1 and isinstance(failed[0], ServerListenError), failed
    assert isinstance(failed[0].ex, MessageDeliveryFailure)
