# See fastrpc/_ext/handoff.pxi.

include "../../_ext/handoff.pxi"
