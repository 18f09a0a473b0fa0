"""Handing a listener's deliveries from the thread that reads its connection
to the threads that poll it (``Handoff``, ``EMPTY``, ``STOP``).

The code is in fastrpc/drivers/amqp/handoff_py.py, which runs as it is or
compiled unchanged into ``fastrpc._ext.handoff``. This name is bound to the
one fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.drivers.amqp.handoff_py import *  # noqa: F403
else:
    _impl.bind(__name__)
