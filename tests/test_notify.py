"""fastrpc's own notification API on a real broker: Notifier -> notification
listeners (every priority, filters, pools, requeue, batches), malformed
messages, and payloads that cannot be sent. Interop with oslo.messaging:
test_notify_interop.py."""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import queue
import re
import sys
import threading
import time
import uuid

import pytest
from endpoints import notification_listening

import fastrpc
from fastrpc import NotificationFilter, NotificationPayloadError, NotificationResult, Target
from fastrpc.amqp import spec
from fastrpc.amqp.connection import Connection
from fastrpc.amqp.exceptions import ChannelClosed
from fastrpc.notify import PRIORITIES
from fastrpc.testing.ports import free_ports

pytestmark = pytest.mark.twins

WAIT = 15.0
# str() of a naive datetime, as oslo writes the timestamp.
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$")
# What each Notifier method sends as priority, and the endpoint method it reaches.
METHODS = {"audit": "audit", "debug": "debug", "info": "info", "warn": "warn", "warning": "warn",
           "error": "error", "critical": "critical", "sample": "sample"}


class Context:
    """A request context as services have them: to_dict(), and a
    redacted_copy() without the token (what a notifier sends)."""

    def __init__(self, **values) -> None:
        self.values = values

    def to_dict(self) -> dict:
        return dict(self.values)

    def redacted_copy(self) -> Context:
        return Context(**{k: v for k, v in self.values.items() if k != "auth_token"})


class Recorder:
    """An endpoint for every priority: records (priority, ctxt, publisher, event type, payload, metadata)."""

    def __init__(self, filter_rule=None, seen: queue.SimpleQueue | None = None) -> None:
        self.seen: queue.SimpleQueue = seen if seen is not None else queue.SimpleQueue()
        if filter_rule is not None:
            self.filter_rule = filter_rule
        for priority in PRIORITIES:
            setattr(self, priority, self._handler(priority))

    def _handler(self, priority: str):
        def handle(ctxt, publisher_id, event_type, payload, metadata):
            self.seen.put((priority, dict(ctxt), publisher_id, event_type, payload, metadata))
            return self.answer(priority, event_type, payload)
        return handle

    def answer(self, priority, event_type, payload):
        return NotificationResult.HANDLED

    def take(self, count: int) -> list[tuple]:
        return [self.seen.get(timeout=WAIT) for _ in range(count)]


class InfoRecorder:
    """Only the info priority: records (event type, payload)."""

    def __init__(self, seen: queue.SimpleQueue | None = None, answers=None) -> None:
        self.seen: queue.SimpleQueue = seen if seen is not None else queue.SimpleQueue()
        self.answers = answers  # event type -> list of answers to give, in turn

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self.seen.put((event_type, payload))
        if self.answers and self.answers.get(event_type):
            answer = self.answers[event_type].pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return None


@pytest.fixture
def topic(request):
    return "ntf_" + re.sub(r"\W", "_", request.node.name)[:60]


@pytest.fixture
def transport(broker):
    t = fastrpc.get_notification_transport(url=broker.url)
    yield t
    t.cleanup()


# A fastrpc notification listener on a topic, started; stopped and waited for after.
listening = functools.partial(notification_listening, fastrpc)


def all_queue_counts(broker) -> dict[str, tuple[int, int]]:
    counts = {}
    for line in broker.ctl("list_queues", "name", "messages_ready", "messages_unacknowledged").splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1].isdigit():
            counts[fields[0]] = (int(fields[1]), int(fields[2]))
    return counts


def queue_counts(broker, name: str) -> tuple[int, int]:
    """(ready, unacknowledged) messages of a queue, as the broker counts them."""
    counts = all_queue_counts(broker)
    assert name in counts, f"no queue {name}"
    return counts[name]


def wait_settled(broker, *names: str, ready: int = 0) -> None:
    """Until each queue of ``names`` holds ``ready`` messages and none unacknowledged."""
    deadline = time.monotonic() + WAIT
    while True:
        counts = all_queue_counts(broker)
        if all(counts.get(name) == (ready, 0) for name in names):
            return
        assert time.monotonic() < deadline, f"(ready, unacknowledged): {counts}"
        time.sleep(0.1)


def assert_no_queue(broker, name: str) -> None:
    """The broker has no queue ``name`` (a passive declare is refused)."""
    with Connection(broker.url) as conn:
        with pytest.raises(ChannelClosed) as info:
            conn.channel().queue_declare(name, passive=True)
    assert info.value.reply_code == spec.NOT_FOUND


