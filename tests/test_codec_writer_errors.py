"""FrameWriter refuses what it cannot encode, clearly, and leaves its buffer
exactly as it was (a half-written frame would corrupt the connection)."""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from codec_support import HEARTBEAT

pytestmark = pytest.mark.twins


def refused(codec: ModuleType, call: Callable[[Any], None], errors: Any, match: str | None) -> None:
    writer = codec.FrameWriter()
    writer.heartbeat()
    with pytest.raises(errors, match=match):
        call(writer)
    assert writer.take() == HEARTBEAT, "a failed write left bytes in the buffer"


def test_shortstr_over_255_bytes(codec: ModuleType) -> None:
    refused(codec, lambda w: w.method(1, "queue.declare", queue="q" * 256), ValueError, "255")
    refused(codec, lambda w: w.method(1, "basic.consume", consumer_tag="\u00e9" * 128), ValueError, "255")
    refused(codec, lambda w: w.publish(1, "", "k" * 256, b"body"), ValueError, "255")
    refused(codec, lambda w: w.publish(1, "", "", b"", {"correlation_id": "c" * 256}), ValueError, "255")
    refused(codec, lambda w: w.method(1, "queue.declare", arguments={"k" * 256: 1}), ValueError, "255")
    # 255 bytes exactly is fine
    writer = codec.FrameWriter()
    writer.method(1, "queue.declare", queue="q" * 255)
    assert len(writer) == 8 + 4 + 2 + 256 + 1 + 4


def test_unknown_method_name(codec: ModuleType) -> None:
    refused(codec, lambda w: w.method(1, "basic.frobnicate"), (ValueError, TypeError), "basic.frobnicate")
    refused(codec, lambda w: w.content(1, "basic.nothing", {}, None, b""), (ValueError, TypeError), "basic.nothing")


def test_content_needs_content_method(codec: ModuleType) -> None:
    refused(codec, lambda w: w.content(1, "basic.ack", {}, None, b""), (ValueError, TypeError), "basic.ack")


def test_unknown_field(codec: ModuleType) -> None:
    refused(codec, lambda w: w.method(1, "queue.declare", queue="q", colour="red"), (ValueError, TypeError), "colour")
    refused(codec, lambda w: w.content(1, "basic.deliver", {"bogus": 1}, None, b""), (ValueError, TypeError), "bogus")


def test_unknown_property(codec: ModuleType) -> None:
    refused(codec, lambda w: w.publish(1, "", "q", b"", {"colour": "red"}), (ValueError, TypeError), "colour")


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, 1 + 2j, frozenset(), type, datetime.date(2020, 1, 1)],
    ids=["object", "set", "complex", "frozenset", "type", "date"],
)
def test_unencodable_table_value(codec: ModuleType, value: Any) -> None:
    refused(codec, lambda w: w.method(1, "queue.declare", arguments={"x-bad": value}), TypeError, type(value).__name__)
    refused(
        codec,
        lambda w: w.publish(1, "", "q", b"", {"headers": {"a": [1, {"b": value}]}}),
        TypeError,
        type(value).__name__,
    )


def test_unencodable_numbers(codec: ModuleType) -> None:
    refused(codec, lambda w: w.method(1, "queue.declare", arguments={"big": 2**63}), (ValueError, TypeError), None)
    refused(
        codec, lambda w: w.method(1, "queue.declare", arguments={"small": -(2**63) - 1}), (ValueError, TypeError), None
    )
    refused(
        codec,
        lambda w: w.method(1, "queue.declare", arguments={"nan": decimal.Decimal("NaN")}),
        (ValueError, TypeError),
        None,
    )
    refused(
        codec,
        lambda w: w.method(1, "queue.declare", arguments={"wide": decimal.Decimal(2**40)}),
        (ValueError, TypeError),
        None,
    )


def test_non_string_table_key(codec: ModuleType) -> None:
    refused(codec, lambda w: w.method(1, "queue.declare", arguments={1: "one"}), TypeError, None)


def test_field_out_of_range_or_wrong_type(codec: ModuleType) -> None:
    refused(codec, lambda w: w.method(0, "connection.tune", channel_max=65536), (ValueError, OverflowError), None)
    refused(codec, lambda w: w.method(0, "connection.tune", frame_max=-1), (ValueError, OverflowError), None)
    refused(codec, lambda w: w.method(1, "basic.ack", delivery_tag=2**64), (ValueError, OverflowError), None)
    refused(codec, lambda w: w.method(1, "queue.declare", queue=5), TypeError, None)
    refused(codec, lambda w: w.method(1, "queue.declare", arguments=[("a", 1)]), TypeError, None)
    refused(codec, lambda w: w.publish(1, "", "q", b"", {"delivery_mode": 256}), (ValueError, OverflowError), None)
    refused(codec, lambda w: w.publish(1, "", "q", b"", {"timestamp": "yesterday"}), TypeError, None)
    refused(codec, lambda w: w.publish(1, "", "q", "text body"), TypeError, None)


def test_channel_out_of_range(codec: ModuleType) -> None:
    refused(codec, lambda w: w.method(65536, "channel.open"), (ValueError, OverflowError), None)
    refused(codec, lambda w: w.ack(-1, 1), (ValueError, OverflowError), None)
    refused(codec, lambda w: w.publish(70000, "", "q", b""), (ValueError, OverflowError), None)


def test_ack_tag_out_of_range(codec: ModuleType) -> None:
    refused(codec, lambda w: w.ack(1, 2**64), (ValueError, OverflowError), None)
    refused(codec, lambda w: w.nack(1, -1), (ValueError, OverflowError), None)
    refused(codec, lambda w: w.reject(1, -5), (ValueError, OverflowError), None)


def test_error_messages_name_the_culprit(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    with pytest.raises(TypeError) as info:
        writer.method(1, "queue.declare", arguments={"x-bad": object()})
    assert "object" in str(info.value)
    with pytest.raises(ValueError) as info2:
        writer.publish(1, "", "r" * 300, b"")
    assert "300" in str(info2.value) and "255" in str(info2.value)
    assert len(writer) == 0
