# See fastrpc/_ext/connection_core.pxi.

include "connection_core.pxi"
