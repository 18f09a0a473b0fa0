"""The ``fastrpc`` command: one entry point, one small function per subcommand.

    fastrpc [--db URL] [--config-file PATH] service-list [--host H] [--binary B] [--down-time S] [--json]
    fastrpc [--db URL] service-disable HOST BINARY --reason TEXT
    fastrpc [--db URL] service-enable HOST BINARY
    fastrpc [--db URL] service-force-down HOST BINARY [--unset]
    fastrpc demo [--url URL] [--seconds S] [--raw]
    fastrpc bench [--url URL] [--scenarios LIST] [--seconds S] [--rounds N] [--executor E] [--payload B] [--json]
    fastrpc doctor [--url URL] [--mgmt-url URL] [--json] [--watch [--rounds N]] [--fix] [--yes]
    fastrpc call URL TOPIC METHOD [--arg KEY=VALUE ...] [--server S] [--timeout T]
    fastrpc cast URL TOPIC METHOD [--arg KEY=VALUE ...] [--server S] [--fanout]

The registry's database is ``--db``, else ``$FASTRPC_DB``, else ``[database]
connection`` of the configuration file (``--config-file``, else
``$FASTRPC_CONFIG``, else ``/etc/fastrpc/fastrpc.conf`` if it exists), else a
SQLite file under ``$XDG_STATE_HOME/fastrpc``; ``service-list``'s down time is
``--down-time``, else ``[DEFAULT] service_down_time`` of that file, else 60 s.
Exit status: 0 done, 1 an error the
message on stderr explains (an unknown service, a remote error, a
timeout), 2 bad usage. ``doctor``: 0 healthy, 1 findings, 2 the broker could
not be examined (its management API unreachable, refusing, or answering
garbage) or bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastrpc.argtypes import non_negative, positive_int
from fastrpc.console import LiveView, render_table
from fastrpc.exceptions import ConfigurationError

if TYPE_CHECKING:
    from fastrpc.service import Registry, ServiceRecord

# oslo's service_down_time: how long after its last report a service counts as up.
DEFAULT_DOWN_TIME = 60.0

LIST_KEYS = ("binary", "host", "zone", "status", "state", "updated_at", "disabled_reason")

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A failure to report on stderr, with exit status ``status`` (1 unless said)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _open_registry(args: argparse.Namespace) -> Registry:
    # Imported here so that commands which need no database (and no
    # SQLAlchemy) stay usable without it.
    from fastrpc.service import Registry, RegistryError

    try:
        return Registry(Registry.resolve_url(args.db, args.config_file))
    except (ImportError, RegistryError, ConfigurationError) as exc:
        raise CommandError(str(exc)) from None


def _down_time(args: argparse.Namespace) -> float:
    """``--down-time``, else the configuration file's ``service_down_time``, else 60."""
    if args.down_time is not None:
        return float(args.down_time)
    from fastrpc.service.config import load_config

    try:
        configured = load_config(args.config_file).service_down_time
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    return DEFAULT_DOWN_TIME if configured is None else configured


# --- service-* ---------------------------------------------------------------


def _format_time(value: datetime | None, *, precise: bool) -> str | None:
    if value is None:
        return None
    return value.isoformat() if precise else value.strftime("%Y-%m-%d %H:%M:%S")


def _service_row(record: ServiceRecord, down_time: float, now: datetime, *, precise: bool) -> dict[str, Any]:
    from fastrpc.service import is_up

    return {
        "binary": record.binary,
        "host": record.host,
        "zone": record.availability_zone,
        "status": "disabled" if record.disabled else "enabled",
        "state": "up" if is_up(record, down_time, now) else "down",
        # A stopped service's updated_at is a marker, not a report time.
        "updated_at": None if record.stopped else _format_time(record.updated_at, precise=precise),
        "disabled_reason": record.disabled_reason,
    }


def cmd_service_list(args: argparse.Namespace) -> int:
    down_time = _down_time(args)
    registry = _open_registry(args)
    try:
        records = registry.services(host=args.host, binary=args.binary)
        now = registry.now()
    finally:
        registry.close()
    rows = [_service_row(r, down_time, now, precise=args.json) for r in records]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_table(rows, LIST_KEYS, sys.stdout)
    return 0


