"""Shared test configuration.

The broker fixtures (``broker``, ``tls_broker``, ``rabbit_node_factory``) come from
fastrpc.testing.pytest_plugin, registered by the package's pytest11 entry point;
it is registered here too when the package is not installed (plain checkout).

``codec`` runs a test once per codec implementation: "py" (fastrpc.amqp.codec_py)
always, "c" (fastrpc._ext.codec) unless FASTRPC_NO_EXTENSIONS=1. A missing
extension fails the "c" cases instead of skipping them.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

NO_EXTENSIONS = os.environ.get("FASTRPC_NO_EXTENSIONS", "") not in ("", "0")
CODEC_MODULES = {"py": "fastrpc.amqp.codec_py", "c": "fastrpc._ext.codec"}
CODEC_IDS = ["py"] if NO_EXTENSIONS else ["py", "c"]


def pytest_configure(config: pytest.Config) -> None:
    from fastrpc.testing import pytest_plugin

    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "fastrpc_broker")


@pytest.fixture(params=CODEC_IDS)
def codec(request: pytest.FixtureRequest) -> ModuleType:
    name = CODEC_MODULES[request.param]
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if request.param == "c":
            pytest.fail(f"compiled codec {name} is not built (run `make` or `pip install -e .`): {exc}")
        raise