def publish_raw(broker, queue_name: str, *bodies: bytes) -> None:
    """Straight into a queue, past any driver (JSON content type)."""
    with Connection(broker.url) as conn:
        ch = conn.channel()
        for body in bodies:
            ch.basic_publish("", queue_name, body, {"content_type": "application/json"})


@pytest.mark.parametrize("executor", ["threading", "blocking"])
def test_every_priority_reaches_its_endpoint_method(broker, transport, topic, executor):
    notifier = fastrpc.Notifier(transport, publisher_id="compute.host1", topics=[topic], driver="messagingv2")
    ep = Recorder()
    ctxt = Context(user_id="u1", request_id="req-1", auth_token="very-secret")
    with listening(transport, topic, [ep], executor=executor):
        for method in METHODS:
            getattr(notifier, method)(ctxt, f"thing.{method}", {"method": method, "n": [1, "é", None]})
        got = {event_type: (priority, c, pub, payload, md) for priority, c, pub, event_type, payload, md
               in ep.take(len(METHODS))}
    assert set(got) == {f"thing.{method}" for method in METHODS}
    for method, priority in METHODS.items():
        got_priority, got_ctxt, publisher, payload, metadata = got[f"thing.{method}"]
        assert (got_priority, publisher, payload) == (priority, "compute.host1", {"method": method, "n": [1, "é", None]})
        # The redacted copy: no token; the listener adds client_timeout as oslo's do.
        assert got_ctxt == {"user_id": "u1", "request_id": "req-1", "client_timeout": None}
        assert str(uuid.UUID(metadata["message_id"])) == metadata["message_id"]
        assert TIMESTAMP.match(metadata["timestamp"]), metadata["timestamp"]
    wait_settled(broker, *(f"{topic}.{priority}" for priority in PRIORITIES))  # each acknowledged once handled
    assert ep.seen.empty()


def test_a_plain_dict_context_is_not_sent(transport, topic):
    # As oslo's Notifier: a dict cannot be redacted (it may hold a token), so it stays home.
    ep = Recorder()
    with listening(transport, topic, [ep]):
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        notifier.info({"auth_token": "very-secret"}, "x.y", {})
        assert ep.take(1)[0][1] == {"client_timeout": None}


def test_prepare_changes_publisher_retry_and_topics(transport, topic):
    base = fastrpc.Notifier(transport, publisher_id="base", topics=[topic], retry=3, driver="messagingv2")
    other_topic = topic + "_other"
    ep, other_ep = Recorder(), Recorder()
    with listening(transport, topic, [ep]), listening(transport, other_topic, [other_ep]):
        prepared = base.prepare(publisher_id="prepared")
        assert (prepared.retry, prepared.topics, base.publisher_id) == (3, [topic], "base")
        prepared.info({}, "one", {})
        assert ep.take(1)[0][2:4] == ("prepared", "one")
        base.prepare(topics=[other_topic], retry=0).error({}, "two", {})
        assert other_ep.take(1)[0][:4] == ("error", {"client_timeout": None}, "base", "two")
        # Two topics: one copy each.
        base.prepare(topics=[topic, other_topic]).warn({}, "three", {"k": 1})
        assert ep.take(1)[0][3:5] == ("three", {"k": 1})
        assert other_ep.take(1)[0][3:5] == ("three", {"k": 1})
    assert ep.seen.empty() and other_ep.seen.empty()


def test_filter_rules_choose_the_endpoints(broker, transport, topic):
    by_source = Recorder(filter_rule=NotificationFilter(publisher_id="^host-a$", event_type=r"^compute\."))
    by_content = Recorder(filter_rule=NotificationFilter(context={"project": "^p1$"}, payload={"state": "^active"}))
    by_metadata = Recorder(filter_rule=NotificationFilter(metadata={"timestamp": r"^\d{4}-"}))
    everything = Recorder()
    p1, p2 = Context(project="p1"), Context(project="p2")
    sends = [
        ("host-a", p1, "compute.start", {"state": "active"}),     # both filters match
        ("host-b", p1, "compute.start", {"state": "active"}),     # wrong publisher
        ("host-a", p2, "compute.stop", {"state": "active"}),      # wrong project
        ("host-a", p1, "network.up", {"state": "down"}),          # wrong event type and state
        ("host-a", p1, "compute.odd", {"state": 5}),              # a number never matches a regex
        ("host-a", p1, "compute.none", {}),                       # key missing
    ]
    # Endpoints run in order: once `everything` (the last) saw all, the others are done.
    with listening(transport, topic, [by_source, by_content, by_metadata, everything]):
        notifier = fastrpc.Notifier(transport, driver="messagingv2", topics=[topic])
        for publisher, ctxt, event_type, payload in sends:
            notifier.prepare(publisher_id=publisher).info(ctxt, event_type, payload)
        assert sorted(r[3] for r in everything.take(len(sends))) == sorted(s[2] for s in sends)
    assert sorted(r[3] for r in drain(by_source)) == ["compute.none", "compute.odd", "compute.start", "compute.stop"]
    assert sorted((r[2], r[3]) for r in drain(by_content)) == [("host-a", "compute.start"),
                                                               ("host-b", "compute.start")]
    assert len(drain(by_metadata)) == len(sends)
    wait_settled(broker, f"{topic}.info")  # filtered out is handled too: acknowledged


