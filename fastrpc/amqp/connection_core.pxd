# See fastrpc/_ext/connection_core.pxi.

include "../_ext/connection_core.pxi"
