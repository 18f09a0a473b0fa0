"""RPCDispatcher, access policies, serializers, in isolation."""

import threading

import pytest

import fastrpc
from fastrpc import (
    DefaultRPCAccessPolicy,
    ExplicitRPCAccessPolicy,
    LegacyRPCAccessPolicy,
    NoSuchMethod,
    RPCDispatcher,
    Target,
    UnsupportedVersion,
)
from fastrpc.drivers.base import IncomingMessage
from fastrpc.serializer import JsonPayloadSerializer, NoOpSerializer, RequestContextSerializer


class FakeIncoming(IncomingMessage):
    def __init__(self, message, ctxt=None, msg_id="m1", client_timeout=None):
        super().__init__(ctxt or {}, message, msg_id)
        self.client_timeout = client_timeout
        self.heartbeats = 0
        self.heartbeat_event = threading.Event()

    def acknowledge(self):
        pass

    def requeue(self):
        pass

    def reply(self, reply=None, failure=None):
        pass

    def heartbeat(self):
        self.heartbeats += 1
        if self.heartbeats >= 2:
            self.heartbeat_event.set()


class Ep:
    def public(self, ctxt):
        return "public"

    def _private(self, ctxt):
        return "private"

    @fastrpc.expose
    def exposed(self, ctxt):
        return "exposed"

    def args(self, ctxt, **kwargs):
        return {"ctxt": ctxt, "kwargs": kwargs}


def dispatch(dispatcher, method, **kw):
    return dispatcher.dispatch(FakeIncoming({"method": method, "args": kw.pop("args", {}), **kw}))


def test_default_policy_hides_private():
    d = RPCDispatcher([Ep()], None)
    assert isinstance(d.access_policy, DefaultRPCAccessPolicy)
    assert dispatch(d, "public") == "public"
    with pytest.raises(NoSuchMethod) as info:
        dispatch(d, "_private")
    assert info.value.method == "_private"


def test_legacy_policy_allows_private():
    d = RPCDispatcher([Ep()], None, LegacyRPCAccessPolicy)
    assert dispatch(d, "_private") == "private"


def test_explicit_policy_needs_expose():
    d = RPCDispatcher([Ep()], None, ExplicitRPCAccessPolicy)
    assert dispatch(d, "exposed") == "exposed"
    with pytest.raises(NoSuchMethod):
        dispatch(d, "public")


def test_bad_access_policy_rejected():
    with pytest.raises(TypeError):
        RPCDispatcher([Ep()], None, object)


def test_non_target_target_attribute_rejected():
    class Bad:
        def target(self, ctxt):
            return 1

    with pytest.raises(TypeError, match="reserved"):
        RPCDispatcher([Bad()], None)


def test_non_callable_attribute_is_not_a_method():
    class WithAttr:
        value = 3

    with pytest.raises(NoSuchMethod):
        dispatch(RPCDispatcher([WithAttr()], None), "value")


def test_first_compatible_endpoint_wins_and_version_errors():
    class A:
        target = Target(version="1.1")

        def m(self, ctxt):
            return "a"

    class B:
        target = Target(version="1.4")

        def m(self, ctxt):
            return "b"

        def only_b(self, ctxt):
            return "only b"

    d = RPCDispatcher([A(), B()], None)
    assert dispatch(d, "m", version="1.0") == "a"
    assert dispatch(d, "m", version="1.3") == "b"
    assert dispatch(d, "only_b", version="1.0") == "only b"
    with pytest.raises(UnsupportedVersion) as info:
        dispatch(d, "m", version="1.5")
    assert info.value.version == "1.5"
    assert info.value.method == "m"
    with pytest.raises(UnsupportedVersion):
        dispatch(d, "m", version="garbage")
    with pytest.raises(NoSuchMethod):
        dispatch(d, "missing", version="1.0")


def test_repeated_requests_route_the_same_way():
    # Routes are remembered per (namespace, version, method): the second
    # round of the same requests must give the same answers and errors.
    class A:
        target = Target(namespace="ns", version="1.1")

        def m(self, ctxt):
            return "a"

    class B:
        target = Target(version="2.0")

        def m(self, ctxt):
            return "b"

    d = RPCDispatcher([A(), B()], None)
    for _ in range(2):
        assert dispatch(d, "m", namespace="ns", version="1.0") == "a"
        assert dispatch(d, "m", version="2.0") == "b"
        with pytest.raises(UnsupportedVersion):
            dispatch(d, "m", namespace="ns", version="2.0")
        with pytest.raises(NoSuchMethod):
            dispatch(d, "missing", version="2.0")
        with pytest.raises(TypeError):  # unhashable, as it always was
            dispatch(d, "m", namespace="ns", version=["1", "0"])


