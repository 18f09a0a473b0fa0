"""Target semantics and the version rule."""

import pytest

from fastrpc import Target
from fastrpc.target import version_is_compatible


def test_equality_and_copy_with_overrides():
    t = Target(exchange="e", topic="t", namespace="ns", version="1.2", server="s", fanout=False)
    assert t == Target(exchange="e", topic="t", namespace="ns", version="1.2", server="s", fanout=False)
    assert t != Target(topic="t")
    c = t(server="other", version="1.3")
    assert (c.server, c.version, c.topic, c.exchange, c.namespace) == ("other", "1.3", "t", "e", "ns")
    assert t.server == "s"


def test_repr_lists_set_fields_only():
    assert repr(Target(topic="t", server="s")) == "<Target topic=t, server=s>"
    assert repr(Target()) == "<Target >"


def test_accepted_namespaces_include_legacy():
    t = Target(namespace="new", legacy_namespaces=["old"])
    assert t.accepted_namespaces == ["new", "old"]
    assert Target().accepted_namespaces == [None]


def test_hash_is_identity():
    a, b = Target(topic="t"), Target(topic="t")
    assert a == b
    assert len({a, b}) == 2


@pytest.mark.parametrize("imp,req,ok", [
    ("1.0", "1.0", True),
    ("1.5", "1.3", True),
    ("1.3", "1.5", False),
    ("2.0", "1.0", False),
    ("1.0", "2.0", False),
    ("1.2.3", "1.2.2", True),
    ("1.2.3", "1.2.4", False),
    ("1.2", "1.2.1", False),
    (None, "9.9", True),
    ("1.0", None, False),
])
def test_version_rule(imp, req, ok):
    assert version_is_compatible(imp, req) is ok


def test_malformed_version_raises():
    with pytest.raises(ValueError):
        version_is_compatible("1.0", "one.two")
    with pytest.raises(ValueError):
        version_is_compatible("1", "1.0")
