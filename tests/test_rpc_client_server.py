"""Client and server end to end over the memory:// driver."""

import threading
import uuid

import pytest

import fastrpc
from fastrpc import (
    InvalidTarget,
    MessagingTimeout,
    NoSuchMethod,
    RemoteError,
    RPCVersionCapError,
    Target,
    UnsupportedVersion,
)

WAIT = 10.0  # bound of every wait in this file


class AppError(Exception):
    pass


class Endpoint:
    def __init__(self):
        self.casts = []
        self.cast_event = threading.Event()
        self.release = threading.Event()
        self.started = threading.Event()

    def add(self, ctxt, a, b):
        return a + b

    def echo_ctxt(self, ctxt):
        return ctxt

    def fail(self, ctxt, message):
        raise AppError(message)

    def fail_builtin(self, ctxt):
        raise KeyError("nokey")

    def record(self, ctxt, value):
        self.casts.append(value)
        self.cast_event.set()

    def slow(self, ctxt):
        self.started.set()
        assert self.release.wait(WAIT)
        return "done"

    def _private(self, ctxt):
        return "secret"


@pytest.fixture
def transport():
    t = fastrpc.get_rpc_transport(url=f"memory:///{uuid.uuid4().hex}", allowed_remote_exmods=[__name__])
    yield t
    t.cleanup()


@pytest.fixture
def serve(transport):
    servers = []

    def start(endpoints, server="s1", topic="topic", executor="threading", **kwargs):
        srv = fastrpc.get_rpc_server(transport, Target(topic=topic, server=server), endpoints,
                                     executor=executor, **kwargs)
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()
    for srv in servers:
        srv.wait()


def client(transport, **kwargs):
    kwargs.setdefault("timeout", WAIT)
    return fastrpc.get_rpc_client(transport, Target(topic="topic"), **kwargs)


@pytest.mark.parametrize("executor", ["blocking", "threading"])
def test_call_returns_result(transport, serve, executor):
    serve([Endpoint()], executor=executor)
    assert client(transport).call({}, "add", a=2, b=3) == 5


def test_context_reaches_endpoint(transport, serve):
    serve([Endpoint()])
    assert client(transport).call({"user": "u1", "roles": ["a"]}, "echo_ctxt") == {"user": "u1", "roles": ["a"]}


def test_cast_is_delivered(transport, serve):
    ep = Endpoint()
    serve([ep])
    assert client(transport).cast({}, "record", value=7) is None
    assert ep.cast_event.wait(WAIT)
    assert ep.casts == [7]


class TaggingSerializer(fastrpc.NoOpSerializer):
    """Marks what it serializes, so the server shows it ran."""

    def serialize_entity(self, ctxt, entity):
        return ["tagged", entity]

    def serialize_context(self, ctxt):
        return dict(ctxt, tagged=True)


def test_a_client_serializer_converts_casts_and_calls(transport, serve):
    class Recorder(Endpoint):
        def record(self, ctxt, value):
            self.casts.append((ctxt.get("tagged"), value))
            self.cast_event.set()

    ep = Recorder()
    serve([ep])
    c = client(transport, serializer=TaggingSerializer())
    c.cast({"user": "u"}, "record", value=7)
    assert ep.cast_event.wait(WAIT)
    assert ep.casts == [(True, ["tagged", 7])]
    assert c.call({"user": "u"}, "echo_ctxt") == {"user": "u", "tagged": True}


def test_allowed_remote_exception_is_rebuilt(transport, serve):
    serve([Endpoint()])
    with pytest.raises(AppError) as info:
        client(transport).call({}, "fail", message="kaput")
    assert type(info.value).__name__ == "AppError_Remote"
    assert str(info.value).startswith("kaput")


def test_builtin_remote_exception_is_rebuilt(transport, serve):
    serve([Endpoint()])
    with pytest.raises(KeyError) as info:
        client(transport).call({}, "fail_builtin")
    assert "nokey" in str(info.value)


