"""Type stub for the compiled socket calls (ext/sockio.pyx).

Same contract as ``fastrpc.amqp.sockio_py``; both are behind ``fastrpc.amqp.sockio``.
"""

import socket

def send_nowait(sock: socket.socket, data: bytes | bytearray | memoryview, fd: int = -1) -> int: ...
def recv_into(sock: socket.socket, buf: bytearray | memoryview, fd: int = -1) -> int: ...
