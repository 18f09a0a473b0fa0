"""msgpack bodies across builds, through a real broker.

A server on the pure-Python build (msgpack-python reads and writes its
bodies) answers a client on this process's build (the compiled codec's own
msgpack reader and writer when built): every request crosses from one
codec to the other and every reply back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fastrpc
from fastrpc import _impl

pytestmark = pytest.mark.twins

WAIT = 20.0

SERVER = textwrap.dedent("""
    import sys
    import fastrpc
    from fastrpc import _impl

    class Echo:
        def echo(self, ctxt, value):
            return {"value": value, "ctxt": ctxt, "compiled": not _impl.NO_EXTENSIONS}

    transport = fastrpc.get_rpc_transport(fastrpc.Options(serialization="msgpack"), url=sys.argv[1])
    server = fastrpc.get_rpc_server(transport, fastrpc.Target(topic=sys.argv[2], server="pure"), [Echo()],
                                    executor="threading")
    server.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes it
    server.stop()
    server.wait()
    transport.cleanup()
""")

VALUES = [
    None, True, False, 0, 127, 128, 255, 256, 65535, 65536, 2**32, 2**63 - 1, 2**64 - 1,
    -1, -32, -33, -128, -129, -32769, -(2**31) - 1, -(2**63), 1.5, -0.0, 1e300,
    "", "x" * 31, "x" * 32, "y" * 300, "é€😀", b"\x00\xff" * 200,
    [], [1, [2, [3, {"k": [None]}]]], {"a": {"b": {"c": []}}}, {"n" * 20: list(range(40))},
]


@pytest.fixture
def pure_server(broker, request):
    topic = "mpwire_" + request.node.name[:40].replace("[", "_").replace("]", "")
    env = dict(os.environ, FASTRPC_NO_EXTENSIONS="1")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, broker.url, topic], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield topic
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)


def test_requests_and_replies_cross_between_the_codecs(broker, pure_server):
    transport = fastrpc.get_rpc_transport(fastrpc.Options(serialization="msgpack"), url=broker.url)
    try:
        client = fastrpc.get_rpc_client(transport, fastrpc.Target(topic=pure_server), timeout=WAIT)
        ctxt = {"user": "u1", "roles": ["admin", "é"], "request_id": "req-1"}
        for value in VALUES:
            answer = client.call(ctxt, "echo", value=value)
            assert answer["compiled"] is False  # the server ran the pure build
            assert answer["value"] == value and type(answer["value"]) is type(value), value
            assert answer["ctxt"]["user"] == "u1" and answer["ctxt"]["roles"] == ["admin", "é"]
        # this side's codec is the one under test when the extension is built
        assert fastrpc.envelope.__name__ == ("fastrpc.envelope_py" if _impl.NO_EXTENSIONS
                                             else "fastrpc._ext.envelope")
    finally:
        transport.cleanup()