def test_not_allowed_remote_exception_is_remote_error(serve):
    other = fastrpc.get_rpc_transport(url=f"memory:///{uuid.uuid4().hex}")
    try:
        srv = fastrpc.get_rpc_server(other, Target(topic="topic", server="s"), [Endpoint()])
        srv.start()
        try:
            with pytest.raises(RemoteError) as info:
                client(other).call({}, "fail", message="kaput")
            assert info.value.exc_type == "AppError"
            assert info.value.value == "kaput"
        finally:
            srv.stop()
            srv.wait()
    finally:
        other.cleanup()


def test_missing_and_private_methods_raise_no_such_method(transport, serve):
    serve([Endpoint()])
    c = fastrpc.get_rpc_client(transport, Target(topic="topic"), timeout=WAIT)
    # NoSuchMethod lives in fastrpc.exceptions, not allow-listed here.
    with pytest.raises(RemoteError) as info:
        c.call({}, "nope")
    assert info.value.exc_type == "NoSuchMethod"
    with pytest.raises(RemoteError) as info:
        c.call({}, "_private")
    assert info.value.exc_type == "NoSuchMethod"


def test_fastrpc_exceptions_rebuilt_when_allow_listed(serve):
    t = fastrpc.get_rpc_transport(url=f"memory:///{uuid.uuid4().hex}",
                                  allowed_remote_exmods=["fastrpc.exceptions"])
    try:
        srv = fastrpc.get_rpc_server(t, Target(topic="topic", server="s"), [Endpoint()])
        srv.start()
        try:
            with pytest.raises(NoSuchMethod):
                client(t).call({}, "nope")
            with pytest.raises(UnsupportedVersion):
                client(t).prepare(version="2.0").call({}, "add", a=1, b=1)
        finally:
            srv.stop()
            srv.wait()
    finally:
        t.cleanup()


def test_call_times_out_without_server(transport):
    c = fastrpc.get_rpc_client(transport, Target(topic="nobody"), timeout=0.2)
    with pytest.raises(MessagingTimeout):
        c.call({}, "add", a=1, b=2)


def test_call_times_out_when_server_is_slow(transport, serve):
    ep = Endpoint()
    serve([ep])
    try:
        with pytest.raises(MessagingTimeout):
            client(transport, timeout=0.3).call({}, "slow")
        assert ep.started.is_set()
    finally:
        ep.release.set()


def test_default_timeout_comes_from_rpc_response_timeout():
    t = fastrpc.get_rpc_transport(fastrpc.Options(rpc_response_timeout=0.2), url="memory:///default-timeout")
    try:
        c = fastrpc.get_rpc_client(t, Target(topic="nobody"))
        assert c.timeout is None
        with pytest.raises(MessagingTimeout):
            c.call({}, "x")
    finally:
        t.cleanup()


def test_call_monitor_heartbeats_keep_a_long_call_alive(transport, serve):
    ep = Endpoint()
    serve([ep])
    # 1 s: heartbeats every 0.5 s may come late on a loaded machine.
    c = client(transport, call_monitor_timeout=1.0)
    result = {}

    def run():
        result["value"] = c.call({}, "slow")

    caller = threading.Thread(target=run)
    caller.start()
    assert ep.started.wait(WAIT)
    # Three times the monitor timeout: only heartbeats keep the call alive.
    assert not ep.release.wait(3.0)
    ep.release.set()
    caller.join(WAIT)
    assert not caller.is_alive()
    assert result == {"value": "done"}


def test_call_monitor_timeout_fires_when_server_is_silent(transport):
    # A listener that takes the request but never answers nor heartbeats.
    listener = transport._listen(Target(topic="topic", server="mute"))
    try:
        c = client(transport, call_monitor_timeout=0.2)
        with pytest.raises(MessagingTimeout):
            c.call({}, "anything")
        (incoming,) = listener.poll(timeout=WAIT)
        assert incoming.client_timeout == 0.2
        assert incoming.msg_id
    finally:
        listener.cleanup()


