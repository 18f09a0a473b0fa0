"""RPC client: call (wait for the result) and cast (fire and forget).

The code is in fastrpc/client_py.py, which runs as it is or compiled
unchanged into ``fastrpc._ext.client``. This name is bound to the one
fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.client_py import *  # noqa: F403
else:
    _impl.bind(__name__)
