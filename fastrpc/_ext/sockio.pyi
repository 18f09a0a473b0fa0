"""Type stub for the compiled socket write (ext/sockio.pyx).

Same contract as ``fastrpc.amqp.sockio_py``; both are behind ``fastrpc.amqp.sockio``.
"""

import socket

def send_nowait(sock: socket.socket, data: bytes | bytearray | memoryview) -> int: ...
