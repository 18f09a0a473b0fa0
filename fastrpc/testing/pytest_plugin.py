"""pytest fixtures that provide RabbitMQ brokers (and a PostgreSQL server).

Opt in from a conftest.py: ``pytest_plugins = ["fastrpc.testing.pytest_plugin"]``
(installing fastrpc registers nothing by itself).

- ``broker`` (session): a private RabbitNode, or, when FASTRPC_TEST_URL is set, an
  ExternalBroker for that URL (same ``url``/``host``/``port``).
- ``tls_broker`` (session): a private RabbitNode with a TLS listener.
- ``private_node`` (module): a RabbitNode of the requesting test module alone,
  for tests that pause, alarm or otherwise disturb their broker.
- ``rabbit_node_factory`` (function): ``make(**kwargs) -> RabbitNode``; every node
  made is stopped when the test ends. Use it for tests that pause, restart or
  otherwise disturb a broker other tests share.
- ``rabbit_cluster`` (session): a 3-node RabbitCluster with RabbitMQ's default
  partition handling and net_ticktime lowered to 10 s.
- ``rabbit_cluster_factory`` (function): ``make(size=3, **kwargs) -> RabbitCluster``
  for other settings; every cluster made is stopped when the test ends.
- ``tcp_proxy_factory`` (function): ``make(host, port, **kwargs) -> TcpProxy``;
  every proxy made is closed when the test ends.
- ``postgres_server`` (session): a private PostgresServer; ``url`` is its test
  database, ``create_database(name)`` makes a fresh one (e.g. one per test).

Nodes and servers start only when a test asks for them. A shared or private
node that a test paused (and, failing, never resumed) is resumed after that
test so later tests still have a broker. Likewise the shared cluster is
restored after any test that disturbed it (RabbitCluster.restore: no iptables
rule, no frozen or stopped node, no partition), so a test that kills or cuts
off a node, or fails half-way, does not poison the tests after it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .cluster import RabbitCluster
from .external import ExternalBroker
from .node import RabbitNode
from .postgres import PostgresServer
from .proxy import TcpProxy

TEST_URL_ENV = "FASTRPC_TEST_URL"
# net_ticktime of the shared cluster: nodes notice a silent peer in 7.5-12.5 s.
CLUSTER_NET_TICKTIME = 10
_SHARED_NODES = pytest.StashKey[list[RabbitNode]]()
_SHARED_CLUSTERS = pytest.StashKey[list[RabbitCluster]]()


def _shared_nodes(config: pytest.Config) -> list[RabbitNode]:
    return config.stash.setdefault(_SHARED_NODES, [])


def _session_node(request: pytest.FixtureRequest, **kwargs: Any) -> Iterator[RabbitNode]:
    node = RabbitNode(**kwargs)
    shared = _shared_nodes(request.config)
    shared.append(node)
    try:
        yield node
    finally:
        shared.remove(node)
        node.stop()


def _needs_restore(cluster: RabbitCluster) -> bool:
    return cluster.disturbed or any(node.paused or not node.running for node in cluster.nodes)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    for node in _shared_nodes(item.config):
        if node.paused and node.running:
            node.resume()
    for cluster in item.config.stash.get(_SHARED_CLUSTERS, []):
        if _needs_restore(cluster):
            cluster.restore()


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[RabbitNode | ExternalBroker]:
    url = os.environ.get(TEST_URL_ENV)
    if url:
        yield ExternalBroker(url)
        return
    yield from _session_node(request)


@pytest.fixture(scope="session")
def tls_broker(request: pytest.FixtureRequest) -> Iterator[RabbitNode]:
    yield from _session_node(request, tls=True)


@pytest.fixture(scope="module")
def private_node(request: pytest.FixtureRequest) -> Iterator[RabbitNode]:
    yield from _session_node(request)


@pytest.fixture
def rabbit_node_factory() -> Iterator[Callable[..., RabbitNode]]:
    nodes: list[RabbitNode] = []

    def make(**kwargs: Any) -> RabbitNode:
        node = RabbitNode(**kwargs)
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        _close_all(nodes, RabbitNode.stop)


@pytest.fixture(scope="session")
def rabbit_cluster(request: pytest.FixtureRequest) -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(3, net_ticktime=CLUSTER_NET_TICKTIME)
    shared = request.config.stash.setdefault(_SHARED_CLUSTERS, [])
    shared.append(cluster)
    try:
        yield cluster
    finally:
        shared.remove(cluster)
        cluster.stop()


def _close_all(items: list[Any], close: Callable[[Any], None]) -> None:
    errors = []
    for item in items:
        try:
            close(item)
        except Exception as exc:  # close every item even if one fails
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def rabbit_cluster_factory() -> Iterator[Callable[..., RabbitCluster]]:
    clusters: list[RabbitCluster] = []

    def make(size: int = 3, **kwargs: Any) -> RabbitCluster:
        cluster = RabbitCluster(size, **kwargs)
        clusters.append(cluster)
        return cluster

    try:
        yield make
    finally:
        _close_all(clusters, RabbitCluster.stop)


@pytest.fixture
def tcp_proxy_factory() -> Iterator[Callable[..., TcpProxy]]:
    proxies: list[TcpProxy] = []

    def make(host: str, port: int, **kwargs: Any) -> TcpProxy:
        proxy = TcpProxy(host, port, **kwargs)
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        _close_all(proxies, TcpProxy.close)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()
