"""Endpoints and helpers shared by the server, notification listener and
tracing tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastrpc import tracing

WAIT = 10.0  # how long a gated call waits to be released before it fails


class Gate:
    """Endpoint whose calls block until released, counting concurrency."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.calls: list[int] = []
        self.threads: set[str] = set()
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def work(self, ctxt, i):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.calls.append(i)
            self.threads.add(threading.current_thread().name)
        self.entered.release()
        try:
            assert self.release.wait(WAIT)
            return i
        finally:
            with self.lock:
                self.running -= 1

    def ping(self, ctxt):
        return "pong"


def in_thread(func: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``func`` in a started thread; what it raises lands in the returned list."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            func()
        except BaseException as exc:  # checked by the caller
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, raised


def failure_of_a_start_ended_by_cleanup(server: Any, transport: Any) -> list[BaseException]:
    """Start ``server`` (whose broker cannot be reached) in a thread, check
    that start() waits, clean ``transport`` up: what start() raised then."""
    starting, failed = in_thread(server.start)
    starting.join(1.0)
    assert starting.is_alive(), failed  # waiting for the broker
    transport.cleanup()
    starting.join(WAIT)
    assert not starting.is_alive()
    return failed


@contextlib.contextmanager
def notification_listening(lib: ModuleType, transport: Any, topic: str, endpoints: list,
                           batch: dict | None = None, **kwargs: Any) -> Iterator[Any]:
    """A notification listener of ``lib`` (``fastrpc`` or ``oslo_messaging``:
    the same names in both) on ``topic``, started; stopped and waited for
    after. ``batch``: batch_size and batch_timeout for a batch listener."""
    targets = [lib.Target(topic=topic)]
    if batch is None:
        listener = lib.get_notification_listener(transport, targets, endpoints, **kwargs)
    else:
        listener = lib.get_batch_notification_listener(transport, targets, endpoints, **batch, **kwargs)
    listener.start()
    try:
        yield listener
    finally:
        listener.stop()
        listener.wait()


@contextlib.contextmanager
def in_memory_tracing() -> Iterator[InMemorySpanExporter]:
    """fastrpc's tracing on, into an in-memory exporter of the real SDK; off after."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(tracer_provider=provider)
    try:
        yield exporter
    finally:
        tracing.disable()
        provider.shutdown()
