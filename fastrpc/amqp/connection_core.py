"""A connection's state and read side: the base class of Connection.

The code is in fastrpc/amqp/connection_core_py.py, which runs as it is or
compiled unchanged into ``fastrpc._ext.connection_core``. This name is bound
to the one fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.amqp.connection_core_py import *  # noqa: F403
else:
    _impl.bind(__name__)
