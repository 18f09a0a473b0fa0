"""One AMQP 0-9-1 connection: handshake, reader thread, heartbeat timer, sends.

The code is in fastrpc/amqp/connection_py.py, which runs as it is or compiled
unchanged into ``fastrpc._ext.connection``. This name is bound to the one
fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.amqp.connection_py import *  # noqa: F403
else:
    _impl.bind(__name__)
