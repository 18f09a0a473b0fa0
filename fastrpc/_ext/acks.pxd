# See fastrpc/_ext/acks.pxi.

include "acks.pxi"
