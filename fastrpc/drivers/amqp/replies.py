"""The caller's side of calls: the reply queue and the calls waiting on it.

The code is in fastrpc/drivers/amqp/replies_py.py, which runs as it is or
compiled unchanged into ``fastrpc._ext.replies``. This name is bound to the
one fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.drivers.amqp.replies_py import *  # noqa: F403
else:
    _impl.bind(__name__)
