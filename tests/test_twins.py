"""One twin mechanism: every public twin module is its compiled build when
extensions are on and its pure-Python module with FASTRPC_NO_EXTENSIONS=1,
both builds offer the same names, and the library imports public names only."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastrpc import _impl

pytestmark = pytest.mark.twins

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = sorted(_impl.TWINS)


def _compiled_build(public: str):
    try:
        return importlib.import_module(_impl.compiled_name(public))
    except ImportError as exc:
        if _impl.NO_EXTENSIONS:
            pytest.skip(f"{public}: no compiled build to compare ({exc})")
        pytest.fail(f"{_impl.compiled_name(public)} is not built: run `.venv/bin/python setup.py build_ext --inplace`")


def name_mismatches(public: str) -> list[str]:
    """What the compiled build of ``public`` lacks or holds apart from the pure one."""
    pure = importlib.import_module(_impl.TWINS[public][0])
    compiled = _compiled_build(public)
    names = pure.__all__
    if not names:
        return [f"{pure.__name__} declares no public names"]
    found = [f"missing: {n}" for n in names if not hasattr(compiled, n)]
    for name in names:
        value = getattr(pure, name)
        if (isinstance(value, type) or inspect.isfunction(value)) and value.__module__ != pure.__name__:
            # shared, not the pure build's own: one object, whichever build raised or made it
            if getattr(compiled, name, None) is not value:
                found.append(f"not shared: {name}")
    return found


@pytest.mark.parametrize("public", PUBLIC)
def test_a_public_twin_is_the_chosen_build(public: str) -> None:
    module = importlib.import_module(public)
    pure, _source = _impl.TWINS[public]
    if _impl.NO_EXTENSIONS:
        assert module is importlib.import_module(pure)
        assert _impl.COMPILED_MODULES[public] is False
    else:
        assert module.__name__ == _impl.compiled_name(public), (
            f"FASTRPC_NO_EXTENSIONS is not set but {public} is not its compiled build: build the extension"
        )
        assert _impl.COMPILED_MODULES[public] is True
    assert sys.modules[public] is module


@pytest.mark.parametrize("public", PUBLIC)
def test_both_builds_offer_the_public_names(public: str) -> None:
    if not _impl.NO_EXTENSIONS:
        assert name_mismatches(public) == []
        return
    # In a pure-Python process a compiled class derived from another twin's
    # compiled class (Channel from ChannelCore, say) cannot load: its base
    # comes through the public name, which is then the pure module. So the
    # comparison runs where the compiled builds are chosen.
    code = ("import json, sys; sys.path.insert(0, 'tests'); import test_twins; "
            f"print(json.dumps(test_twins.name_mismatches({public!r})))")
    env = {k: v for k, v in os.environ.items() if k != "FASTRPC_NO_EXTENSIONS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_switch_goes_both_ways_in_one_process_each() -> None:
    code = "import json; from fastrpc import _impl; print(json.dumps(_impl.compiled_modules()))"
    env = {k: v for k, v in os.environ.items() if k != "FASTRPC_NO_EXTENSIONS"}
    pure = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env, FASTRPC_NO_EXTENSIONS="1"),
                          capture_output=True, text=True, check=True)
    assert json.loads(pure.stdout) == {public: False for public in _impl.TWINS}
    if all(importlib.util.find_spec(_impl.compiled_name(p)) for p in _impl.TWINS):
        compiled = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                                  capture_output=True, text=True, check=True)
        assert json.loads(compiled.stdout) == {public: True for public in _impl.TWINS}


def _imported_modules(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):  # function-level and TYPE_CHECKING imports too
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_library_imports_public_twins_only() -> None:
    implementations = {pure for pure, _ in _impl.TWINS.values()} | {_impl.compiled_name(p) for p in _impl.TWINS}
    offenders = []
    for path in sorted((ROOT / "fastrpc").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        if module == "fastrpc._impl" or module in _impl.TWINS:
            continue  # the switch itself, and each public module naming its pure build for mypy
        named = _imported_modules(ast.parse(path.read_text())) & implementations
        if named:
            offenders.append(f"{rel}: {sorted(named)}")
    assert offenders == []
