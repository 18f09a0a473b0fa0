"""The test harness itself: the 3-node cluster, its faults, and the TCP proxy.

Most tests share the session cluster (``rabbit_cluster``); the plugin restores it
after each test that disturbed it. The first test makes a one-node cluster of
its own, before the shared one starts, so two clusters never run at once.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from fastrpc.amqp.connection import Connection
from fastrpc.drivers.amqp.connecting import connection_params
from fastrpc.options import Options
from fastrpc.testing import RabbitCluster, TcpProxy, amqp_answers
from fastrpc.testing.firewall import LoopbackFirewall, iptables_path
from fastrpc.testing.node import RabbitNodeError, _process_group_members, _process_state
from fastrpc.testing.ports import PROTOCOL_HEADER, is_connection_start
from fastrpc.transport_url import TransportURL

WAIT = 30.0  # bound for anything the cluster should do promptly


def test_iptables_is_installed() -> None:
    # Cutting a node off needs it; make test installs it. Fail loudly, never skip.
    assert iptables_path() is not None, "iptables is missing: install Debian's iptables package"


def _until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def _connect_times_out(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return False
    except TimeoutError:
        return True


def _names(cluster: RabbitCluster) -> list[str]:
    return sorted(node.nodename for node in cluster.nodes)


# -- runs first: a cluster of its own ----------------------------------------


def test_stop_removes_processes_directories_and_chain(rabbit_cluster_factory: Callable[..., RabbitCluster]) -> None:
    cluster = rabbit_cluster_factory(1, management=False)
    node = cluster.nodes[0]
    assert node._proc is not None
    pgid = node._proc.pid  # the node's process group
    cluster.cut_off(0)
    assert cluster.chain_exists()
    assert any(f"--dport {node.port} " in rule for rule in cluster.firewall_rules())
    assert _connect_times_out(node.port)
    cluster.stop()  # a frozen, cut-off node too
    assert not cluster.chain_exists()
    assert not cluster.workdir.exists()
    assert _process_group_members(pgid) == []


def test_reaper_removes_the_chain_of_a_killed_process() -> None:
    code = textwrap.dedent(
        """
        import os
        from fastrpc.testing.firewall import LoopbackFirewall
        fw = LoopbackFirewall()
        fw.block([9])
        print(fw.chain, flush=True)
        os._exit(0)  # no clean-up runs in this process
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    chain = out.stdout.strip()
    assert chain.startswith("fastrpc-"), out.stderr
    probe = LoopbackFirewall()
    probe.chain = chain
    _until("the reaper removed the chain", lambda: not probe.exists())


# -- the shared cluster --------------------------------------------------------


def test_cluster_forms(rabbit_cluster: RabbitCluster) -> None:
    for i in range(3):
        status = rabbit_cluster.status(i)
        assert status.running_nodes == _names(rabbit_cluster)
        assert status.disk_nodes == _names(rabbit_cluster)
        assert status.partitions == {}
    assert len({n.nodename for n in rabbit_cluster.nodes}) == 3
    assert all(n.nodename.endswith("@localhost") and rabbit_cluster.id in n.nodename for n in rabbit_cluster.nodes)
    assert len({n.epmd_port for n in rabbit_cluster.nodes}) == 1


def test_net_ticktime_applied(rabbit_cluster: RabbitCluster) -> None:
    assert [rabbit_cluster.net_ticktime_of(i) for i in range(3)] == [10, 10, 10]


def test_management_api_answers_on_each_node(rabbit_cluster: RabbitCluster) -> None:
    auth = "Basic " + base64.b64encode(b"guest:guest").decode()
    for node in rabbit_cluster.nodes:
        request = urllib.request.Request(node.management_url + "api/overview", headers={"Authorization": auth})
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            overview = json.load(response)
        assert overview["node"] == node.nodename
        assert overview["cluster_name"]


def test_url_names_every_node(rabbit_cluster: RabbitCluster) -> None:
    url = TransportURL.parse(url=rabbit_cluster.url)
    assert [(h.hostname, h.port, h.username, h.password) for h in url.hosts] == [
        ("127.0.0.1", n.port, "guest", "guest") for n in rabbit_cluster.nodes
    ]
    params = connection_params(Options(), url)
    assert [p.port for p in params] == [n.port for n in rabbit_cluster.nodes]
    assert {p.virtual_host for p in params} == {"/"}
    assert rabbit_cluster.urls == [n.url for n in rabbit_cluster.nodes]


def test_kill_then_restart_rejoins(rabbit_cluster: RabbitCluster) -> None:
    victim = rabbit_cluster.nodes[2]
    rabbit_cluster.kill(2)
    assert not victim.running and not victim.accepts(timeout=0.5)
    _until("node 1 sees node 3 gone", lambda: victim.nodename not in rabbit_cluster.view(0).running_nodes)
    rabbit_cluster.restart(2)
    for i in range(3):
        assert rabbit_cluster.view(i).running_nodes == _names(rabbit_cluster)
    assert victim.amqp_answers()


