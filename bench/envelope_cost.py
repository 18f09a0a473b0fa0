"""CPU instructions of each envelope step of one call, JSON against msgpack.

The four steps a call's bodies go through (the client encodes the request,
the server decodes it, encodes the reply, the client decodes that), on the
150-byte echo of ``rpc_scenarios.py``, with the codec ``fastrpc.envelope``
is bound to (compiled when built; ``--pure`` for the pure-Python one).
Counted with callgrind like ``call_cost.py``: each step runs N1 and N2 times
in a child process under valgrind, and (count(N2) - count(N1)) / (N2 - N1)
is one step's cost, start-up cancelling out. Every run has the same hash
seed (with random ones start-up differs by thousands of instructions) and
the cyclic garbage collector off while a step runs (as ``timeit`` has it:
a collection falls at other points in the two runs). No broker is needed.

    python bench/envelope_cost.py [--ops 1000,6000] [--pure] [--markdown] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from bench.call_cost import run_counted
from bench.rpc_scenarios import PAYLOAD

STEPS = ("encode request", "decode request", "encode reply", "decode reply")
MODES = ("json", "msgpack")
# The ids a call carries, as long as the ones fastrpc makes.
UNIQUE_ID, MSG_ID, REPLY_Q = "a" * 32, "b" * 32, "reply_" + "c" * 32


def run_step(mode: str, step: str, ops: int) -> int:  # runs in its own process
    """Run one step ``ops`` times."""
    from fastrpc import envelope

    binary = mode == "msgpack"
    ctype = envelope.content_type(binary)
    message = {"method": "echo", "args": {"payload": PAYLOAD}}
    request = envelope.encode_request(message, {}, UNIQUE_ID, MSG_ID, REPLY_Q, None, binary)
    reply = envelope.encode_reply(MSG_ID, UNIQUE_ID, PAYLOAD, None, True, binary)
    if envelope.decode_request(request, ctype).message != message:
        raise common.BenchError("the request does not decode to what was encoded")
    if envelope.decode_reply(reply, ctype).result != PAYLOAD:
        raise common.BenchError("the reply does not decode to what was encoded")
    encode_request, decode_request = envelope.encode_request, envelope.decode_request
    encode_reply, decode_reply = envelope.encode_reply, envelope.decode_reply
    gc.disable()
    if step == "encode request":
        for _ in range(ops):
            encode_request(message, {}, UNIQUE_ID, MSG_ID, REPLY_Q, None, binary)
    elif step == "decode request":
        for _ in range(ops):
            decode_request(request, ctype)
    elif step == "encode reply":
        for _ in range(ops):
            encode_reply(MSG_ID, UNIQUE_ID, PAYLOAD, None, True, binary)
    else:
        for _ in range(ops):
            decode_reply(reply, ctype)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="1000,6000", help="the two step counts N1,N2 (default 1000,6000)")
    p.add_argument("--pure", action="store_true", help="count the pure-Python codec")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--run-step", nargs=3, metavar=("MODE", "STEP", "OPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run_step:
        mode, step, ops = args.run_step
        return run_step(mode, step, int(ops))
    low, high = common.call_counts(p, args.ops)
    env = common.python_env(no_extensions=args.pure)
    # One hash seed for every run: with random ones, start-up differs by
    # thousands of instructions from run to run (dict and set layouts).
    env["PYTHONHASHSEED"] = "0"
    costs: dict[str, dict[str, float]] = {mode: {} for mode in MODES}
    for mode in MODES:
        for step in STEPS:
            counts = [run_counted(common.python_cmd("envelope_cost.py", "--run-step", mode, step, str(n)), env,
                                  f"{mode} {step} x{n}") for n in (low, high)]
            costs[mode][step] = (counts[1] - counts[0]) / (high - low)
    rows: list[list[Any]] = []
    for step in (*STEPS, "all four"):
        cells = [costs[m][step] if step in costs[m] else sum(costs[m].values()) for m in MODES]
        rows.append([step, *(f"{c / 1000:.1f}k" for c in cells), f"{cells[1] / cells[0]:.2f}"])
    codec = "pure-Python" if args.pure else "compiled (when built)"
    print(f"instructions per step, {codec} codec")
    print((common.format_markdown if args.markdown else common.format_table)(
        ["step", "json", "msgpack", "msgpack / json"], rows))
    common.write_json(args.json, {"ops": [low, high], "pure": args.pure, "instructions_per_step": costs})
    return 0


if __name__ == "__main__":
    common.run_main(main, "envelope_cost")