def drain(ep: Recorder | InfoRecorder) -> list[tuple]:
    """What ``ep`` recorded so far."""
    items = []
    while not ep.seen.empty():
        items.append(ep.seen.get_nowait())
    return items


def test_pools_each_get_a_copy_and_share_it_within(broker, transport, topic):
    shared_a, shared_b, alone = InfoRecorder(), InfoRecorder(), InfoRecorder()
    with contextlib.ExitStack() as stack:
        stack.enter_context(listening(transport, topic, [shared_a], pool=f"{topic}_p1"))
        stack.enter_context(listening(transport, topic, [shared_b], pool=f"{topic}_p1"))
        stack.enter_context(listening(transport, topic, [alone], pool=f"{topic}_p2"))
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        for n in range(20):
            notifier.info({}, f"e{n}", {"n": n})
        assert sorted(p["n"] for _, p in (alone.seen.get(timeout=WAIT) for _ in range(20))) == list(range(20))
        wait_settled(broker, f"{topic}_p1")
        got_a = [p["n"] for _, p in drain(shared_a)]
        got_b = [p["n"] for _, p in drain(shared_b)]
    # One pool's two listeners split its copy (the broker deals them in turn), each once.
    assert sorted(got_a + got_b) == list(range(20))
    assert got_a and got_b
    wait_settled(broker, f"{topic}_p2")
    # The senders' own queue (no pool) kept a third copy for its listeners to come.
    assert queue_counts(broker, f"{topic}.info") == (20, 0)


def test_requeue_gives_a_notification_back_when_allowed(broker, transport, topic):
    answers = {"again": [NotificationResult.REQUEUE], "raises": [RuntimeError("endpoint failed")]}
    ep = InfoRecorder(answers=answers)
    with listening(transport, topic, [ep], allow_requeue=True):
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        for event_type in ("again", "raises", "once"):
            notifier.info({}, event_type, {})
        got = collections.Counter(ep.seen.get(timeout=WAIT)[0] for _ in range(5))
        wait_settled(broker, f"{topic}.info")
    # The REQUEUE answer and the exception each brought their notification back once.
    assert got == {"again": 2, "raises": 2, "once": 1}
    assert ep.seen.empty()


def test_requeue_is_an_acknowledgement_when_not_allowed(broker, transport, topic):
    ep = InfoRecorder(answers={"again": [NotificationResult.REQUEUE], "raises": [RuntimeError("endpoint failed")]})
    with listening(transport, topic, [ep]):  # allow_requeue=False, oslo's default
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        for event_type in ("again", "raises", "marker"):
            notifier.info({}, event_type, {})
        got = [ep.seen.get(timeout=WAIT)[0] for _ in range(3)]
        # Nothing ready or unacknowledged left: a requeued one would be one or the other, or seen again.
        wait_settled(broker, f"{topic}.info")
    assert sorted(got) == ["again", "marker", "raises"]
    assert ep.seen.empty()


class BatchRecorder:
    def __init__(self, requeue_first: int = 0) -> None:
        self.batches: queue.SimpleQueue = queue.SimpleQueue()
        self.requeue_first = requeue_first

    def info(self, messages):
        self.batches.put([(m["event_type"], m["payload"]["n"], m["publisher_id"], sorted(m["metadata"]),
                           m["ctxt"]) for m in messages])
        if self.requeue_first:
            self.requeue_first -= 1
            return NotificationResult.REQUEUE
        return None

    def warn(self, messages):
        self.batches.put([("warn", m["payload"]["n"]) for m in messages])


