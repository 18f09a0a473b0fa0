"""Shared test configuration.

The broker fixtures (``broker``, ``tls_broker``, ``private_node``,
``rabbit_node_factory``) come from fastrpc.testing.pytest_plugin, registered by
the package's pytest11 entry point; it is registered here too when the package
is not installed (plain checkout).

``codec`` runs a test once per codec implementation (``codec_support.CODECS``):
"py" (fastrpc.amqp.codec_py) always, "c" (fastrpc._ext.codec) unless
FASTRPC_NO_EXTENSIONS=1 (as decided by fastrpc._impl). A missing extension fails
the "c" cases instead of skipping them.

Test modules that exercise a compiled/pure twin are marked ``twins``
(``pytestmark = pytest.mark.twins``): ``make test`` runs them a second time
with FASTRPC_NO_EXTENSIONS=1 (``pytest -m twins``).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
from codec_support import CODECS, load_codec
from fake_peer import Peer


def pytest_configure(config: pytest.Config) -> None:
    from fastrpc.testing import pytest_plugin

    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "fastrpc_broker")


@pytest.fixture(params=CODECS, scope="module")
def codec(request: pytest.FixtureRequest) -> ModuleType:
    return load_codec(request.param)


@pytest.fixture
def peer() -> Iterator[Peer]:
    """A scripted AMQP peer on loopback (see fake_peer.Peer)."""
    p = Peer()
    yield p
    p.close()
