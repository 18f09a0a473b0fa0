# See fastrpc/_ext/replies.pxi.

include "replies.pxi"
