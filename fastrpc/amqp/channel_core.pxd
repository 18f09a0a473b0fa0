# See fastrpc/_ext/channel_core.pxi.

include "../_ext/channel_core.pxi"
