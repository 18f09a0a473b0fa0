# See fastrpc/_ext/codec.pxi.

include "../_ext/codec.pxi"
