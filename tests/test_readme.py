"""The README's code examples run as written against the private broker."""

from __future__ import annotations

import pathlib
import re

import pytest

pytestmark = pytest.mark.twins

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
EXAMPLE_URL = "guest:guest@127.0.0.1:5672/"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples_against_the_documented_url():
    blocks = python_blocks()
    assert len(blocks) >= 2
    assert all(EXAMPLE_URL in block for block in blocks)


def test_readme_examples_run(broker):
    # Point the examples at the test broker; everything else runs unchanged,
    # including their own assertions.
    authority = broker.url.split("://", 1)[1]
    for block in python_blocks():
        code = block.replace(EXAMPLE_URL, authority)
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
