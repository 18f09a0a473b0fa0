# See fastrpc/_ext/codec.pxi.

include "codec.pxi"
