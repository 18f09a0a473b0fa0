"""Remote exception serialization: oslo's format, allow-list, hostile payloads."""

import json
import sys

import pytest

from fastrpc import RemoteError
from fastrpc.exceptions import MessagingTimeout
from fastrpc.failures import deserialize_remote_exception, serialize_remote_exception

THIS = __name__


class KwargsError(Exception):
    """An exception carrying oslo's ``kwargs`` convention."""

    def __init__(self, message=None, **kwargs):
        super().__init__(message)
        self.kwargs = kwargs


class ExplodingError(Exception):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("constructor refuses")


class NotAnException:
    def __init__(self, *args, **kwargs):
        raise AssertionError("must never be instantiated")


def _raised(exc):
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_serialized_format_is_oslos():
    exc = _raised(KwargsError("it broke", host="h1"))
    data = json.loads(serialize_remote_exception(exc))
    assert set(data) == {"class", "module", "message", "tb", "args", "kwargs"}
    assert data["class"] == "KwargsError"
    assert data["module"] == THIS
    assert data["message"] == "it broke"
    assert data["args"] == ["it broke"]
    assert data["kwargs"] == {"host": "h1"}
    assert isinstance(data["tb"], list)
    assert any("Traceback" in line for line in data["tb"])
    assert "KwargsError: it broke" in data["tb"][-1]


def test_serialize_accepts_exc_info_tuple():
    try:
        raise ValueError("from exc_info")
    except ValueError:
        data = json.loads(serialize_remote_exception(sys.exc_info()))
    assert data["class"] == "ValueError"
    assert data["module"] == "builtins"


def test_unencodable_args_do_not_break_serialization():
    exc = _raised(KwargsError(object(), when={1, 2}))
    data = json.loads(serialize_remote_exception(exc))
    assert isinstance(data["args"][0], str)
    assert sorted(data["kwargs"]["when"]) == [1, 2]


def test_builtin_exception_rebuilt_with_remote_traceback_in_message():
    payload = serialize_remote_exception(_raised(KeyError("missing")))
    exc = deserialize_remote_exception(payload, [])
    assert type(exc) is KeyError
    assert "missing" in str(exc)
    assert "Traceback" in str(exc)


def test_allowed_module_rebuilds_with_remote_suffix():
    payload = serialize_remote_exception(_raised(KwargsError("boom", host="h2")))
    exc = deserialize_remote_exception(payload, [THIS])
    assert isinstance(exc, KwargsError)
    assert type(exc).__name__ == "KwargsError_Remote"
    assert type(exc).__module__ == THIS + "_Remote"
    assert exc.kwargs == {"host": "h2"}
    assert str(exc).startswith("boom\n")
    assert "Traceback" in str(exc)


def test_rebuilt_remote_exception_reserializes_under_original_name():
    payload = serialize_remote_exception(_raised(KwargsError("again")))
    rebuilt = deserialize_remote_exception(payload, [THIS])
    data = json.loads(serialize_remote_exception(_raised(rebuilt)))
    assert data["class"] == "KwargsError"
    assert data["module"] == THIS


def test_not_allowed_module_gives_remote_error():
    payload = serialize_remote_exception(_raised(KwargsError("nope")))
    exc = deserialize_remote_exception(payload, ["some.other.module"])
    assert isinstance(exc, RemoteError)
    assert exc.exc_type == "KwargsError"
    assert exc.value == "nope"
    assert "Remote error: KwargsError nope" in str(exc)


def test_python2_exceptions_module_maps_to_builtins():
    payload = json.dumps({"class": "ValueError", "module": "exceptions", "message": "v",
                          "tb": [], "args": ["v"], "kwargs": {}})
    assert type(deserialize_remote_exception(payload, [])) is ValueError


def _payload(**fields):
    base = {"class": "ValueError", "module": "builtins", "message": "m", "tb": ["t"],
            "args": ["m"], "kwargs": {}}
    base.update(fields)
    return json.dumps(base)


def test_never_imports_a_module_not_allow_listed():
    name = "fastrpc_test_module_that_must_not_be_imported"
    assert name not in sys.modules
    exc = deserialize_remote_exception(_payload(module=name, **{"class": "Anything"}), [])
    assert isinstance(exc, RemoteError)
    assert name not in sys.modules
    # Also a real stdlib module that would be dangerous to touch.
    exc = deserialize_remote_exception(_payload(module="os", **{"class": "system"}), [])
    assert isinstance(exc, RemoteError)


@pytest.mark.parametrize("payload", [
    "not json at all",
    b"\xff\xfe binary",
    "[1, 2, 3]",
    "null",
    _payload(**{"class": 42}),
    _payload(**{"class": "os.system"}),
    _payload(module=["builtins"]),
    _payload(args="not a list"),
    _payload(args={"a": 1}),
    _payload(kwargs=["x"]),
    _payload(kwargs={"unexpected_kw": 1}),
    _payload(message=12),
    _payload(**{"class": "SystemExit"}),
    _payload(**{"class": "KeyboardInterrupt"}),
    _payload(**{"class": "print"}),
    _payload(**{"class": "object"}),
    _payload(**{"class": "NoSuchBuiltinError"}),
])
def test_hostile_or_malformed_payloads_become_remote_error(payload):
    exc = deserialize_remote_exception(payload, [THIS])
    assert isinstance(exc, RemoteError)
    assert str(exc).startswith("Remote error:")


def test_non_exception_class_in_allowed_module_is_not_instantiated():
    exc = deserialize_remote_exception(_payload(module=THIS, **{"class": "NotAnException"}), [THIS])
    assert isinstance(exc, RemoteError)
    assert exc.exc_type == "NotAnException"


def test_raising_constructor_gives_remote_error():
    exc = deserialize_remote_exception(_payload(module=THIS, **{"class": "ExplodingError"}), [THIS])
    assert isinstance(exc, RemoteError)
    assert exc.exc_type == "ExplodingError"
    assert exc.value == "m"


def test_wrong_trace_type_is_tolerated():
    exc = deserialize_remote_exception(_payload(tb="not a list"), [])
    assert type(exc) is ValueError
    exc = deserialize_remote_exception(_payload(tb=[1, "line"]), [])
    assert "line" in str(exc)


def test_fastrpc_exceptions_rebuild_when_allowed():
    payload = serialize_remote_exception(_raised(MessagingTimeout("slow")))
    exc = deserialize_remote_exception(payload, ["fastrpc.exceptions"])
    assert isinstance(exc, MessagingTimeout)
    assert type(exc).__name__ == "MessagingTimeout_Remote"


def test_compatible_with_oslo_messaging_format():
    from oslo_messaging._drivers import common as oslo_common

    # oslo -> fastrpc
    try:
        raise KwargsError("from oslo", node="n1")
    except KwargsError:
        oslo_payload = oslo_common.serialize_remote_exception(sys.exc_info())
    ours = deserialize_remote_exception(oslo_payload, [THIS])
    assert isinstance(ours, KwargsError)
    assert ours.kwargs == {"node": "n1"}
    # fastrpc -> oslo
    payload = serialize_remote_exception(_raised(KwargsError("from fastrpc", node="n2")))
    theirs = oslo_common.deserialize_remote_exception(payload, [THIS])
    assert isinstance(theirs, KwargsError)
    assert type(theirs).__name__ == "KwargsError_Remote"
    assert theirs.kwargs == {"node": "n2"}
