"""oslo.messaging message envelope: requests and replies to bytes and back.

Two implementations with the same names and results: the compiled
``fastrpc._ext.envelope`` (ext/envelope.pyx) and the pure-Python
``fastrpc.envelope_py``. This name is bound to the one fastrpc._impl chooses;
import it, not an implementation. Its names are those of
``fastrpc.envelope_py.__all__``: the codec functions (``encode_request``,
``encode_reply``, ``decode_request``, ``decode_reply``, ``new_id``) and what
both share from :mod:`fastrpc.envelope_common` (``EnvelopeError``,
``Request``, ``Reply``, ``DEFAULT_MAX_BODY``, ``JSON``, ``MSGPACK``,
``content_type``, ``encode_bare``, ``decode_notification``, ...).
"""

from typing import TYPE_CHECKING

from fastrpc import _impl

if TYPE_CHECKING:
    from fastrpc.envelope_py import *  # noqa: F403
else:
    _impl.bind(__name__)
