"""A connection owner's state as an operator sees it, and its log lines.

Each owner (the driver's sending connection, each listener) has one
:class:`Link`. It is connected, reconnecting (since when, to which host,
which attempt), and it logs one line per change of that state:
lost and why, the first failed round of a reconnect (and again only when the
reason changes), connected again, consumers restored. Never one line per
attempt or per caller thread: during an outage the log says what happened,
not how often.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastrpc import metrics
from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp import spec

LOG = logging.getLogger("fastrpc.drivers.amqp")

CONNECTED = "connected"
RECONNECTING = "reconnecting"
NEW = "new"


@dataclass(frozen=True)
class LinkHealth:
    """One connection owner's state (``Transport.health()`` lists them)."""

    name: str
    state: str  # "new", "connected" or "reconnecting"
    host: str | None  # connected to, or trying next
    since: float | None  # time.time() of the last change of state
    attempt: int  # failed attempts since the connection was lost
    error: str | None  # why it was lost or why the last attempt failed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def loss_reason(why: BaseException | str) -> str:
    """A short, fixed name for why a connection was lost (a metrics label)."""
    if isinstance(why, amqp_exc.ProbeTimeout):
        return "probe_timeout"
    if isinstance(why, amqp_exc.HeartbeatTimeout):
        return "heartbeat_timeout"
    if isinstance(why, amqp_exc.ConnectionLost):
        return "connection_lost"
    if isinstance(why, amqp_exc.ConnectionClosed):
        return "closed" if why.reply_code == spec.REPLY_SUCCESS else "closed_by_broker"
    if isinstance(why, BaseException):
        return type(why).__name__
    return "other"


class Link:
    """State and log lines of one connection owner named ``name`` (as logs
    say it); ``kind`` ("sending" or "listener") labels its reconnects in the metrics."""

    def __init__(self, name: str, kind: str = "sending") -> None:
        self.name = name
        self.kind = kind
        self._lock = threading.Lock()
        self._state = NEW
        self._host: str | None = None
        self._since: float | None = None
        self._lost_at = 0.0  # monotonic
        self._attempt = 0
        self._error: str | None = None
        self._logged_error: str | None = None  # the failure kind last logged

    def health(self) -> LinkHealth:
        with self._lock:
            return LinkHealth(self.name, self._state, self._host, self._since, self._attempt, self._error)


    def connected(self, address: str) -> None:
        with self._lock:
            was, attempts = self._state, self._attempt
            self._state, self._host, self._since = CONNECTED, address, time.time()
            self._attempt, self._error, self._logged_error = 0, None, None
            took = time.monotonic() - self._lost_at
        if was == RECONNECTING:
            LOG.info("%s: connected to %s again after %.1fs (%d failed attempts)", self.name, address,
                        took, attempts)
        else:
            LOG.debug("%s: connected to %s", self.name, address)

    def lost(self, address: str | None, why: BaseException | str, reason: str | None = None) -> None:
        """The connection to ``address`` died (once per connection); its
        owner reconnects. ``reason``: the short name of ``why`` when the
        owner knows better than :func:`loss_reason` (it closed the connection itself)."""
        with self._lock:
            if self._state == RECONNECTING:
                return
            self._state, self._since, self._lost_at = RECONNECTING, time.time(), time.monotonic()
            self._attempt, self._error = 0, str(why)
            self._logged_error = None
        if metrics.on:
            metrics.reconnect(self.kind, reason or loss_reason(why))
        LOG.warning("%s: lost the connection to %s: %s; reconnecting", self.name, address, why)

    def attempt_failed(self, error: BaseException, next_host: str | None, delay: float | None) -> None:
        """A round of connection attempts failed; the next in ``delay``
        seconds (None: when a sender next needs the connection)."""
        kind = type(error).__name__
        with self._lock:
            if self._state != RECONNECTING:
                self._state, self._since, self._lost_at = RECONNECTING, time.time(), time.monotonic()
                self._attempt = 0
            self._attempt += 1
            self._host, self._error = next_host, str(error)
            repeat = self._logged_error == kind
            self._logged_error = kind
            attempt = self._attempt
        when = "at the next send" if delay is None else f"in {delay:.1f}s"
        if repeat:
            LOG.debug("%s: attempt %d failed: %s; next %s", self.name, attempt, error, when)
        else:
            LOG.warning("%s: cannot connect (attempt %d): %s; next attempt to %s %s (further "
                        "failures of this kind are logged at debug level)", self.name, attempt, error,
                        next_host, when)

    def restored(self, what: str) -> None:
        """After a reconnect: what consumes again (logged once per reconnect)."""
        LOG.info("%s: %s restored", self.name, what)
