"""Socket calls of the connection's hot path (``send_nowait``, ``recv_into``).

Two builds with one contract: the compiled ``fastrpc._ext.sockio``
(ext/sockio.pyx) and the pure-Python ``fastrpc.amqp.sockio_py``. This name is
bound to the one fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.amqp.sockio_py import *  # noqa: F403
else:
    _impl.bind(__name__)
