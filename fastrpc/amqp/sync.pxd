# See fastrpc/_ext/sync.pxi.

cimport cython

include "../_ext/sync.pxi"
