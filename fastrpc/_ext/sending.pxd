# See fastrpc/_ext/sending.pxi.

include "sending.pxi"
