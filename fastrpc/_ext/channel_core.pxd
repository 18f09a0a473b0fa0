# See fastrpc/_ext/channel_core.pxi.

include "channel_core.pxi"