def test_fanout_cast_reaches_every_server(transport, serve):
    eps = [Endpoint() for _ in range(3)]
    for i, ep in enumerate(eps):
        serve([ep], server=f"s{i}")
    client(transport).prepare(fanout=True).cast({}, "record", value="all")
    for ep in eps:
        assert ep.cast_event.wait(WAIT)
        assert ep.casts == ["all"]


def test_fanout_call_is_invalid(transport):
    with pytest.raises(InvalidTarget):
        client(transport).prepare(fanout=True).call({}, "add", a=1, b=2)


def test_missing_topic_is_invalid(transport):
    c = fastrpc.get_rpc_client(transport, Target())
    with pytest.raises(InvalidTarget):
        c.call({}, "x")
    with pytest.raises(InvalidTarget):
        c.cast({}, "x")


def test_server_target_needs_topic_and_server(transport):
    srv = fastrpc.get_rpc_server(transport, Target(topic="t"), [Endpoint()])
    with pytest.raises(InvalidTarget):
        srv.start()


def test_server_targeted_calls_and_casts(transport, serve):
    eps = {name: Endpoint() for name in ("a", "b")}
    for name, ep in eps.items():
        serve([ep], server=name)
    c = client(transport)
    for i in range(10):
        c.prepare(server="b").cast({}, "record", value=i)
    # A call to the same server after the casts completes after them (blocking order per queue).
    assert c.prepare(server="b").call({}, "add", a=1, b=1) == 2
    assert eps["b"].cast_event.wait(WAIT)
    assert eps["a"].casts == []


def test_version_negotiation(transport, serve):
    class V1:
        target = Target(version="1.3")

        def which(self, ctxt):
            return "v1"

    class V2:
        target = Target(version="2.1")

        def which(self, ctxt):
            return "v2"

    serve([V1(), V2()])
    c = fastrpc.get_rpc_client(transport, Target(topic="topic"), timeout=WAIT)
    assert c.prepare(version="1.0").call({}, "which") == "v1"
    assert c.prepare(version="1.3").call({}, "which") == "v1"
    assert c.prepare(version="2.0").call({}, "which") == "v2"
    with pytest.raises(RemoteError) as info:
        c.prepare(version="1.4").call({}, "which")
    assert info.value.exc_type == "UnsupportedVersion"
    with pytest.raises(RemoteError) as info:
        c.prepare(version="3.0").call({}, "which")
    assert info.value.exc_type == "UnsupportedVersion"


def test_namespaces(transport, serve):
    class Base:
        def which(self, ctxt):
            return "base"

    class Admin:
        target = Target(namespace="admin", legacy_namespaces=["old_admin"])

        def which(self, ctxt):
            return "admin"

    serve([Base(), Admin()])
    c = client(transport)
    assert c.call({}, "which") == "base"
    assert c.prepare(namespace="admin").call({}, "which") == "admin"
    assert c.prepare(namespace="old_admin").call({}, "which") == "admin"
    with pytest.raises(RemoteError) as info:
        c.prepare(namespace="other").call({}, "which")
    assert info.value.exc_type == "UnsupportedVersion"


def test_version_cap(transport, serve):
    serve([Endpoint()])
    c = client(transport, version_cap="1.5")
    assert c.can_send_version("1.5")
    assert not c.can_send_version("1.6")
    assert not c.can_send_version("2.0")
    assert c.prepare(version="1.2").can_send_version()
    assert c.prepare(version="1.0").call({}, "add", a=1, b=1) == 2
    with pytest.raises(RPCVersionCapError):
        c.prepare(version="1.6").call({}, "add", a=1, b=1)
    with pytest.raises(RPCVersionCapError):
        c.prepare(version="2.0").cast({}, "record", value=1)
    # As in oslo: with a cap set, an unversioned target is not sendable.
    assert not c.can_send_version()


