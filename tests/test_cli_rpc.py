"""``fastrpc call`` and ``fastrpc cast`` against a live server on the private broker."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from fastrpc import Target, get_rpc_server, get_rpc_transport
from fastrpc.cli import main

WAIT = 10.0


class Calc:
    def __init__(self) -> None:
        self.noted: list[Any] = []
        self.noted_event = threading.Event()

    def add(self, ctxt: dict, a: int, b: int) -> int:
        return a + b

    def describe(self, ctxt: dict, name: str, tags: list[str]) -> dict[str, Any]:
        return {"name": name, "tags": tags}

    def fail(self, ctxt: dict) -> None:
        raise ValueError("refused: the answer is no")

    def note(self, ctxt: dict, value: Any) -> None:
        self.noted.append(value)
        self.noted_event.set()


@pytest.fixture
def calc(broker: Any, request: pytest.FixtureRequest) -> Any:
    topic = f"cli_{request.node.name}"[:100]
    endpoint = Calc()
    transport = get_rpc_transport(url=broker.url)
    server = get_rpc_server(transport, Target(topic=topic, server="s1"), [endpoint], executor="threading")
    server.start()
    yield topic, endpoint
    server.stop()
    server.wait()
    transport.cleanup()


def test_call_prints_the_result_as_json(broker: Any, calc: Any, capsys: pytest.CaptureFixture[str]) -> None:
    topic, _ = calc
    assert main(["call", broker.url, topic, "add", "--arg", "a=2", "--arg", "b=40"]) == 0
    assert json.loads(capsys.readouterr().out) == 42
    # Values that are not JSON are strings; JSON ones keep their type.
    assert main(["call", broker.url, topic, "describe", "--arg", "name=web 1", "--arg", 'tags=["a","b"]',
                 "--server", "s1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "web 1", "tags": ["a", "b"]}


def test_remote_error_timeout_and_bad_arguments_exit_non_zero(broker: Any, calc: Any,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    topic, _ = calc
    assert main(["call", broker.url, topic, "fail"]) == 1
    err = capsys.readouterr().err
    assert "refused: the answer is no" in err and err.startswith("fastrpc call: ")
    assert main(["call", broker.url, topic, "no_such_method"]) == 1
    assert "no_such_method" in capsys.readouterr().err
    assert main(["call", broker.url, topic + "_nobody", "add", "--timeout", "0.5"]) == 1
    assert "MessagingTimeout" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["call", broker.url, topic, "add", "--arg", "not-a-pair"])
    assert usage.value.code == 2


def test_cast_reaches_the_server(broker: Any, calc: Any) -> None:
    topic, endpoint = calc
    assert main(["cast", broker.url, topic, "note", "--arg", "value=7"]) == 0
    assert endpoint.noted_event.wait(WAIT)
    assert endpoint.noted == [7]


def test_password_of_a_refused_url_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    url = "rabbit://guest:s3cret-pw@127.0.0.1:1/"  # nothing listens on port 1
    assert main(["call", url, "t", "m", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fastrpc call: ") and "s3cret-pw" not in err


def test_demo_command_runs_the_demo_on_a_given_broker(broker: Any, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--url", broker.url, "--seconds", "0.3"]) == 0
    out = capfd.readouterr().out
    assert "fastrpc demo (RPC over RabbitMQ)" in out and "total" in out
    assert "fastrpc service-list" in out and "host-3" in out
