# See fastrpc/_ext/acks.pxi.

include "../../_ext/acks.pxi"
