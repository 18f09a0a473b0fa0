"""The ``fastrpc`` command: one entry point, one small function per subcommand.

    fastrpc [--db URL] service-list [--host H] [--binary B] [--down-time S] [--json]
    fastrpc [--db URL] service-disable HOST BINARY --reason TEXT
    fastrpc [--db URL] service-enable HOST BINARY
    fastrpc [--db URL] service-force-down HOST BINARY [--unset]

The registry's database is ``--db``, else ``$FASTRPC_DB``, else a SQLite file
under ``$XDG_STATE_HOME/fastrpc``. Exit status: 0 done, 1 an error the
message on stderr explains (such as an unknown service), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from fastrpc.service import Registry, ServiceRecord

# oslo's service_down_time: how long after its last report a service counts as up.
DEFAULT_DOWN_TIME = 60.0

LIST_KEYS = ("binary", "host", "zone", "status", "state", "updated_at", "disabled_reason")

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A failure to report on stderr with exit status 1."""


def _open_registry(args: argparse.Namespace) -> Registry:
    # Imported here so that commands which need no database (and no
    # SQLAlchemy) stay usable without it.
    from fastrpc.service import Registry, RegistryError

    try:
        return Registry(Registry.resolve_url(args.db))
    except (ImportError, RegistryError) as exc:
        raise CommandError(str(exc)) from None


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


def render_table(rows: Sequence[dict[str, Any]], keys: Sequence[str], out: TextIO) -> None:
    """Rows as aligned columns under title-case headers; None shows as '-'."""
    headers = [key.replace("_", " ").title() for key in keys]
    cells = [["-" if row[key] is None else str(row[key]) for key in keys] for row in rows]
    widths = [max([len(h)] + [len(line[i]) for line in cells]) for i, h in enumerate(headers)]
    for line in [headers, *cells]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n")


def cmd_service_list(args: argparse.Namespace) -> int:
    registry = _open_registry(args)
    try:
        records = registry.services(host=args.host, binary=args.binary)
        now = registry.now()
    finally:
        registry.close()
    rows = [_service_row(r, args.down_time, now, precise=args.json) for r in records]
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


# --- parser --------------------------------------------------------------------


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _add_service_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("host", metavar="HOST")
    parser.add_argument("binary", metavar="BINARY")


def build_parser() -> argparse.ArgumentParser:
    db_help = (
        "service registry database (SQLAlchemy URL); default $FASTRPC_DB, else a SQLite file under $XDG_STATE_HOME/fastrpc"
    )
    parser = argparse.ArgumentParser(prog="fastrpc", description="fastrpc command line tools.")
    parser.add_argument("--db", metavar="URL", help=db_help)
    # --db is accepted after the command too; SUPPRESS keeps a value given
    # before it from being reset.
    db_after = argparse.ArgumentParser(add_help=False)
    db_after.add_argument("--db", metavar="URL", default=argparse.SUPPRESS, help=db_help)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[db_after])
        sub.set_defaults(handler=handler)
        return sub

    sub = command("service-list", cmd_service_list, "List registered services and whether each is up.")
    sub.add_argument("--host", help="only services on this host")
    sub.add_argument("--binary", help="only services with this binary")
    sub.add_argument(
        "--down-time",
        type=_non_negative,
        default=DEFAULT_DOWN_TIME,
        metavar="SECONDS",
        help=f"a service is up while its last report is at most this old (default {DEFAULT_DOWN_TIME:g})",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"fastrpc {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