def test_heal_boots_a_node_again_when_start_app_does_not_finish(
        rabbit_cluster: RabbitCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a cut-off, ``start_app`` has been seen to wait on past its
    timeout: heal() then kills the node and boots it again, and it rejoins."""
    victim = rabbit_cluster.nodes[2]
    real_ctl = victim.ctl

    def ctl(*args: Any, **kwargs: Any) -> Any:
        if args[:1] == ("start_app",):
            raise RabbitNodeError(f"rabbitmqctl start_app timed out after 0.0 s on {victim.nodename}")
        return real_ctl(*args, **kwargs)

    monkeypatch.setattr(victim, "ctl", ctl)
    pid = victim.beam_pid()
    rabbit_cluster.heal(2)
    monkeypatch.undo()
    assert victim.beam_pid() != pid  # booted again, not the app restarted
    for i in range(3):
        assert rabbit_cluster.view(i).running_nodes == _names(rabbit_cluster)
    assert victim.amqp_answers()


def test_freeze_and_thaw(rabbit_cluster: RabbitCluster) -> None:
    node = rabbit_cluster.nodes[1]
    rabbit_cluster.freeze(1)
    assert _process_state(node.beam_pid()) in ("T", "t")
    assert not amqp_answers(node.host, node.port, timeout=1.0)
    rabbit_cluster.thaw(1)
    assert node.amqp_answers(timeout=5.0)
    assert rabbit_cluster.frozen == []


def test_cut_off_silences_node_and_reconnect_restores(rabbit_cluster: RabbitCluster) -> None:
    node = rabbit_cluster.nodes[2]
    rabbit_cluster.cut_off(2)
    assert _connect_times_out(node.port)
    assert _connect_times_out(node.dist_port)
    rules = rabbit_cluster.firewall_rules()
    assert all(rule.startswith(f"-A {rabbit_cluster.chain} ") for rule in rules)
    assert any(f"--sport {node.dist_port} " in rule for rule in rules)
    rabbit_cluster.reconnect(2)
    assert rabbit_cluster.firewall_rules() == []
    assert node.amqp_answers(timeout=5.0)


def test_cut_off_node_is_dropped_then_partition_healed(rabbit_cluster: RabbitCluster) -> None:
    """With net_ticktime 10 the others drop a silent node in 7.5-12.5 s."""
    gone = rabbit_cluster.nodes[2].nodename
    started = time.monotonic()
    rabbit_cluster.cut_off(2)
    _until("nodes 1 and 2 drop node 3", lambda: all(gone not in rabbit_cluster.view(i).running_nodes for i in (0, 1)))
    assert 5.0 < time.monotonic() - started < WAIT
    rabbit_cluster.reconnect(2)
    rabbit_cluster.heal_partitions(timeout=120)
    for i in range(3):
        view = rabbit_cluster.view(i)
        assert view.running_nodes == _names(rabbit_cluster)
        assert view.partitions == {}


# -- the proxy, in front of a real broker -----------------------------------------


@pytest.fixture
def proxy(rabbit_cluster: RabbitCluster, tcp_proxy_factory: Callable[..., TcpProxy]) -> TcpProxy:
    node = rabbit_cluster.nodes[0]
    return tcp_proxy_factory(node.host, node.port)


def _open_amqp_socket(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(proxy.address, timeout=5.0)
    sock.sendall(PROTOCOL_HEADER)
    data = b""
    while not is_connection_start(data):
        data += sock.recv(4096)
    return sock


def test_proxy_forwards_an_amqp_connection(proxy: TcpProxy) -> None:
    with Connection(f"amqp://guest:guest@{proxy.host}:{proxy.port}/", connect_timeout=WAIT) as conn:
        assert conn.is_open
        assert conn.server_properties["product"] in ("RabbitMQ", b"RabbitMQ")
        (through,) = proxy.connections
        assert through.bytes_up > 0 and through.bytes_down > 0


def test_proxy_blackhole_is_silent_and_resume_forwards(proxy: TcpProxy) -> None:
    sock = _open_amqp_socket(proxy)
    with sock:
        proxy.blackhole()
        assert not amqp_answers(proxy.host, proxy.port, timeout=1.0)  # new connections too
        sock.settimeout(1.0)
        sock.sendall(b"\x01\x00\x00")  # the start of a frame: the broker would answer a full one
        with pytest.raises(TimeoutError):
            sock.recv(1)
        assert all(c.blackholed for c in proxy.connections)
        proxy.resume()
        assert amqp_answers(proxy.host, proxy.port, timeout=5.0)


def test_proxy_delay(proxy: TcpProxy) -> None:
    proxy.delay(0.3)
    started = time.monotonic()
    assert amqp_answers(proxy.host, proxy.port, timeout=5.0)
    assert time.monotonic() - started >= 0.6  # header up, connection.start down


def test_proxy_reset_reaches_the_client(proxy: TcpProxy) -> None:
    sock = _open_amqp_socket(proxy)
    with sock:
        proxy.wait_connections(1)[0].reset()
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
    with Connection(f"amqp://guest:guest@{proxy.host}:{proxy.port}/", connect_timeout=WAIT) as conn:
        proxy.reset()
        _until("the client noticed the reset", lambda: not conn.is_open, timeout=10.0)
        reason: Any = conn.closed_reason
        assert reason is not None
    assert proxy.connections == []


def test_proxy_is_loopback_only() -> None:
    with pytest.raises(ValueError):
        TcpProxy("192.0.2.1", 5672)
