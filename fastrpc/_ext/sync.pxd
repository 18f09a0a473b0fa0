# See fastrpc/_ext/sync.pxi.

cimport cython

include "sync.pxi"
