# See fastrpc/_ext/sending.pxi.

include "../../_ext/sending.pxi"
