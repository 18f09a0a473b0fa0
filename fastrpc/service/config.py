"""The configuration file of the service tools: an oslo-style INI file.

Which file: the one named (``--config-file`` of the ``fastrpc`` command),
else ``$FASTRPC_CONFIG``, else ``/etc/fastrpc/fastrpc.conf`` when it exists.
What it may hold, under the names nova and cinder use::

    [database]
    connection = postgresql://fastrpc:secret@db.example/fastrpc

    [DEFAULT]
    service_down_time = 60

A default file that is not there is no error; a file named explicitly (by
argument or variable) that cannot be read is, and so is a value that makes
no sense. Error messages never show the database URL (it may hold a
password).
"""

from __future__ import annotations

import configparser
import math
import os
from dataclasses import dataclass

from fastrpc.exceptions import ConfigurationError

ENV_CONFIG = "FASTRPC_CONFIG"
DEFAULT_CONFIG = "/etc/fastrpc/fastrpc.conf"


@dataclass(frozen=True)
class ServiceConfig:
    """What a configuration file says (None: it says nothing of it)."""

    path: str | None = None
    database_connection: str | None = None
    service_down_time: float | None = None


def load_config(path: str | None = None) -> ServiceConfig:
    """The configuration: ``path``, else ``$FASTRPC_CONFIG``, else the default file if it exists."""
    named = path or os.environ.get(ENV_CONFIG) or None
    chosen = named or DEFAULT_CONFIG
    if named is None and not os.path.exists(chosen):
        return ServiceConfig()
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(chosen, encoding="utf-8") as handle:
            parser.read_file(handle)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigurationError(f"cannot read the configuration file {chosen}: {reason}") from None
    except configparser.Error as exc:
        # The parser's message quotes the offending line, which may hold a password.
        raise ConfigurationError(f"the configuration file {chosen} is not an INI file "
                                 f"({type(exc).__name__})") from None
    connection = parser.get("database", "connection", fallback="").strip() or None
    down_time = parser.get("DEFAULT", "service_down_time", fallback="").strip() or None
    return ServiceConfig(chosen, connection, _seconds(down_time, "service_down_time", chosen))


def _seconds(value: str | None, name: str, path: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"{name} in {path} must be a number of seconds >= 0, not {value!r}")
    return seconds
