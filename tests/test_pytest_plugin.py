"""The broker fixtures are opt-in: installing fastrpc gives other projects'
test runs no fixture; one ``pytest_plugins`` line in a conftest does."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import fastrpc


def run_pytest(directory: Path, conftest: str | None) -> subprocess.CompletedProcess[str]:
    """pytest in a project of its own, with every installed plugin autoloaded."""
    (directory / "test_mine.py").write_text("def test_mine(broker):\n    pass\n")
    if conftest is not None:
        (directory / "conftest.py").write_text(textwrap.dedent(conftest))
    root = str(Path(fastrpc.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTEST_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    # An unreachable external broker: the fixture hands it out without starting a node.
    env["FASTRPC_TEST_URL"] = "amqp://u:p@127.0.0.1:1/"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py"],
        cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )


def test_installing_fastrpc_adds_no_fixture(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, conftest=None)
    assert proc.returncode != 0
    assert "fixture 'broker' not found" in proc.stdout, proc.stdout


def test_a_conftest_line_opts_in(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, conftest='pytest_plugins = ["fastrpc.testing.pytest_plugin"]\n')
    assert proc.returncode == 0, proc.stdout
    assert "1 passed" in proc.stdout