def test_prepare_keeps_and_overrides_options(transport):
    c = fastrpc.get_rpc_client(transport, Target(topic="t", exchange="x"), timeout=3, version_cap="2.0",
                               retry=1, call_monitor_timeout=4)
    p = c.prepare(server="s", version="1.1", timeout=9)
    assert p.target == Target(topic="t", exchange="x", server="s", version="1.1")
    assert (p.timeout, p.version_cap, p.retry, p.call_monitor_timeout) == (9, "2.0", 1, 4)
    assert c.target == Target(topic="t", exchange="x")
    with pytest.raises(fastrpc.MessagingException):
        c.prepare(version="bad")


def test_exchanges_separate_servers(transport, serve):
    ep_x = Endpoint()
    srv = fastrpc.get_rpc_server(transport, Target(topic="topic", server="sx", exchange="ex"), [ep_x])
    srv.start()
    try:
        c = fastrpc.get_rpc_client(transport, Target(topic="topic", exchange="ex"), timeout=WAIT)
        assert c.call({}, "add", a=1, b=2) == 3
        other = fastrpc.get_rpc_client(transport, Target(topic="topic", exchange="unrelated"), timeout=0.2)
        with pytest.raises(MessagingTimeout):
            other.call({}, "add", a=1, b=2)
    finally:
        srv.stop()
        srv.wait()


def test_separate_transports_on_same_url_talk(serve, transport):
    serve([Endpoint()])
    url = transport._driver.url
    other = fastrpc.get_rpc_transport(url=url)
    try:
        assert client(other).call({}, "add", a=20, b=22) == 42
    finally:
        other.cleanup()


def test_unencodable_argument_fails_at_caller(transport, serve):
    serve([Endpoint()])
    with pytest.raises(TypeError):
        client(transport).call({}, "add", a=object(), b=1)


def test_msgpack_serialization_round_trip():
    t = fastrpc.get_rpc_transport(fastrpc.Options(serialization="msgpack"), url="memory:///msgpack")
    try:
        srv = fastrpc.get_rpc_server(t, Target(topic="topic", server="s"), [Endpoint()])
        srv.start()
        try:
            assert client(t).call({"k": b"raw"}, "echo_ctxt") == {"k": b"raw"}
        finally:
            srv.stop()
            srv.wait()
    finally:
        t.cleanup()


def test_rpc_ping_endpoint():
    t = fastrpc.get_rpc_transport(fastrpc.Options(rpc_ping_enabled=True), url="memory:///ping")
    try:
        srv = fastrpc.get_rpc_server(t, Target(topic="topic", server="s"), [Endpoint()])
        srv.start()
        try:
            assert client(t).call({}, "oslo_rpc_server_ping") == "pong"
        finally:
            srv.stop()
            srv.wait()
    finally:
        t.cleanup()


def test_ping_disabled_by_default(transport, serve):
    serve([Endpoint()])
    with pytest.raises(RemoteError) as info:
        client(transport).call({}, "oslo_rpc_server_ping")
    assert info.value.exc_type == "NoSuchMethod"


def test_expected_exception_reaches_caller_unwrapped_and_is_not_logged_as_error(transport, serve, caplog):
    class Ep:
        @fastrpc.expected_exceptions(AppError)
        def expected(self, ctxt):
            raise AppError("expected one")

        @fastrpc.expected_exceptions(AppError)
        def unexpected(self, ctxt):
            raise ValueError("unexpected one")

    serve([Ep()])
    c = client(transport)
    with caplog.at_level("DEBUG", logger="fastrpc.server"):
        with pytest.raises(AppError) as info:
            c.call({}, "expected")
        assert str(info.value).startswith("expected one")
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
        with pytest.raises(ValueError):
            c.call({}, "unexpected")
        assert [r for r in caplog.records if r.levelname == "ERROR"]