def _modify(args: argparse.Namespace, change: Callable[[Registry], object]) -> int:
    from fastrpc.service import UnknownService

    registry = _open_registry(args)
    try:
        change(registry)
    except UnknownService as exc:
        raise CommandError(f"{exc.args[0]} (see fastrpc service-list)") from None
    finally:
        registry.close()
    return 0


def cmd_service_disable(args: argparse.Namespace) -> int:
    return _modify(args, lambda r: r.set_disabled(args.host, args.binary, True, args.reason))


def cmd_service_enable(args: argparse.Namespace) -> int:
    return _modify(args, lambda r: r.set_disabled(args.host, args.binary, False))


def cmd_service_force_down(args: argparse.Namespace) -> int:
    return _modify(args, lambda r: r.set_forced_down(args.host, args.binary, not args.unset))


# --- call, cast ------------------------------------------------------------------


def _keyword(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as a keyword argument: VALUE as JSON when it is JSON
    (``n=3``, ``ok=true``, ``ids=[1,2]``), else as the string it is."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a name, not {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _send(args: argparse.Namespace, send: Callable[[Any, dict[str, Any]], Any]) -> Any:
    from fastrpc import Target, get_rpc_client, get_rpc_transport

    transport = get_rpc_transport(url=args.url)
    try:
        target = Target(topic=args.topic, server=args.server, exchange=args.exchange,
                        fanout=bool(getattr(args, "fanout", False)))
        client = get_rpc_client(transport, target, timeout=args.timeout)
        return send(client, dict(args.arg))
    except Exception as exc:  # a remote error, a timeout, a refused URL: said on stderr
        raise CommandError(f"{type(exc).__name__}: {exc}") from None
    finally:
        transport.cleanup()


def cmd_call(args: argparse.Namespace) -> int:
    result = _send(args, lambda client, kwargs: client.call({}, args.method, **kwargs))
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


def cmd_cast(args: argparse.Namespace) -> int:
    _send(args, lambda client, kwargs: client.cast({}, args.method, **kwargs))
    return 0


def _add_send_args(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("url", metavar="URL", help="transport URL (rabbit://user:password@host:port/vhost)")
    parser.add_argument("topic", metavar="TOPIC")
    parser.add_argument("method", metavar="METHOD")
    parser.add_argument("--arg", type=_keyword, action="append", default=[], metavar="KEY=VALUE",
                        help="a keyword argument of the method (VALUE read as JSON when it is); repeatable")
    parser.add_argument("--server", help=f"{what} this server only (topic.server)")
    parser.add_argument("--exchange", help="the target's exchange (default: the transport's)")
    parser.add_argument("--timeout", type=non_negative, default=30.0, metavar="SECONDS",
                        help="how long to wait for the reply or the broker (default 30)")


# --- demo ----------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    # The demo is a program of its own (python -m fastrpc.demo, as make demo runs it).
    import subprocess

    argv = ["--seconds", str(args.seconds)] + (["--url", args.url] if args.url else []) + (["--raw"] if args.raw else [])
    sys.stdout.flush()
    return subprocess.call([sys.executable, "-m", "fastrpc.demo", *argv])


def cmd_bench(args: argparse.Namespace) -> int:
    from fastrpc.benchmark import run_command

    return run_command(args)


# --- doctor --------------------------------------------------------------------

DOCTOR_KEYS = ("check", "subject", "detail", "fix")
WATCH_KEYS = ("change", "since", *DOCTOR_KEYS)


def _doctor_round(api: Any, args: argparse.Namespace, before: Any) -> tuple[list[Any], Any]:
    from fastrpc.doctor import examine

    return examine(api, interval=args.interval, before=before, backlog=args.backlog,
                   channel_limit=args.channels, growth=args.growth)


def _print_findings(findings: list[Any], as_json: bool) -> None:
    if as_json:
        json.dump([f.as_dict() for f in findings], sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif findings:
        render_table([{k: getattr(f, k) for k in DOCTOR_KEYS} for f in findings], DOCTOR_KEYS, sys.stdout)
    else:
        sys.stdout.write("healthy: nothing found\n")


# The least time between two --watch looks (--interval 0 would hammer the API).
WATCH_MIN_INTERVAL = 0.5


def _watch(api: Any, args: argparse.Namespace) -> list[Any]:
    """Look every ``--interval`` seconds (at least WATCH_MIN_INTERVAL) until
    ``--rounds`` looks (or ^C); each look shows what is new and since when
    each finding has been there, and names the findings gone since the
    previous look. With ``--json``, one JSON object per look and line. An API
    that fails to answer after the first look is shown as that look, and the
    watch goes on; the findings of the last look that answered are returned."""
    from fastrpc.doctor import ManagementError
    from fastrpc.doctor.watch import ChangeTracker, finding_key

    tracker = ChangeTracker()
    sampled = None
    findings: list[Any] = []
    looks = 0
    with LiveView(sys.stdout, styled=False if args.json else None) as view:
        while True:
            looks += 1
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            heading = f"fastrpc doctor: {api.base}  {stamp[11:19]}  look {looks}"
            try:
                findings, sampled = _doctor_round(api, args, sampled)
            except ManagementError as exc:
                if looks == 1:
                    raise
                if args.json:
                    sys.stdout.write(json.dumps({"look": looks, "time": stamp, "error": str(exc)}) + "\n")
                    sys.stdout.flush()
                else:
                    view.show(heading, [], WATCH_KEYS, empty=f"the management API did not answer: {exc}")
            else:
                look = tracker.update(findings, stamp)
                if args.json:
                    doc = {"look": looks, "time": stamp,
                           "findings": [{**f.as_dict(), "since": look.since[finding_key(f)],
                                         "new": look.is_new(f)} for f in findings],
                           "gone": [{"check": check, "subject": subject} for check, subject in look.gone]}
                    sys.stdout.write(json.dumps(doc, default=str) + "\n")
                    sys.stdout.flush()
                else:
                    rows = [{"change": "new" if look.is_new(f) else None, "since": look.since[finding_key(f)][11:19],
                             **{k: getattr(f, k) for k in DOCTOR_KEYS}} for f in findings]
                    gone = [f"gone since the last look: {check} {subject}" for check, subject in look.gone]
                    view.show(heading, rows, WATCH_KEYS, footer=gone, empty="healthy: nothing found")
            if args.rounds is not None and looks >= args.rounds:
                return findings
            time.sleep(max(args.interval, WATCH_MIN_INTERVAL))


def cmd_doctor(args: argparse.Namespace) -> int:
    from fastrpc.doctor import ManagementError, fix_zombies, management_api

    try:
        api = management_api(args.mgmt_url, args.url, timeout=args.timeout)
        if args.watch:
            findings = _watch(api, args)
        else:
            findings, _ = _doctor_round(api, args, None)
            _print_findings(findings, args.json)
        zombies = [f for f in findings if f.check == "zombie-queue"]
        if args.fix and zombies:
            if not args.yes:
                sys.stderr.write(f"Delete {len(zombies)} zombie queue(s) and their messages? [y/N] ")
                sys.stderr.flush()
                if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                    raise CommandError("nothing deleted")
            for finding in fix_zombies(api, zombies):
                sys.stderr.write(f"deleted {finding.subject}\n")
            findings = [f for f in findings if f.check != "zombie-queue"]
    except ManagementError as exc:
        # The broker could not be examined at all: not the same as findings (1).
        raise CommandError(str(exc), status=2) from None
    except KeyboardInterrupt:
        return 130
    return 1 if findings else 0


# --- parser --------------------------------------------------------------------


def _add_service_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", metavar="HOST")
    parser.add_argument("binary", metavar="BINARY")


def build_parser() -> argparse.ArgumentParser:
    db_help = (
        "service registry database (SQLAlchemy URL); default $FASTRPC_DB, else a SQLite file under $XDG_STATE_HOME/fastrpc"
    )
    parser = argparse.ArgumentParser(prog="fastrpc", description="fastrpc command line tools.")
    config_help = ("configuration file ([database] connection, [DEFAULT] service_down_time); default "
                   "$FASTRPC_CONFIG, else /etc/fastrpc/fastrpc.conf if it exists")
    parser.add_argument("--db", metavar="URL", help=db_help)
    parser.add_argument("--config-file", metavar="PATH", help=config_help)
    # --db and --config-file are accepted after the command too; SUPPRESS
    # keeps a value given before it from being reset.
    db_after = argparse.ArgumentParser(add_help=False)
    db_after.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help=db_help)
    db_after.add_argument("--config-file", metavar="PATH", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help_text: str, db: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[db_after] if db else [])
        sub.set_defaults(handler=handler)
        return sub

    sub = command("service-list", cmd_service_list, "List registered services and whether each is up.")
    sub.add_argument("--host", help="only services on this host")
    sub.add_argument("--binary", help="only services with this binary")
    sub.add_argument(
        "--down-time",
        type=non_negative,
        default=None,
        metavar="SECONDS",
        help="a service is up while its last report is at most this old (default: service_down_time of the "
        f"configuration file, else {DEFAULT_DOWN_TIME:g})",
    )
    sub.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    sub = command("service-disable", cmd_service_disable, "Disable a service (it keeps running and reporting).")
    _add_service_args(sub)
    sub.add_argument("--reason", required=True, help="why, shown by service-list")

    sub = command("service-enable", cmd_service_enable, "Enable a disabled service.")
    _add_service_args(sub)

    sub = command("service-force-down", cmd_service_force_down, "Show a service down whatever it reports.")
    _add_service_args(sub)
    sub.add_argument("--unset", action="store_true", help="lift a forced down")

    sub = command("demo", cmd_demo, "Run the demo: RPC calls, casts and services on a private broker it "
                  "starts itself (or --url), with the rates it measured.", db=False)
    sub.add_argument("--url", help="use this broker instead of a private one (amqp://...)")
    sub.add_argument("--seconds", type=non_negative, default=6.0, metavar="SECONDS",
                     help="time for each measured phase (default 6, as make demo)")
    sub.add_argument("--raw", action="store_true", help="the connection layer only: publish and consume")

    from fastrpc.benchmark import add_arguments as add_bench_arguments

    sub = command("bench", cmd_bench, "Measure RPC scenarios (sequential and concurrent calls, casts end to end) "
                  "against a private broker it starts itself (or --url), with the server in its own process.",
                  db=False)
    add_bench_arguments(sub)

    sub = command("doctor", cmd_doctor, "Find what is wrong with the broker (management HTTP API): zombie "
                  "queues, backlogs, channel leaks, the cluster's health. Exit status 1 when it finds anything.",
                  db=False)
    sub.add_argument("--url", help="transport URL: its hosts' port 15672 with its user and password")
    sub.add_argument("--mgmt-url", help="management API, http://user:password@host:15672/ "
                     "(default $FASTRPC_MGMT_URL, else from --url)")
    sub.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    sub.add_argument("--watch", action="store_true", help="refresh in place every --interval seconds")
    sub.add_argument("--rounds", type=positive_int, help="with --watch: stop after this many looks")
    sub.add_argument("--fix", action="store_true", help="delete the zombie queues found (asks first)")
    sub.add_argument("--yes", action="store_true", help="with --fix: do not ask")
    sub.add_argument("--interval", type=non_negative, default=2.0, metavar="SECONDS",
                     help="between the two samples that show growth, and between --watch looks (default 2; "
                     f"0: one sample, no growth, and --watch looks {WATCH_MIN_INTERVAL:g} s apart)")
    sub.add_argument("--backlog", type=positive_int, default=1000, metavar="MESSAGES",
                     help="a consumed queue holding this many messages is a backlog (default 1000)")
    sub.add_argument("--growth", type=positive_int, default=10, metavar="MESSAGES",
                     help="a consumed queue that grew this much between samples is a backlog (default 10)")
    sub.add_argument("--channels", type=positive_int, default=100, metavar="N",
                     help="a connection with more channels than this leaks them (default 100)")
    sub.add_argument("--timeout", type=non_negative, default=10.0, metavar="SECONDS",
                     help="for each request to the API (default 10)")

    sub = command("call", cmd_call, "Call METHOD on a service and print its result as JSON.", db=False)
    _add_send_args(sub, "call")
    sub = command("cast", cmd_cast, "Cast METHOD to a service (no reply).", db=False)
    _add_send_args(sub, "cast to")
    sub.add_argument("--fanout", action="store_true", help="to every server of the topic")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"fastrpc {args.command}: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
