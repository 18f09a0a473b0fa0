"""Locks and mailboxes of the per-message paths (``Lock``, ``Mailbox``).

Two builds with one contract: the compiled ``fastrpc._ext.sync``
(ext/sync.pyx) and the pure-Python ``fastrpc.amqp.sync_py``
(``threading.Lock`` and ``queue.SimpleQueue``). This name is bound to the one
fastrpc._impl chooses; import it, not an implementation.
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.amqp.sync_py import *  # noqa: F403
else:
    _impl.bind(__name__)
