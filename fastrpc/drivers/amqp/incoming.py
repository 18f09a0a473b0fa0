"""The per-message path of listeners: reads gathered, a request taken from
its delivery (decoded, checked for duplicates, acked), a request's fields
and answers.

The code is in fastrpc/drivers/amqp/incoming_py.py, which runs as it is or
compiled unchanged into ``fastrpc._ext.incoming``. This name is bound to the
one fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.drivers.amqp.incoming_py import *  # noqa: F403
else:
    _impl.bind(__name__)
