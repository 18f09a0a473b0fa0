"""RPCDispatcher: find the endpoint method a request names and run it.

The code is in fastrpc/dispatcher_py.py, which runs as it is or compiled
unchanged into ``fastrpc._ext.dispatcher``. This name is bound to the one
fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.dispatcher_py import *  # noqa: F403
else:
    _impl.bind(__name__)
