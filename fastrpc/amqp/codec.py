"""The AMQP 0-9-1 frame codec: ``FrameReader`` (bytes in, events out) and
``FrameWriter`` (requests in, bytes out). No I/O.

Two implementations with one contract: the compiled ``fastrpc._ext.codec``
(ext/codec.pyx) and the pure-Python ``fastrpc.amqp.codec_py``. This name is
bound to the one fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.amqp.codec_py import *  # noqa: F403
else:
    _impl.bind(__name__)
