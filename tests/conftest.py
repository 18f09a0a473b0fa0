"""Shared test configuration.

The broker fixtures (``broker``, ``tls_broker``, ``private_node``,
``rabbit_node_factory``) come from fastrpc.testing.pytest_plugin, which a
test suite opts into with the ``pytest_plugins`` line below (installing
fastrpc adds no fixtures to anyone's tests).

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

pytest_plugins = ["fastrpc.testing.pytest_plugin"]


@pytest.fixture(params=CODECS, scope="module")
def codec(request: pytest.FixtureRequest) -> ModuleType:
    return load_codec(request.param)


@pytest.fixture
def peer() -> Iterator[Peer]:
    """A scripted AMQP peer on loopback (see fake_peer.Peer)."""
    p = Peer()
    yield p
    p.close()
