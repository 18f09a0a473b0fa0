"""``fastrpc doctor --watch``'s change markers, and a management API that
answers garbage, against a small HTTP server on loopback that serves the
management API's resources as the test sets them (the checks themselves are
tested on a real broker in test_doctor.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fastrpc.cli import main
from fastrpc.doctor.checks import Finding
from fastrpc.doctor.watch import ChangeTracker

HEALTHY_NODE = {"name": "rabbit@a", "running": True, "partitions": [], "mem_alarm": False, "disk_free_alarm": False}


def zombie(name: str, messages: int = 5) -> dict[str, Any]:
    return {"vhost": "/", "name": name, "messages": messages, "consumers": 0, "type": "classic",
            "node": "rabbit@a", "state": "running"}


class FakeManagement:
    """Serves ``/api/<resource>``: each GET of ``queues`` answers the next of
    ``queue_looks`` (one sample a look with --interval 0)."""

    def __init__(self) -> None:
        self.queue_looks: list[list[dict[str, Any]] | bytes] = [[]]  # bytes: an answer as it is
        self.raw: dict[str, bytes] = {}
        self.queue_gets = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                resource = self.path.removeprefix("/api/").split("?")[0]
                with outer.lock:
                    body = outer.answer(resource)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://guest:s3cret@127.0.0.1:{self.server.server_address[1]}/"

    def answer(self, resource: str) -> bytes:
        if resource in self.raw:
            return self.raw[resource]
        if resource == "queues":
            look = self.queue_looks[min(self.queue_gets, len(self.queue_looks) - 1)]
            self.queue_gets += 1
            return look if isinstance(look, bytes) else json.dumps(look).encode()
        if resource == "nodes":
            return json.dumps([HEALTHY_NODE]).encode()
        return b"[]"  # overview is not asked for with --mgmt-url; connections, consumers, bindings

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def api() -> Iterator[FakeManagement]:
    fake = FakeManagement()
    try:
        yield fake
    finally:
        fake.close()


def test_tracker_marks_new_findings_and_names_those_gone() -> None:
    tracker = ChangeTracker()
    a, b = Finding("zombie-queue", "'/' a", "5 messages"), Finding("backlog", "'/' b", "2000 messages")
    first = tracker.update([a], "10:00:00")
    assert first.new == set() and first.gone == [] and first.since == {("zombie-queue", "'/' a"): "10:00:00"}
    second = tracker.update([Finding("zombie-queue", "'/' a", "9 messages"), b], "10:00:02")
    assert second.is_new(b) and not second.is_new(a)
    assert second.since[("zombie-queue", "'/' a")] == "10:00:00" and second.since[("backlog", "'/' b")] == "10:00:02"
    third = tracker.update([b], "10:00:04")
    assert third.gone == [("zombie-queue", "'/' a")] and third.new == set()
    # Back again later: new again, with a new since.
    fourth = tracker.update([a, b], "10:00:06")
    assert fourth.is_new(a) and fourth.since[("zombie-queue", "'/' a")] == "10:00:06"


def test_watch_marks_a_finding_new_then_gone(api: FakeManagement, capsys: pytest.CaptureFixture[str]) -> None:
    api.queue_looks = [[], [zombie("orphan")], []]
    status = main(["doctor", "--mgmt-url", api.url, "--watch", "--rounds", "3", "--interval", "0"])
    out = capsys.readouterr().out
    assert status == 0  # the last look is healthy
    looks = out.split("fastrpc doctor: ")[1:]
    assert len(looks) == 3
    assert "healthy" in looks[0]
    assert "new" in looks[1] and "orphan" in looks[1] and "zombie-queue" in looks[1]
    assert "gone since the last look: zombie-queue" in looks[2] and "orphan" in looks[2]
    assert "s3cret" not in out


def test_watch_json_is_one_object_per_look(api: FakeManagement, capsys: pytest.CaptureFixture[str]) -> None:
    api.queue_looks = [[zombie("kept")], [zombie("kept", 7), zombie("later")]]
    status = main(["doctor", "--mgmt-url", api.url, "--watch", "--json", "--rounds", "2", "--interval", "0"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1 and len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert [f["queue"] for f in first["findings"]] == ["kept"] and first["findings"][0]["new"] is False
    new = {f["queue"]: f["new"] for f in second["findings"]}
    assert new == {"kept": False, "later": True} and second["look"] == 2 and second["gone"] == []
    assert second["findings"][0]["since"] == first["findings"][0]["since"] == first["time"]
    assert second["time"] > first["time"] or second["time"] == first["time"]  # ISO 8601: comparable as text


def test_a_look_the_api_fails_is_shown_and_the_watch_goes_on(api: FakeManagement,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    api.queue_looks = [[zombie("kept")], b"<html>502 Bad Gateway</html>", [zombie("kept")]]
    status = main(["doctor", "--mgmt-url", api.url, "--watch", "--json", "--rounds", "3", "--interval", "0"])
    first, failed, third = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert status == 1  # the last look found the zombie
    assert "not JSON" in failed["error"] and "findings" not in failed
    # The failed look forgot nothing: the zombie is still there since the first look, not new.
    assert third["findings"][0]["since"] == first["time"] and third["findings"][0]["new"] is False
    assert third["gone"] == []


@pytest.mark.parametrize("resource,body,said", [
    ("queues", b"<html>502 Bad Gateway</html>", "not JSON"),
    ("queues", b'{"error": "surprise"}', "expected a list"),
    ("nodes", b"[1, 2, 3]", "expected a list of objects"),
])
def test_garbage_from_the_api_is_a_one_line_error(api: FakeManagement, capsys: pytest.CaptureFixture[str],
                                                   resource: str, body: bytes, said: str) -> None:
    api.raw[resource] = body
    status = main(["doctor", "--mgmt-url", api.url, "--interval", "0"])
    captured = capsys.readouterr()
    assert status == 2
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fastrpc doctor:") and said in err
    assert "Traceback" not in captured.err and "s3cret" not in captured.err + captured.out
