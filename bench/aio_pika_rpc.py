"""aio-pika's RPC pattern as a contender of ``rpc_scenarios.py``: its server and client processes.

What a Python user would pick instead of an oslo-style RPC library: aio-pika's
``patterns.JsonRPC`` (``patterns.RPC`` with JSON instead of pickle: the bench
unpickles nothing, and fastrpc's wire is JSON too), set up as aio-pika's own
documentation shows it: ``connect_robust``, a channel with its defaults
(publisher confirms on), ``register(..., auto_delete=True)`` on the server and
``call`` on the client. The pattern sends each call through the default
exchange to a queue named after the method, and answers through the client's
reply queue; it has no cast (a call always waits for its answer), so the casts
scenario does not apply to it.

Both processes speak the protocol of ``rpc_scenarios.py``'s children: one JSON
line ``{"ready": true}`` once up; the server runs until stdin closes; the client
answers each ``calls SECONDS`` line on stdin with one JSON line of results,
its callers being asyncio tasks on one connection and one channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from bench import common

CALL_TIMEOUT = 30.0


def method_name(topic: str) -> str:
    """The echo method's name, and so its queue's: one per run of the bench."""
    return f"{topic}.echo"


async def _echo(*, payload: str) -> str:
    return payload


async def _serve(url: str, topic: str) -> None:
    import aio_pika
    from aio_pika.patterns import JsonRPC

    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    rpc = await JsonRPC.create(channel)
    await rpc.register(method_name(topic), _echo, auto_delete=True)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # the parent closes our stdin
    await rpc.close()
    await connection.close()
    print(json.dumps({"stopped": True}), flush=True)


async def _calls(rpc: Any, method: str, payload: str, tasks: int, seconds: float) -> dict[str, Any]:
    """``tasks`` callers on one channel for ``seconds``."""
    latencies: list[float] = []

    async def caller(deadline: float) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            if await rpc.call(method, kwargs={"payload": payload}) != payload:
                raise common.BenchError("echo returned a different payload")
            latencies.append(time.perf_counter() - t0)

    t_start = time.perf_counter()
    deadline = t_start + seconds
    await asyncio.wait_for(asyncio.gather(*(caller(deadline) for _ in range(tasks))), seconds + CALL_TIMEOUT)
    return common.latency_summary(latencies, time.perf_counter() - t_start)


async def _client(url: str, topic: str, tasks: int, payload: str) -> None:
    import aio_pika
    from aio_pika.patterns import JsonRPC

    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    rpc = await JsonRPC.create(channel)
    method = method_name(topic)
    for _ in range(20):  # warm up: reply queue, code paths
        if await asyncio.wait_for(rpc.call(method, kwargs={"payload": payload}), CALL_TIMEOUT) != payload:
            raise common.BenchError("echo returned a different payload")
    print(json.dumps({"ready": True}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        what, seconds = line.split()
        if what != "calls":
            raise common.BenchError(f"aio-pika has no {what!r} (its RPC pattern has no casts)")
        print(json.dumps(await _calls(rpc, method, payload, tasks, float(seconds))), flush=True)
    await rpc.close()
    await connection.close()


def _quiet() -> None:
    logging.basicConfig(level=logging.ERROR)


def serve(url: str, topic: str) -> int:
    """Run the echo server until stdin closes."""
    _quiet()
    asyncio.run(_serve(url, topic))
    return 0


def client_loop(url: str, topic: str, tasks: int, payload: str) -> int:
    """A client kept between rounds, ``tasks`` asyncio tasks calling at once."""
    _quiet()
    asyncio.run(_client(url, topic, tasks, payload))
    return 0
