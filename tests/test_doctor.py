"""``fastrpc doctor`` against a private node with the management plugin:
each condition is made for real and found (a fanout queue whose consumer
process was killed, a queue fed with no consumer, a backlog, a connection
with 300 channels, a memory alarm), and a healthy broker shows nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastrpc import Target, get_rpc_client, get_rpc_transport
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.url import ConnectionParams
from fastrpc.cli import main
from fastrpc.testing import RabbitNode

WAIT = 30.0


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    # Statistics every 0.5 s, so the API sees a change quickly.
    n = RabbitNode(management=True, config=["collect_statistics_interval = 500"])
    try:
        yield n
    finally:
        n.stop()


def run(node: RabbitNode, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]]]:
    status = main(["doctor", "--mgmt-url", node.management_url, "--interval", "0", "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def until(node: RabbitNode, capsys: pytest.CaptureFixture[str], found: Callable[[list[dict[str, Any]]], bool],
          what: str, *args: str) -> list[dict[str, Any]]:
    """Run the doctor until ``found(findings)`` (the API's statistics lag a little)."""
    deadline = time.monotonic() + WAIT
    while True:
        status, findings = run(node, capsys, *args)
        if found(findings):
            assert status == 1
            return findings
        assert time.monotonic() < deadline, f"the doctor never found {what}: {findings}"
        time.sleep(0.3)


def of(findings: list[dict[str, Any]], check: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["check"] == check]


def test_a_healthy_broker_shows_nothing(node: RabbitNode, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--mgmt-url", node.management_url, "--interval", "0"]) == 0
    assert "healthy" in capsys.readouterr().out


_SERVER = textwrap.dedent("""
    import sys, time
    from fastrpc import Target, get_rpc_server, get_rpc_transport

    class Endpoint:
        def ping(self, ctxt):
            return "pong"

    server = get_rpc_server(get_rpc_transport(url=sys.argv[1]), Target(topic=sys.argv[2], server="s1"),
                            [Endpoint()])
    server.start()
    print("ready", flush=True)
    time.sleep(600)
""")


def test_fanout_queue_of_a_killed_process_is_found_and_fixed(node: RabbitNode,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    topic = "doctor_zombie"
    server = subprocess.Popen([sys.executable, "-c", _SERVER, node.url, topic], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    finally:
        server.kill()
        server.wait(WAIT)
    transport = get_rpc_transport(url=node.url)
    try:
        client = get_rpc_client(transport, Target(topic=topic, fanout=True))
        for _ in range(3):
            client.cast({}, "ping")
        findings = until(node, capsys, lambda fs: any("_fanout_" in f["subject"] and f["messages"] >= 3
                                                      for f in of(fs, "zombie-queue")), "the zombie fanout queue")
        (zombie,) = [f for f in of(findings, "zombie-queue") if "_fanout_" in f["subject"]]
        assert zombie["left_behind"] is True
        assert f"{topic}_fanout -> " in " ".join(zombie["bindings"])
        assert zombie["fix"] == f"rabbitmqctl delete_queue -p / {zombie['queue']}"
        # --fix --yes deletes it; the next look does not see it.
        main(["doctor", "--mgmt-url", node.management_url, "--interval", "0", "--fix", "--yes"])
        assert f"deleted {zombie['subject']}" in capsys.readouterr().err
        _, after = run(node, capsys)
        assert not [f for f in of(after, "zombie-queue") if f["subject"] == zombie["subject"]]
    finally:
        transport.cleanup()
        admin = Connection(ConnectionParams(host=node.host, port=node.port)).connect()
        with admin:
            ch = admin.channel()
            for name in (topic, f"{topic}.s1"):
                ch.queue_delete(name)


def test_fed_queue_without_consumer_and_a_backlog(node: RabbitNode, capsys: pytest.CaptureFixture[str]) -> None:
    conn = Connection(ConnectionParams(host=node.host, port=node.port, connection_name="doctor-worker")).connect()
    try:
        ch = conn.channel()
        ch.queue_declare("doctor_fed")
        ch.queue_declare("doctor_busy")
        for i in range(12):
            ch.basic_publish("", "doctor_fed", b"x%d" % i)
            ch.basic_publish("", "doctor_busy", b"y%d" % i)
        # A consumer that takes one message and never acks it: the rest wait.
        worker = conn.channel()
        worker.basic_qos(prefetch_count=1)
        worker.basic_consume("doctor_busy", lambda delivery: None)
        findings = until(node, capsys, lambda fs: any(f["subject"] == "doctor_fed" for f in of(fs, "zombie-queue"))
                         and any(f["subject"] == "doctor_busy" for f in of(fs, "backlog")),
                         "the fed queue and the backlog", "--backlog", "10")
        (fed,) = [f for f in of(findings, "zombie-queue") if f["subject"] == "doctor_fed"]
        assert fed["messages"] == 12 and fed["left_behind"] is False
        (busy,) = [f for f in of(findings, "backlog") if f["subject"] == "doctor_busy"]
        assert busy["consumers"] == ["doctor-worker"]
        ch.queue_delete("doctor_fed")
        ch.queue_delete("doctor_busy")
    finally:
        conn.close()


def test_connection_with_300_channels_is_a_leak(node: RabbitNode, capsys: pytest.CaptureFixture[str]) -> None:
    conn = Connection(ConnectionParams(host=node.host, port=node.port, connection_name="doctor-leaky")).connect()
    try:
        for _ in range(300):
            conn.channel()
        findings = until(node, capsys, lambda fs: bool(of(fs, "channel-leak")), "the channel leak")
        (leak,) = of(findings, "channel-leak")
        assert leak["subject"] == "doctor-leaky" and leak["channels"] == 300
    finally:
        conn.close()


def test_watch_refreshes_and_a_bad_url_is_a_clear_error(node: RabbitNode, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--mgmt-url", node.management_url, "--watch", "--rounds", "2", "--interval", "0.2"]) == 0
    out = capsys.readouterr().out
    assert out.count("fastrpc doctor: ") == 2 and out.count("healthy") == 2 and "look 2" in out
    # Not examined at all is exit status 2, not 1 (findings).
    assert main(["doctor", "--mgmt-url", "http://guest:s3cret@127.0.0.1:1/", "--interval", "0"]) == 2
    err = capsys.readouterr().err
    assert "fastrpc doctor:" in err and "127.0.0.1:1" in err and "s3cret" not in err
    # From the transport URL: its host's port 15672 is not this node's, so nothing answers.
    assert main(["doctor", "--url", "rabbit://guest:s3cret@127.0.0.1:1/", "--interval", "0"]) == 2
    assert "s3cret" not in capsys.readouterr().err


def test_memory_alarm_is_found(node: RabbitNode, capsys: pytest.CaptureFixture[str]) -> None:
    node.ctl("set_vm_memory_high_watermark", "0.0001")
    try:
        findings = until(node, capsys, lambda fs: bool(of(fs, "alarm")), "the memory alarm")
        (alarm,) = of(findings, "alarm")
        assert alarm["alarm"] == "memory"
    finally:
        node.ctl("set_vm_memory_high_watermark", "0.4")
    deadline = time.monotonic() + WAIT
    while run(node, capsys)[0] != 0:
        assert time.monotonic() < deadline, "the alarm did not clear"
        time.sleep(0.3)


def test_a_stopped_cluster_node_is_found(rabbit_cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:
    first, third = rabbit_cluster.nodes[0], rabbit_cluster.nodes[2]
    third.ctl("stop_app")
    try:
        deadline = time.monotonic() + WAIT
        while True:
            status = main(["doctor", "--mgmt-url", first.management_url, "--interval", "0", "--json"])
            down = of(json.loads(capsys.readouterr().out), "node-down")
            if down:
                break
            assert time.monotonic() < deadline, "the doctor never saw the node down"
            time.sleep(0.5)
        assert status == 1
        assert [f["subject"] for f in down] == [third.nodename]
    finally:
        third.ctl("start_app")
        rabbit_cluster.wait_running()


# --- the rules on the API's answers (what a test cannot cheaply make for real on one node) ---


def test_cluster_rules_on_api_answers() -> None:
    from fastrpc.doctor import checks

    nodes = [
        {"name": "rabbit@a", "running": True, "partitions": ["rabbit@c"], "mem_alarm": False, "disk_free_alarm": True},
        {"name": "rabbit@b", "running": True, "partitions": [], "mem_alarm": False, "disk_free_alarm": False},
        {"name": "rabbit@c", "running": False},
    ]
    queues = [
        {"name": "q-led", "vhost": "/", "type": "quorum", "leader": "rabbit@a", "members": ["rabbit@a", "rabbit@b"],
         "online": ["rabbit@a", "rabbit@b"]},
        {"name": "q-orphan", "vhost": "/", "type": "quorum", "leader": None, "members": ["rabbit@a", "rabbit@c"],
         "online": ["rabbit@a"]},
        {"name": "c-on-c", "vhost": "v1", "type": "classic", "node": "rabbit@c", "state": "running"},
        {"name": "c-on-b", "vhost": "/", "type": "classic", "node": "rabbit@b", "state": "running"},
    ]
    found = {(f.check, f.subject): f for f in checks.cluster(nodes, queues)}
    assert set(found) == {("partition", "rabbit@a"), ("alarm", "rabbit@a"), ("node-down", "rabbit@c"),
                          ("quorum-queue", "q-orphan"), ("queue-down", "v1:c-on-c")}
    assert found["alarm", "rabbit@a"].data["alarm"] == "disk"
    assert found["quorum-queue", "q-orphan"].detail == "no leader; members offline: rabbit@c"


def test_growth_between_samples_makes_a_backlog_and_shows_on_zombies() -> None:
    from datetime import datetime, timezone

    from fastrpc.doctor import checks

    before = {("/", "busy"): {"messages": 5}, ("/", "dead"): {"messages": 2}}
    queues = [{"name": "busy", "vhost": "/", "messages": 40, "consumers": 1},
              {"name": "calm", "vhost": "/", "messages": 3, "consumers": 1},
              {"name": "dead", "vhost": "/", "messages": 9, "consumers": 0, "idle_since": "2020-01-01 00:00:00"},
              {"name": "reply_" + "a" * 32, "vhost": "/", "messages": 1, "consumers": 0}]
    backlogs = checks.backlogs(queues, [], {}, before)
    assert [(f.subject, f.data["growth"]) for f in backlogs] == [("busy", 35)]
    zombies = {f.subject: f for f in checks.zombie_queues(queues, {}, before, datetime.now(timezone.utc))}
    assert set(zombies) == {"dead", "reply_" + "a" * 32}
    assert "+7 messages since the last sample" in zombies["dead"].detail and " h" in zombies["dead"].detail
    assert zombies["reply_" + "a" * 32].data["left_behind"] is True and zombies["dead"].data["left_behind"] is False
    assert checks.delete_command("v 1", "x;y") == "rabbitmqctl delete_queue -p 'v 1' 'x;y'"