def test_batch_listener_fills_batches_then_times_out(broker, transport, topic):
    ep = BatchRecorder()
    batch_timeout = 2.0
    with listening(transport, topic, [ep], batch={"batch_size": 3, "batch_timeout": batch_timeout}):
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        sent = time.monotonic()
        for n in range(4):
            notifier.info(Context(user="u"), "b", {"n": n})
        first = ep.batches.get(timeout=WAIT)
        assert [n for _, n, *_ in first] == [0, 1, 2]
        assert first[0] == ("b", 0, "p", ["message_id", "timestamp"], {"user": "u", "client_timeout": None})
        assert [n for _, n, *_ in ep.batches.get(timeout=WAIT)] == [3]  # what the timeout found
        # Its batch began once the last one was taken, after it was sent, and
        # was handed over when batch_timeout ran out.
        assert batch_timeout <= time.monotonic() - sent < batch_timeout + 1.5
        # One call per priority of a batch.
        notifier.warn({}, "w", {"n": 9})
        assert ep.batches.get(timeout=WAIT) == [("warn", 9)]
        wait_settled(broker, f"{topic}.info")
    assert ep.batches.empty()


def test_batch_requeue_gives_the_whole_batch_back(broker, transport, topic):
    ep = BatchRecorder(requeue_first=1)
    with listening(transport, topic, [ep], batch={"batch_size": 2, "batch_timeout": 1}, allow_requeue=True):
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        for n in range(2):
            notifier.info({}, "b", {"n": n})
        first = [n for _, n, *_ in ep.batches.get(timeout=WAIT)]
        seen = list(first)
        while len(seen) < 4:  # the requeued batch again (in one batch or two)
            seen += [n for _, n, *_ in ep.batches.get(timeout=WAIT)]
        wait_settled(broker, f"{topic}.info")
    assert first == [0, 1]
    assert sorted(seen) == [0, 0, 1, 1]
    assert ep.batches.empty()


@pytest.mark.parametrize("batch", [None, {"batch_size": 4, "batch_timeout": 0.5}], ids=["single", "batch"])
def test_malformed_messages_are_logged_and_acknowledged(broker, transport, topic, caplog, batch):
    # Even with requeue allowed: the same bytes would fail the same way for ever.
    caplog.set_level(logging.WARNING)
    seen: queue.SimpleQueue = queue.SimpleQueue()

    class Endpoint:
        def info(self, *args):
            if batch is None:
                seen.put(args[2])  # event type
            else:
                for message in args[0]:
                    seen.put(message["event_type"])

    def envelope(inner) -> bytes:
        return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(inner)}).encode()

    bad = {
        b"not json \x00": "body is not valid JSON",
        b"[1, 2]": "envelope is not a mapping",
        b'{"oslo.version": "9.0", "oslo.message": "{}"}': "unsupported oslo.version",
        b'{"oslo.version": "2.0", "oslo.message": "{not json"}': "oslo.message is not valid JSON",
        envelope({"event_type": "no.priority", "payload": {}}): "it has no priority",
        envelope({"event_type": "int.priority", "priority": 5, "payload": {}}): "its priority is a int",
        envelope({"event_type": "odd.priority", "priority": "LOUD", "payload": {}}): "unknown priority 'LOUD'",
    }
    with listening(transport, topic, [Endpoint()], batch=batch, allow_requeue=True):
        publish_raw(broker, f"{topic}.info", *bad)
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        notifier.info({}, "good.one", {"n": 1})
        assert seen.get(timeout=WAIT) == "good.one"
        wait_settled(broker, f"{topic}.info")  # none requeued, none left unacknowledged
        # Still serving.
        notifier.info({}, "good.two", {"n": 2})
        assert seen.get(timeout=WAIT) == "good.two"
    assert seen.empty()
    for reason in bad.values():
        assert reason in caplog.text
    assert "Rejected malformed notification" in caplog.text


class FlakySerializer(fastrpc.NoOpSerializer):
    """Cannot rebuild a payload holding "flaky" the first time it sees it (a
    class the listener cannot import yet, say); fine the next time."""

    def __init__(self) -> None:
        self.failed: set = set()
        self.lock = threading.Lock()

    def deserialize_entity(self, ctxt, entity):
        with self.lock:
            if isinstance(entity, dict) and "flaky" in entity and entity["flaky"] not in self.failed:
                self.failed.add(entity["flaky"])
                raise LookupError("no such class")
        return entity


