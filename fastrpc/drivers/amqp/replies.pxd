# See fastrpc/_ext/replies.pxi.

include "../../_ext/replies.pxi"
