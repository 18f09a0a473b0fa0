"""``fastrpc doctor``: what is wrong with a RabbitMQ broker, read from its
management HTTP API (checks in :mod:`fastrpc.doctor.checks`).

:func:`examine` takes one look (or two, ``interval`` seconds apart, to see
what grows) and returns the findings; :func:`management_api` finds the API
from ``--mgmt-url``, ``$FASTRPC_MGMT_URL`` or the transport URL's hosts on
port 15672 with its credentials.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from datetime import datetime, timezone
from typing import Any

from fastrpc.doctor import checks
from fastrpc.doctor.api import DEFAULT_PORT, ManagementAPI, ManagementError
from fastrpc.doctor.checks import Finding

__all__ = ["ENV_MGMT_URL", "Finding", "ManagementAPI", "ManagementError", "examine", "fix_zombies",
           "management_api"]

ENV_MGMT_URL = "FASTRPC_MGMT_URL"


def management_api(mgmt_url: str | None = None, transport_url: str | None = None,
                   timeout: float = 10.0) -> ManagementAPI:
    """The API to talk to: ``mgmt_url``, else ``$FASTRPC_MGMT_URL``, else the
    first host of ``transport_url`` whose port 15672 answers (its user and
    password)."""
    url = mgmt_url or os.environ.get(ENV_MGMT_URL)
    if url:
        return ManagementAPI(url, timeout=timeout)
    if not transport_url:
        raise ManagementError("no management URL: give --mgmt-url, $FASTRPC_MGMT_URL or a transport URL (--url)")
    from fastrpc.transport_url import TransportURL

    parsed = TransportURL.parse(None, transport_url)
    errors = []
    for host in parsed.hosts or []:
        hostname = host.hostname or "localhost"
        netloc = f"[{hostname}]" if ":" in hostname else hostname
        api = ManagementAPI(f"http://{netloc}:{DEFAULT_PORT}/", urllib.parse.unquote(host.username or "guest"),
                            urllib.parse.unquote(host.password or "guest"), timeout=timeout)
        try:
            api.overview()
            return api
        except ManagementError as exc:
            errors.append(str(exc))
    raise ManagementError("no management API answered: " + "; ".join(errors or ["the URL names no host"]))


def _sample(api: ManagementAPI) -> list[dict[str, Any]]:
    return api.queues()


def examine(api: ManagementAPI, interval: float = 2.0, before: list[dict[str, Any]] | None = None,
            backlog: int = checks.BACKLOG_MESSAGES, channel_limit: int = checks.CHANNEL_LIMIT,
            growth: int = checks.GROWTH_MESSAGES) -> tuple[list[Finding], list[dict[str, Any]]]:
    """The findings, and the queues as last sampled (pass them as ``before``
    next time to see growth). Without ``before``, two samples ``interval``
    seconds apart (one when ``interval`` is 0)."""
    if before is None and interval > 0:
        before = _sample(api)
        time.sleep(interval)  # the second sample is what shows growth
    queues = _sample(api)
    previous = None if before is None else {checks.queue_key(q): q for q in before}
    connections = api.connections()
    names = {str(c.get("name")): checks.client_name(c) for c in connections}
    now = datetime.now(timezone.utc)
    zombies = [q for q in queues if int(q.get("messages") or 0) > 0 and int(q.get("consumers") or 0) == 0]
    bindings = {checks.queue_key(q): api.queue_bindings(*checks.queue_key(q)) for q in zombies}
    findings = (checks.cluster(api.nodes(), queues)
                + checks.zombie_queues(queues, bindings, previous, now)
                + checks.backlogs(queues, api.consumers(), names, previous, backlog, growth)
                + checks.channel_leaks(connections, channel_limit))
    return findings, queues


def fix_zombies(api: ManagementAPI, findings: list[Finding]) -> list[Finding]:
    """Delete the queues of the zombie findings; returns those deleted."""
    deleted = []
    for finding in findings:
        if finding.check != "zombie-queue":
            continue
        api.delete_queue(finding.data["vhost"], finding.data["queue"])
        deleted.append(finding)
    return deleted