@pytest.mark.parametrize("allow_requeue", [True, False], ids=["requeue_allowed", "requeue_not_allowed"])
@pytest.mark.parametrize("batch", [None, {"batch_size": 4, "batch_timeout": 0.5}], ids=["single", "batch"])
def test_a_serializer_failure_counts_as_requeue(broker, transport, topic, caplog, batch, allow_requeue):
    # As oslo: a notification the serializer cannot rebuild now is requeued
    # when the listener allows it (another try may work), else acknowledged.
    caplog.set_level(logging.WARNING)
    seen: queue.SimpleQueue = queue.SimpleQueue()

    class Endpoint:
        def info(self, *args):
            for message in (args[0] if batch else [{"event_type": args[2]}]):
                seen.put(message["event_type"])

    serializer = FlakySerializer()
    with listening(transport, topic, [Endpoint()], batch=batch, serializer=serializer, allow_requeue=allow_requeue):
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        notifier.info({}, "flaky.one", {"flaky": 1})
        notifier.info({}, "plain.one", {"n": 1})
        expected = ["flaky.one", "plain.one"] if allow_requeue else ["plain.one"]
        assert sorted(seen.get(timeout=WAIT) for _ in expected) == expected
        wait_settled(broker, f"{topic}.info")  # nothing left ready or unacknowledged
    assert seen.empty() and serializer.failed == {1}
    assert "could not rebuild the context or payload of a notification" in caplog.text
    assert "'flaky.one'" in caplog.text and "LookupError" in caplog.text


def test_a_batch_is_no_larger_than_the_prefetch(broker, topic):
    # The broker hands a consumer rabbit_qos_prefetch_count unacknowledged
    # messages; a batch acknowledged only once it ran could never grow past
    # that, so a listener without batch_timeout would wait for ever.
    t = fastrpc.get_notification_transport(url=broker.url + "?rabbit_qos_prefetch_count=2")
    ep = BatchRecorder()
    try:
        with listening(t, topic, [ep], batch={"batch_size": 5, "batch_timeout": None}) as listener:
            assert listener.batch_size == 2
            notifier = fastrpc.Notifier(t, "p", topics=[topic], driver="messagingv2")
            for n in range(6):  # three full batches (without batch_timeout, a part batch waits)
                notifier.info({}, "b", {"n": n})
            batches = [[n for _, n, *_ in ep.batches.get(timeout=WAIT)] for _ in range(3)]
            wait_settled(broker, f"{topic}.info")
    finally:
        t.cleanup()
    assert [len(batch) for batch in batches] == [2, 2, 2]
    assert sorted(n for batch in batches for n in batch) == list(range(6))
    assert ep.batches.empty()


def test_an_unencodable_or_oversized_payload_fails_at_the_notifier(broker, topic):
    # max_message_size from the URL, as any broker option.
    t = fastrpc.get_notification_transport(url=broker.url + "?max_message_size=2048")
    try:
        notifier = fastrpc.Notifier(t, "p", topics=[topic], driver="messagingv2")
        notifier.info({}, "fine", {"n": 1})  # declares the queue: one waits there
        with pytest.raises(NotificationPayloadError, match="'not.json' not sent: cannot encode") as err:
            notifier.info({}, "not.json", {"obj": object()})
        assert (err.value.event_type, isinstance(err.value, ValueError)) == ("not.json", True)
        with pytest.raises(NotificationPayloadError, match="'too.big' not sent: .* max_message_size"):
            notifier.info({}, "too.big", {"blob": "x" * 4000})
        with pytest.raises(TypeError, match="event_type must be a string"):
            notifier.info({}, None, {})
    finally:
        t.cleanup()
    assert queue_counts(broker, f"{topic}.info") == (1, 0)  # nothing of the bad ones was sent


def test_a_notification_the_broker_did_not_take_is_logged_not_raised(caplog):
    # As oslo: a notifier does not fail the work it reports on.
    port = free_ports(1)[0]
    t = fastrpc.get_notification_transport(url=f"amqp://guest:guest@127.0.0.1:{port}/")
    try:
        notifier = fastrpc.Notifier(t, "p", topics=["nowhere"], retry=0, driver="messagingv2")
        started = time.monotonic()
        notifier.error({}, "lost.one", {"password": "hunter2"})
        assert time.monotonic() - started < 3.0  # one refused attempt, no retries
    finally:
        t.cleanup()
    assert "Could not send notification" in caplog.text and "'lost.one'" in caplog.text
    assert "hunter2" not in caplog.text


