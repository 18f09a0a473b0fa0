"""pytest fixtures that provide RabbitMQ brokers.

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

Nodes start only when a test asks for them. A shared or private node that a
test paused (and, failing, never resumed) is resumed after that test so later
tests still have a broker.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .external import ExternalBroker
from .node import RabbitNode

TEST_URL_ENV = "FASTRPC_TEST_URL"
_SHARED_NODES = pytest.StashKey[list[RabbitNode]]()


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


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    for node in _shared_nodes(item.config):
        if node.paused and node.running:
            node.resume()


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
        errors = []
        for node in nodes:
            try:
                node.stop()
            except Exception as exc:  # stop every node even if one fails
                errors.append(exc)
        if errors:
            raise errors[0]
