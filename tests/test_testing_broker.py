"""The throwaway RabbitMQ node used by tests, demo and benchmarks."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastrpc.testing import ExternalBroker, RabbitNode, RabbitNodeError

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def read_connection_start(sock: socket.socket) -> bytes:
    """Send the protocol header and return the whole first frame the broker sends."""
    sock.sendall(PROTOCOL_HEADER)
    data = b""
    for _ in range(64):
        if len(data) >= 7 and len(data) >= 7 + struct.unpack_from(">I", data, 3)[0] + 1:
            break
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def assert_is_connection_start(frame: bytes) -> None:
    frame_type, channel, size = struct.unpack_from(">BHI", frame)
    assert frame_type == 1, frame[:16]
    assert channel == 0
    assert len(frame) >= 7 + size + 1
    assert frame[7 + size] == 0xCE  # frame-end
    class_id, method_id, major, minor = struct.unpack_from(">HHBB", frame, 7)
    assert (class_id, method_id) == (10, 10)  # connection.start
    assert (major, minor) == (0, 9)
    # server-properties table, then the longstr mechanisms list offering PLAIN
    table_len = struct.unpack_from(">I", frame, 13)[0]
    assert b"product" in frame[17 : 17 + table_len]
    mech_len = struct.unpack_from(">I", frame, 17 + table_len)[0]
    mechanisms = frame[21 + table_len : 21 + table_len + mech_len].split()
    assert b"PLAIN" in mechanisms


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) with a LISTEN socket on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


LOOPBACK_HEX = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


def test_node_answers_the_protocol_header(private_node: RabbitNode) -> None:
    assert private_node.running
    assert private_node.url == f"amqp://guest:guest@127.0.0.1:{private_node.port}/"
    with socket.create_connection((private_node.host, private_node.port), timeout=10) as sock:
        sock.settimeout(10)
        assert_is_connection_start(read_connection_start(sock))


def test_broker_fixture_answers(broker: RabbitNode | ExternalBroker) -> None:
    assert broker.url.startswith("amqp")
    with socket.create_connection((broker.host, broker.port), timeout=10) as sock:
        sock.settimeout(10)
        assert_is_connection_start(read_connection_start(sock))


def test_node_is_private_and_loopback_only(private_node: RabbitNode) -> None:
    cookie = private_node.workdir / "home" / ".erlang.cookie"
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o400
    assert cookie.read_text() == private_node.cookie
    assert private_node.epmd_port != 4369
    assert len({private_node.port, private_node.dist_port, private_node.epmd_port}) == 3
    for port in (private_node.port, private_node.dist_port, private_node.epmd_port):
        addresses = listening_addresses(port)
        assert addresses, f"nothing listens on {port}"
        assert addresses <= LOOPBACK_HEX, (port, addresses)
    # The management plugin is off: nothing enabled.
    assert private_node.ctl("eval", "rabbit_plugins:active().").strip() == "[]"


def test_two_nodes_side_by_side(private_node: RabbitNode, rabbit_node_factory: Callable[..., RabbitNode]) -> None:
    other = rabbit_node_factory(config=["heartbeat = 7"])
    assert other.port != private_node.port
    assert other.nodename != private_node.nodename
    assert other.workdir != private_node.workdir
    assert private_node.amqp_answers() and other.amqp_answers()
    # rabbitmqctl reaches the right node each time
    assert private_node.ctl("eval", "node().").strip() == f"'{private_node.nodename}'"
    assert other.ctl("eval", "node().").strip() == f"'{other.nodename}'"
    # extra rabbitmq.conf lines apply to their node only
    assert other.ctl("eval", "application:get_env(rabbit, heartbeat).").strip() == "{ok,7}"
    assert private_node.ctl("eval", "application:get_env(rabbit, heartbeat).").strip() != "{ok,7}"


def test_pause_stops_answering_and_resume_restores(private_node: RabbitNode) -> None:
    beam = private_node.beam_pid()
    private_node.pause()
    try:
        assert private_node.paused
        state = Path(f"/proc/{beam}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "T"  # stopped by SIGSTOP
        with socket.create_connection((private_node.host, private_node.port), timeout=5) as sock:
            # The kernel still completes the TCP handshake, but the VM cannot answer.
            sock.settimeout(1.5)
            sock.sendall(PROTOCOL_HEADER)
            with pytest.raises(socket.timeout):
                sock.recv(64)
    finally:
        private_node.resume()
    assert not private_node.paused
    assert wait_until(private_node.amqp_answers, timeout=30), "node did not answer after resume()"


def test_ctl_manages_users_and_vhosts(private_node: RabbitNode, monkeypatch: pytest.MonkeyPatch) -> None:
    private_node.add_vhost("fastrpc-test")
    commands: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(cmd: list[str], *args: object, **kwargs: object) -> object:
        commands.append(list(cmd))
        return real_run(cmd, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "run", recording_run)
    private_node.add_user("alice", "s3cret-pw", vhosts=["fastrpc-test"], tags=["monitoring"])
    monkeypatch.undo()
    # The password never appears on a command line (readable by anyone in /proc).
    assert any("add_user" in cmd for cmd in commands)
    assert not any("s3cret-pw" in arg for cmd in commands for arg in cmd)
    # ... yet it is the user's password: the broker accepts it.
    from fastrpc.amqp.connection import Connection

    with Connection(f"amqp://alice:s3cret-pw@127.0.0.1:{private_node.port}/fastrpc-test") as conn:
        assert conn.is_open
    assert "fastrpc-test" in private_node.ctl("list_vhosts").split()
    users = private_node.ctl("list_users")
    assert "alice" in users and "monitoring" in users
    perms = private_node.ctl("list_permissions", "-p", "fastrpc-test")
    assert "alice" in perms
    with pytest.raises(RabbitNodeError) as info:
        private_node.add_user("alice", "s3cret-pw")
    # the failure is reported, the password is not
    assert "add_user" in str(info.value)
    assert "s3cret-pw" not in str(info.value)


def test_stop_frees_ports_and_directory(rabbit_node_factory: Callable[..., RabbitNode]) -> None:
    n = rabbit_node_factory()
    workdir, port, epmd_port = n.workdir, n.port, n.epmd_port
    beam = n.beam_pid()
    n.restart()  # same ports, answers again
    assert n.port == port and n.amqp_answers()
    beam = n.beam_pid()
    n.stop()
    assert not n.running
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(beam, 0)
    for p in (port, epmd_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", p), timeout=5).close()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", p))
    with pytest.raises(RabbitNodeError):
        n.start()


def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    with pytest.raises(RabbitNodeError) as info:
        RabbitNode(tmp_path, config=["this is = not a setting"], start_timeout=60)
    message = str(info.value)
    assert "exited" in message or "did not accept" in message
    assert "console.log" in message
    assert "failed_to_parse_configuration_file" in message  # the node's own complaint
    # the failed node cleaned up after itself
    assert list(tmp_path.iterdir()) == []


def test_tls_listener_verifies_with_generated_ca(tls_broker: RabbitNode) -> None:
    assert tls_broker.tls_port is not None and tls_broker.ca_file and tls_broker.client_cert and tls_broker.client_key
    assert tls_broker.tls_url == f"amqps://guest:guest@localhost:{tls_broker.tls_port}/"
    ctx = ssl.create_default_context(cafile=tls_broker.ca_file)
    ctx.load_cert_chain(tls_broker.client_cert, tls_broker.client_key)
    for server_name in ("localhost", "127.0.0.1"):
        with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.settimeout(10)
                assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)
                assert_is_connection_start(read_connection_start(tls))
    # a client that does not trust the generated CA refuses the server
    untrusting = ssl.create_default_context()
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            untrusting.wrap_socket(raw, server_hostname="localhost")
    # the plain listener still speaks plain AMQP
    assert tls_broker.amqp_answers()


def test_external_broker_hides_password() -> None:
    ext = ExternalBroker("amqp://user:hunter2@broker.example:5673/vh")
    assert (ext.host, ext.port) == ("broker.example", 5673)
    assert "hunter2" not in repr(ext)
    with pytest.raises(RuntimeError, match="FASTRPC_TEST_URL"):
        ext.pause()
    assert ExternalBroker("amqps://h/").port == 5671
    with pytest.raises(ValueError):
        ExternalBroker("http://h/")


def run_inner_pytest(directory: Path, source: str, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on one test file in a child process with only this plugin loaded."""
    import fastrpc

    (directory / "test_inner.py").write_text(textwrap.dedent(source))
    root = str(Path(fastrpc.__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k != "FASTRPC_TEST_URL"}
    env.update(PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONPATH=pythonpath, **env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "fastrpc.testing.pytest_plugin", "-p", "no:cacheprovider",
         "test_inner.py"],
        cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240,
    )  # fmt: skip


