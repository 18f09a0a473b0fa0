"""A driver's sends: route, envelope, publish, and a call's wait for its reply.

The code is in fastrpc/drivers/amqp/calls_py.py, which runs as it is or
compiled unchanged into ``fastrpc._ext.calls``. This name is bound to the
one fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.drivers.amqp.calls_py import *  # noqa: F403
else:
    _impl.bind(__name__)