def test_log_and_noop_drivers(transport, caplog):
    caplog.set_level(logging.DEBUG, logger="oslo.messaging.notification")
    log = fastrpc.Notifier(transport, "p", driver="log")
    log.warn({}, "disk.full", {"path": "/", "auth_password": "hunter2", "nested": [{"token": "t0k"}]})
    log.sample({}, "cpu.load", {"load": 0.7})  # not for logs
    records = [r for r in caplog.records if r.name.startswith("oslo.messaging.notification")]
    assert [(r.name, r.levelno) for r in records] == [("oslo.messaging.notification.disk.full", logging.WARNING)]
    logged = json.loads(records[0].getMessage())
    assert logged["payload"] == {"path": "/", "auth_password": "****", "nested": [{"token": "****"}]}
    assert (logged["priority"], logged["event_type"]) == ("WARN", "disk.full")
    noop = fastrpc.Notifier(transport, "p", driver="noop")
    noop.info({}, "x", {})
    assert not noop.is_enabled() and log.is_enabled()


# What the log driver must hide, as oslo's does, and how it must look after.
SECRETS_TO_LOG = {
    "encrypted_key": ("hunter2", "****"),
    "sslkey": ("hunter2", "****"),
    "fernetkey": ("hunter2", "****"),
    "configdrive": ("hunter2", "****"),
    "rabbitcookie": ("hunter2", "****"),
    "cmd": ("nova-manage --password hunter2 --verbose", "nova-manage --password **** --verbose"),
    "xml": ("<user>u</user><password>hunter2</password>", "<user>u</user><password>****</password>"),
    "url": ("rabbit://nova:hunter2@mq1:5672/", "rabbit://nova:****@mq1:5672/"),
    "note": ("nothing secret here", "nothing secret here"),
}


@pytest.fixture(params=["oslo_utils", "fallback"])
def masking(request, monkeypatch):
    """Which masking the log driver uses: oslo_utils' (installed with
    oslo.messaging), or fastrpc's own when oslo_utils cannot be imported."""
    from fastrpc import redact
    if request.param == "fallback":
        monkeypatch.setitem(sys.modules, "oslo_utils.strutils", None)  # import fails
        assert redact._oslo_strutils() is None
    else:
        assert redact._oslo_strutils() is not None
    return request.param


def test_the_log_driver_masks_secrets_as_oslo_does(transport, caplog, masking):
    caplog.set_level(logging.INFO, logger="oslo.messaging.notification")
    payload = {key: value for key, (value, _masked) in SECRETS_TO_LOG.items()}
    fastrpc.Notifier(transport, "p", driver="log").info({}, "secrets", {"deep": [payload]})
    assert "hunter2" not in caplog.text
    [record] = [r for r in caplog.records if r.name == "oslo.messaging.notification.secrets"]
    logged = json.loads(record.getMessage())
    assert logged["payload"] == {"deep": [{key: masked for key, (_value, masked) in SECRETS_TO_LOG.items()}]}


def test_the_fallback_masks_every_key_oslo_utils_masks(monkeypatch):
    # Kept in step with oslo_utils' list: a key it adds fails here until added.
    from oslo_utils import strutils

    from fastrpc.redact import mask_secrets
    keys = list(strutils._SANITIZE_KEYS)
    assert len(keys) > 30
    monkeypatch.setitem(sys.modules, "oslo_utils.strutils", None)
    for key in keys:
        assert mask_secrets({key.upper(): "hunter2", "text": f"--{key} hunter2 x"}) == {
            key.upper(): "****", "text": f"--{key} **** x"}, key


def test_without_a_driver_nothing_is_sent(broker, transport, topic, caplog):
    # As oslo: no driver given and none configured sends nothing, rather than
    # filling queues nobody may read. Said once per transport, at INFO.
    caplog.set_level(logging.INFO, logger="fastrpc.notify")
    notifier = fastrpc.Notifier(transport, "p", topics=[topic])
    fastrpc.Notifier(transport, "other", topics=[topic]).warn({}, "off.too", {})
    notifier.info({}, "off", {"n": 1})
    assert not notifier.is_enabled() and not notifier.prepare(publisher_id="q").is_enabled()
    told = [r for r in caplog.records if "Notifications on" in r.getMessage()]
    assert [r.levelno for r in told] == [logging.INFO]
    assert "driver='messagingv2'" in told[0].getMessage()
    assert_no_queue(broker, f"{topic}.info")
    assert_no_queue(broker, f"{topic}.warn")
    # The check can fail: with a driver, the queue is there with the notification.
    fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2").info({}, "on", {"n": 2})
    assert queue_counts(broker, f"{topic}.info") == (1, 0)