def test_broker_fixture_uses_fastrpc_test_url(tmp_path: Path) -> None:
    source = """
        def test_inner(broker):
            assert type(broker).__name__ == "ExternalBroker"
            assert broker.url == "amqp://u:p@127.0.0.1:1/"
            assert (broker.host, broker.port) == ("127.0.0.1", 1)
        """
    proc = run_inner_pytest(tmp_path, source, FASTRPC_TEST_URL="amqp://u:p@127.0.0.1:1/")
    assert proc.returncode == 0, proc.stdout
    assert "1 passed" in proc.stdout


def test_shared_broker_left_paused_is_resumed_for_the_next_test(tmp_path: Path) -> None:
    source = """
        def test_pauses_and_fails(broker):
            broker.pause()
            assert not broker.amqp_answers(timeout=1.0)
            raise AssertionError("failing before resume()")

        def test_next_test_has_a_broker(broker):
            assert not broker.paused
            assert broker.amqp_answers(timeout=10.0)
        """
    proc = run_inner_pytest(tmp_path, source)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout
    assert "failing before resume()" in proc.stdout


REAPER_CHILD = """
import os, signal, sys
from fastrpc.testing import reaper
from fastrpc.testing.epmd import Epmd
e = Epmd().start()
print(e._proc.pid, reaper.guardian_pid(), flush=True)
sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)  # no finalizer, no atexit
"""


def test_processes_of_a_killed_owner_are_reaped() -> None:
    """A test run killed outright must not leave epmd / beam.smp behind."""
    child = subprocess.Popen(
        [sys.executable, "-c", REAPER_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        epmd_pid, guardian_pid = (int(x) for x in child.stdout.readline().split())
        os.kill(epmd_pid, 0)  # running while its owner lives
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == -9
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)

    def gone(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(")")[-1].split()[0] == "Z"
        except OSError:
            return True

    assert wait_until(lambda: gone(epmd_pid) and gone(guardian_pid), timeout=30), "epmd survived its owner"
