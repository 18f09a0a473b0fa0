"""AMQP channels: synchronous methods, publishing with confirms, consumers.

The code is in fastrpc/amqp/channel_py.py, which runs as it is or compiled
unchanged into ``fastrpc._ext.channel``. This name is bound to the one
fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.amqp.channel_py import *  # noqa: F403
else:
    _impl.bind(__name__)