def test_a_failing_redacted_copy_sends_no_context(transport, topic, caplog):
    # oslo takes an AttributeError from inside redacted_copy() as a context
    # that cannot be redacted: the notification goes, without its context.
    class BrokenContext(Context):
        def redacted_copy(self):
            raise AttributeError("'BrokenContext' object has no attribute 'roles'")

    ep = Recorder()
    with listening(transport, topic, [ep]):
        notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
        notifier.info(BrokenContext(auth_token="very-secret"), "broken.ctxt", {})
        notifier.info(object(), "no.redacted_copy", {})
        got = {record[3]: record[1] for record in ep.take(2)}
    assert got == {"broken.ctxt": {"client_timeout": None}, "no.redacted_copy": {"client_timeout": None}}
    assert "Could not redact a context of type BrokenContext" in caplog.text
    assert "Could not redact a context of type object" in caplog.text


def test_a_requeue_not_allowed_is_logged_as_the_acknowledgement_it_is(caplog, monkeypatch):
    # The settling failed: the log must name what was attempted (an
    # acknowledgement, as requeue was not allowed), not what was asked for.
    from fastrpc.drivers import memory

    def failing_ack(self):
        raise RuntimeError("ack failed")

    monkeypatch.setattr(memory.MemoryIncomingMessage, "acknowledge", failing_ack)
    t = fastrpc.get_notification_transport(url=f"memory:///{uuid.uuid4().hex}")
    ep = InfoRecorder(answers={"again": [NotificationResult.REQUEUE]})
    try:
        with listening(t, "mem", [ep]):
            fastrpc.Notifier(t, "p", topics=["mem"], driver="messagingv2").info({}, "again", {})
            assert ep.seen.get(timeout=WAIT) == ("again", {})
        # wait() returned: the endpoint's notification was settled.
    finally:
        t.cleanup()
    assert "Could not acknowledge a notification" in caplog.text
    assert "Could not requeue" not in caplog.text


def test_the_notification_transport_url_and_defaults(broker, topic):
    # No URL: the RPC transport_url of the options.
    t = fastrpc.get_notification_transport(fastrpc.Options(transport_url=broker.url))
    ep = InfoRecorder()
    try:
        assert isinstance(t, fastrpc.NotificationTransport)
        notifier = fastrpc.Notifier(t, "p", topics=[topic], driver="messagingv2")
        assert (notifier.retry, repr(notifier)) == (-1, f"<Notifier publisher_id='p' driver=messagingv2 topics=['{topic}']>")
        default = fastrpc.Notifier(t)
        assert default.topics == ["notifications"]
        # No driver given, none configured (options have no such setting): off, as oslo's.
        assert (default.is_enabled(), repr(default)) == (
            False, "<Notifier publisher_id=None driver=(none) topics=['notifications']>")
        with listening(t, topic, [ep]):
            notifier.info({}, "via.options", {})
            assert ep.seen.get(timeout=WAIT) == ("via.options", {})
    finally:
        t.cleanup()


def test_bad_arguments_are_refused_clearly():
    t = fastrpc.get_notification_transport(url=f"memory:///{uuid.uuid4().hex}")
    try:
        with pytest.raises(ValueError, match="unknown notification driver 'nope'"):
            fastrpc.Notifier(t, driver="nope")
        with pytest.raises(TypeError, match="topics must be a list"):
            fastrpc.Notifier(t, topics="notifications")
        with pytest.raises(ValueError, match="no endpoint has a method named after a priority"):
            fastrpc.get_notification_listener(t, [Target(topic="t")], [object()])
        with pytest.raises(fastrpc.InvalidTarget):
            fastrpc.get_notification_listener(t, [Target(server="s")], [InfoRecorder()])
        with pytest.raises(ValueError, match="at least one target"):
            fastrpc.get_notification_listener(t, [], [InfoRecorder()])
        with pytest.raises(TypeError, match="filter_rule"):
            fastrpc.get_notification_listener(t, [Target(topic="t")], [Recorder(filter_rule="^x")])
        with pytest.raises(ValueError, match="batch_size"):
            fastrpc.get_batch_notification_listener(t, [Target(topic="t")], [BatchRecorder()], batch_size=0)
        with pytest.raises(ValueError, match="batch_timeout"):
            fastrpc.get_batch_notification_listener(t, [Target(topic="t")], [BatchRecorder()], batch_size=2,
                                                    batch_timeout=-1)
        with pytest.raises(fastrpc.ExecutorLoadFailure):
            fastrpc.get_notification_listener(t, [Target(topic="t")], [InfoRecorder()], executor="eventlet")
    finally:
        t.cleanup()


