# C layout of fastrpc/amqp/channel_py.py's classes in its compiled build
# (fastrpc._ext.channel). Every attribute is declared in the base class's layout,
# fastrpc/_ext/channel_core.pxi, which is cimported by the name channel_py.py imports
# it by (fastrpc/amqp/channel_core.pxd).

from fastrpc.amqp.channel_core cimport ChannelCore


cdef class Channel(ChannelCore):
    pass
