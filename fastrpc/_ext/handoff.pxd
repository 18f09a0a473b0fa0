# See fastrpc/_ext/handoff.pxi.

include "handoff.pxi"