def test_the_memory_driver_carries_notifications():
    # For unit tests of code above the wire: pools, requeue, batches as on a broker.
    t = fastrpc.get_notification_transport(url=f"memory:///{uuid.uuid4().hex}")
    ep, pooled = InfoRecorder(answers={"again": [NotificationResult.REQUEUE]}), InfoRecorder()
    batch = BatchRecorder()
    try:
        with listening(t, "mem", [ep], allow_requeue=True), listening(t, "mem", [pooled], pool="mem_pool"), \
                listening(t, "mem", [batch], pool="mem_batch", batch={"batch_size": 2, "batch_timeout": 5}):
            notifier = fastrpc.Notifier(t, "p", topics=["mem"], driver="messagingv2")
            notifier.info({}, "again", {"n": 1})
            notifier.info({}, "once", {"n": 2})
            assert sorted(ep.seen.get(timeout=WAIT)[0] for _ in range(3)) == ["again", "again", "once"]
            assert sorted(pooled.seen.get(timeout=WAIT)[0] for _ in range(2)) == ["again", "once"]
            assert [n for _, n, *_ in batch.batches.get(timeout=WAIT)] == [1, 2]
            with pytest.raises(NotificationPayloadError, match="cannot encode"):
                notifier.info({}, "bad", {"obj": object()})
    finally:
        t.cleanup()


def test_notification_filter_semantics():
    rule = NotificationFilter(publisher_id="^compute", event_type=r"instance\.create$",
                              context={"user": "^u"}, payload={"state": "act"})
    ok = ({"user": "u1"}, "compute.h1", "instance.create", {}, {"state": "active"})
    assert rule.match(*ok)
    assert not rule.match({"user": "u1"}, "xcompute.h1", *ok[2:])           # anchored at the start
    assert not rule.match({"user": "u1"}, "compute.h1", "x.instance.create", {}, {"state": "active"})
    assert not rule.match({}, *ok[1:])                                       # key missing
    assert not rule.match({"user": 1}, *ok[1:])                              # not a string
    assert not rule.match(*ok[:4], {"state": None})
    assert not rule.match(*ok[:1], None, *ok[2:])                            # no publisher
    assert rule.match(Context(user="u2"), *ok[1:])                           # a context object: its to_dict()
    assert NotificationFilter().match(None, None, None, None, None)         # no rule: everything
    assert "publisher_id='^compute'" in repr(rule)
    with pytest.raises(re.error):
        NotificationFilter(event_type="(")
    with pytest.raises(TypeError, match="payload must be a dict"):
        NotificationFilter(payload="state")


def test_a_notifier_on_an_rpc_transport_warns_and_works(broker, topic, caplog):
    rpc = fastrpc.get_rpc_transport(url=broker.url)
    ep = InfoRecorder()
    try:
        notifier = fastrpc.Notifier(rpc, "p", topics=[topic], driver="messagingv2")
        assert "Using an RPC transport for notifications" in caplog.text
        with listening(rpc, topic, [ep]):
            notifier.info({}, "rpc.transport", {})
            assert ep.seen.get(timeout=WAIT) == ("rpc.transport", {})
    finally:
        rpc.cleanup()


def test_stop_while_endpoints_run_loses_nothing(broker, transport, topic):
    # Stopped mid-stream: each notification was handled and acknowledged, or
    # is back in the queue for the next listener; none taken and dropped.
    release = threading.Event()
    handled = []

    class Slow:
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            release.wait(WAIT)
            handled.append(payload["n"])

    notifier = fastrpc.Notifier(transport, "p", topics=[topic], driver="messagingv2")
    for n in range(30):
        notifier.info({}, "s", {"n": n})
    with listening(transport, topic, [Slow()]) as listener:
        deadline = time.monotonic() + WAIT
        while queue_counts(broker, f"{topic}.info")[1] == 0:  # some taken
            assert time.monotonic() < deadline
            time.sleep(0.05)
        listener.stop()
        release.set()
    ready, unacked = queue_counts_settled(broker, f"{topic}.info")
    assert unacked == 0
    assert len(handled) == len(set(handled)) and len(handled) + ready == 30


def queue_counts_settled(broker, name: str) -> tuple[int, int]:
    deadline = time.monotonic() + WAIT
    while (counts := queue_counts(broker, name))[1] != 0:
        assert time.monotonic() < deadline, counts
        time.sleep(0.1)
    return counts