def test_method_removed_after_its_route_was_remembered():
    class Ep2:
        def m(self, ctxt):
            return "m"

    ep = Ep2()
    d = RPCDispatcher([ep], None)
    assert dispatch(d, "m") == "m"
    ep.m = None  # no longer callable: the remembered route must not run it
    with pytest.raises(NoSuchMethod):
        dispatch(d, "m")


def test_custom_access_policy_is_asked_on_every_request():
    class Toggle(fastrpc.RPCAccessPolicyBase):
        allowed = True

        def is_allowed(self, endpoint, method):
            return self.allowed

    policy = Toggle()
    d = RPCDispatcher([Ep()], None, policy)
    assert dispatch(d, "public") == "public"
    policy.allowed = False
    with pytest.raises(NoSuchMethod):
        dispatch(d, "public")


def test_malformed_message_is_no_such_method():
    d = RPCDispatcher([Ep()], None)
    with pytest.raises(NoSuchMethod):
        d.dispatch(FakeIncoming({"method": 5, "args": {}}))
    with pytest.raises(NoSuchMethod):
        d.dispatch(FakeIncoming({"method": "args", "args": ["x"]}))


def test_endpoints_list_not_mutated_by_ping():
    endpoints = [Ep()]
    d = RPCDispatcher(endpoints, None, rpc_ping_enabled=True)
    assert len(endpoints) == 1
    assert dispatch(d, "oslo_rpc_server_ping") == "pong"


def test_serializer_hooks_are_applied():
    calls = []

    class Recording(NoOpSerializer):
        def deserialize_context(self, ctxt):
            calls.append(("dctx", dict(ctxt)))
            return {"rebuilt": True, **ctxt}

        def deserialize_entity(self, ctxt, entity):
            calls.append(("dent", entity))
            return entity * 2

        def serialize_entity(self, ctxt, entity):
            calls.append(("sent", ctxt["rebuilt"]))
            return {"wrapped": entity}

    d = RPCDispatcher([Ep()], Recording())
    result = d.dispatch(FakeIncoming({"method": "args", "args": {"x": 21}}, ctxt={"u": 1}))
    assert result == {"wrapped": {"ctxt": {"rebuilt": True, "u": 1}, "kwargs": {"x": 42}}}
    assert calls == [("dctx", {"u": 1}), ("dent", 21), ("sent", True)]


def test_call_monitor_heartbeats_while_running():
    incoming = FakeIncoming({"method": "wait_beats", "args": {}}, client_timeout=0.1)

    class Slow:
        def wait_beats(self, ctxt):
            return incoming.heartbeat_event.wait(10)

    assert RPCDispatcher([Slow()], None).dispatch(incoming) is True
    assert incoming.heartbeats >= 2


def test_no_heartbeats_for_casts_or_without_timeout():
    for incoming in (FakeIncoming({"method": "public"}, msg_id=None, client_timeout=0.1),
                     FakeIncoming({"method": "public"}, client_timeout=None),
                     FakeIncoming({"method": "public"}, client_timeout="nonsense")):
        assert RPCDispatcher([Ep()], None).dispatch(incoming) == "public"
        assert incoming.heartbeats == 0


def test_json_payload_serializer_makes_primitives():
    import datetime

    class Obj:
        def __init__(self):
            self.a = 1
            self.when = datetime.datetime(2024, 1, 2, 3, 4, 5)

    s = JsonPayloadSerializer()
    assert s.serialize_entity({}, Obj()) == {"a": 1, "when": "2024-01-02T03:04:05.000000"}
    assert s.serialize_entity({}, (1, {2})) == [1, [2]]
    assert s.deserialize_entity({}, {"a": 1}) == {"a": 1}


def test_request_context_serializer():
    class Ctx:
        def __init__(self, user):
            self.user = user

        def to_dict(self):
            return {"user": self.user}

        @classmethod
        def from_dict(cls, d):
            return cls(d["user"])

    s = RequestContextSerializer(JsonPayloadSerializer(), Ctx.from_dict)
    assert s.serialize_context(Ctx("u")) == {"user": "u"}
    assert s.deserialize_context({"user": "v"}).user == "v"
    assert s.serialize_entity(None, (1, 2)) == [1, 2]
    assert RequestContextSerializer().deserialize_context({"a": 1}) == {"a": 1}
