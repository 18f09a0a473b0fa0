"""Type stub for the compiled AMQP 0-9-1 codec (ext/codec.pyx).

Same contract as ``fastrpc.amqp.codec_py``; both are behind ``fastrpc.amqp.codec``.
"""

from typing import Any

from fastrpc.amqp.spec import (
    ContentMethod as ContentMethod,
)
from fastrpc.amqp.spec import (
    Delivery as Delivery,
)
from fastrpc.amqp.spec import (
    Event,
)
from fastrpc.amqp.spec import (
    FrameError as FrameError,
)
from fastrpc.amqp.spec import (
    Heartbeat as Heartbeat,
)
from fastrpc.amqp.spec import (
    Method as Method,
)
from fastrpc.amqp.spec import (
    Returned as Returned,
)

_Buffer = bytes | bytearray | memoryview

class FrameReader:
    frame_max: int
    max_message_size: int
    def __init__(self, frame_max: int = ..., max_message_size: int = ...) -> None: ...
    def feed(self, data: _Buffer) -> list[Event]: ...

class WriteBuffer:
    def __len__(self) -> int: ...

class PackedProperties:
    data: bytes
    def __init__(self, properties: dict[str, Any]) -> None: ...
    @property
    def properties(self) -> dict[str, Any]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class FrameWriter:
    frame_max: int
    def __init__(self, frame_max: int = ...) -> None: ...
    def __len__(self) -> int: ...
    def take(self) -> bytes: ...
    def protocol_header(self) -> None: ...
    def heartbeat(self) -> None: ...
    def method(self, channel: int, name: str, **fields: Any) -> None: ...
    def publish(
        self,
        channel: int,
        exchange: str,
        routing_key: str,
        body: _Buffer,
        properties: dict[str, Any] | PackedProperties | None = None,
        mandatory: bool = False,
        immediate: bool = False,
    ) -> None: ...
    def content(
        self,
        channel: int,
        name: str,
        args: dict[str, Any] | None,
        properties: dict[str, Any] | PackedProperties | None,
        body: _Buffer,
    ) -> None: ...
    def ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> None: ...
    def nack(self, channel: int, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None: ...
    def reject(self, channel: int, delivery_tag: int, requeue: bool = True) -> None: ...
