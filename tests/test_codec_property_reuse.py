"""Properties reused: encoded once (``PackedProperties``), they publish the
very bytes their dict does, in both codecs, and are refused for what the dict
would be; read many times alike (the compiled reader keeps the last ones), each
delivery still gets properties of its own."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from codec_support import load_codec, properties_strategy
from hypothesis import HealthCheck, given, settings

from fastrpc.amqp import spec
from fastrpc.drivers.topology import publish_properties

TWINS = pytest.mark.twins  # also run on the pure build (`pytest -m twins`)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _published(codec: ModuleType, props: Any, body: bytes = b"body", content: bool = False) -> bytes:
    writer = codec.FrameWriter(frame_max=4096)
    if content:
        writer.content(2, "basic.deliver", {"consumer_tag": "ct", "delivery_tag": 7, "exchange": "ex",
                                            "routing_key": "rk"}, props, body)
    else:
        writer.publish(5, "openstack", "topic.server", body, props, True)
    return writer.take()


@TWINS
@SETTINGS
@given(props=properties_strategy)
def test_packed_properties_publish_the_same_bytes_as_their_dict(codec: ModuleType, props: dict[str, Any]) -> None:
    packed = codec.PackedProperties(props)
    assert _published(codec, packed) == _published(codec, props)
    assert _published(codec, packed, content=True) == _published(codec, props, content=True)
    assert packed.properties == props
    event = codec.FrameReader().feed(_published(codec, packed))[0]
    assert event.properties == codec.FrameReader().feed(_published(codec, props))[0].properties


# The two tests comparing the codecs run with the compiled build only
# (not marked twins); load_codec fails them if it is missing.
@SETTINGS
@given(props=properties_strategy)
def test_both_codecs_pack_the_same_bytes(props: dict[str, Any]) -> None:
    assert load_codec("py").PackedProperties(props).data == load_codec("c").PackedProperties(props).data


def test_a_packed_value_of_the_other_codec_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match="properties must be a dict, not PackedProperties"):
        _published(load_codec("c"), load_codec("py").PackedProperties({"content_type": "a"}))


@TWINS
def test_the_drivers_properties_on_the_wire(codec: ModuleType) -> None:
    for ctype, expiration in (("application/json", 60.0), ("application/msgpack", None), ("application/json", 0.25)):
        props = publish_properties(ctype, expiration)
        packed = codec.PackedProperties(props)
        event = codec.FrameReader().feed(_published(codec, packed))[0]
        assert isinstance(event, spec.ContentMethod)
        assert event.properties == props
        assert event.body == b"body"


@TWINS
def test_empty_properties_pack_to_no_flags(codec: ModuleType) -> None:
    assert codec.PackedProperties({}).data == b"\x00\x00"
    assert _published(codec, codec.PackedProperties({})) == _published(codec, None)


@TWINS
def test_what_the_dict_is_refused_for_is_refused_when_packing(codec: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown basic properties: colour"):
        codec.PackedProperties({"content_type": "a", "colour": "red"})
    with pytest.raises(ValueError, match="content_type"):
        codec.PackedProperties({"content_type": "x" * 256})
    with pytest.raises(TypeError, match="properties must be a dict, not list"):
        codec.PackedProperties([("content_type", "a")])


@TWINS
def test_packed_properties_do_not_change(codec: ModuleType) -> None:
    props = {"content_type": "application/json", "priority": 0}
    packed = codec.PackedProperties(props)
    data = packed.data
    props["content_type"] = "text/plain"  # the caller's dict is not kept
    packed.properties["priority"] = 9  # a copy
    assert packed.data == data
    assert packed.properties == {"content_type": "application/json", "priority": 0}
    with pytest.raises(AttributeError):
        packed.data = b"\x00\x00"
    assert packed == codec.PackedProperties({"content_type": "application/json", "priority": 0})
    assert hash(packed) == hash(codec.PackedProperties({"content_type": "application/json", "priority": 0}))
    assert packed != codec.PackedProperties({"content_type": "application/json"})
    assert "application/json" in repr(packed)



def _deliveries(codec: ModuleType, props_list: list[Any], split: bool) -> list[Any]:
    writer = codec.FrameWriter(frame_max=4096)
    for i, props in enumerate(props_list):
        writer.content(1, "basic.deliver", {"consumer_tag": "ct", "delivery_tag": i + 1, "exchange": "",
                                            "routing_key": "q"}, props, b"b%d" % i)
    data = writer.take()
    reader = codec.FrameReader(frame_max=4096)
    if not split:
        return reader.feed(data)
    # One byte at a time: the reader's frame-by-frame path instead of its
    # whole-delivery one.
    events = []
    for i in range(len(data)):
        events += reader.feed(data[i:i + 1])
    return events


@TWINS
@pytest.mark.parametrize("split", [False, True])
def test_deliveries_with_the_same_properties_get_a_dict_each(codec: ModuleType, split: bool) -> None:
    props = publish_properties("application/json", 30)
    first, second, third = _deliveries(codec, [props, props, props], split)
    assert first.properties == second.properties == third.properties == props
    first.properties["content_type"] = "changed"
    second.properties.clear()
    assert third.properties == props
    assert [d.body for d in (first, second, third)] == [b"b0", b"b1", b"b2"]


@TWINS
@pytest.mark.parametrize("split", [False, True])
def test_properties_that_differ_are_read_again(codec: ModuleType, split: bool) -> None:
    a = publish_properties("application/json", 30)
    b = publish_properties("application/json", 40)  # the same length, one byte apart
    c = {"content_type": "application/json"}
    events = _deliveries(codec, [a, b, a, c, {}, a], split)
    assert [e.properties for e in events] == [a, b, a, c, {}, a]


@TWINS
@pytest.mark.parametrize("split", [False, True])
def test_headers_are_never_shared_between_deliveries(codec: ModuleType, split: bool) -> None:
    props = {"content_type": "application/json", "headers": {"k": "v", "nested": {"x": 1}}}
    first, second = _deliveries(codec, [props, props], split)
    assert first.properties == second.properties
    first.properties["headers"]["k"] = "changed"
    first.properties["headers"]["nested"]["x"] = 2
    assert second.properties["headers"] == {"k": "v", "nested": {"x": 1}}


@TWINS
def test_packed_headers_do_not_change_with_the_callers_dict(codec: ModuleType) -> None:
    headers = {"x-a": 1, "nested": {"k": "v"}}
    packed = codec.PackedProperties({"content_type": "a", "headers": headers})
    headers["x-b"] = 2
    headers["nested"]["k"] = "changed"
    packed.properties["headers"]["x-c"] = 3
    assert packed.properties == {"content_type": "a", "headers": {"x-a": 1, "nested": {"k": "v"}}}
    event = codec.FrameReader().feed(_published(codec, packed))[0]
    assert event.properties == packed.properties


@TWINS
def test_packed_properties_are_not_packed_again_nor_subclassed(codec: ModuleType) -> None:
    packed = codec.PackedProperties({"content_type": "a"})
    with pytest.raises(TypeError, match="cannot be changed"):
        packed.__init__({"content_type": "zzz"})
    assert packed.properties == {"content_type": "a"}
    assert _published(codec, packed) == _published(codec, {"content_type": "a"})
    with pytest.raises(TypeError):
        type("Sub", (codec.PackedProperties,), {})
