"""What ``fastrpc doctor`` looks for, as pure functions of the management
API's answers (lists of dicts), so each rule reads on its own:

* zombie queues: messages and no consumer (above all the
  ``<topic>_fanout_<uuid>`` and ``reply_<uuid>`` queues a crashed fastrpc or
  oslo.messaging process leaves behind), with the bindings that still feed
  them, their age and growth, and the command that deletes them;
* backlogs: consumed queues over a message threshold, or growing between
  two samples, with their consumers' connection names;
* channel leaks: connections holding more channels than a threshold;
* the cluster: nodes not running, partitions, memory or disk alarms, quorum
  queues without a leader or with members offline, classic queues whose
  node is down.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# Queues fastrpc and oslo.messaging declare per process: left behind, nothing
# will ever consume them again.
PER_PROCESS_QUEUE = re.compile(r"(?:_fanout_|^reply_)[0-9a-f]{32}$")

BACKLOG_MESSAGES = 1000
GROWTH_MESSAGES = 10
CHANNEL_LIMIT = 100


@dataclass
class Finding:
    check: str  # zombie-queue, backlog, channel-leak, node-down, partition, alarm, quorum-queue, queue-down
    subject: str
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "subject": self.subject, "detail": self.detail, "fix": self.fix, **self.data}


def queue_key(q: Mapping[str, Any]) -> tuple[str, str]:
    return str(q.get("vhost", "/")), str(q.get("name", ""))


def queue_subject(q: Mapping[str, Any]) -> str:
    vhost, name = queue_key(q)
    return name if vhost == "/" else f"{vhost}:{name}"


def delete_command(vhost: str, name: str) -> str:
    return f"rabbitmqctl delete_queue -p {shlex.quote(vhost)} {shlex.quote(name)}"


def _age(idle_since: Any, now: datetime) -> str | None:
    """How long ago ``idle_since`` (the API's 'YYYY-MM-DD HH:MM:SS', UTC) was."""
    if not isinstance(idle_since, str):
        return None
    try:
        then = datetime.strptime(idle_since[:19].replace("T", " "), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _growth(q: Mapping[str, Any], before: Mapping[tuple[str, str], Mapping[str, Any]] | None) -> int | None:
    if before is None:
        return None
    old = before.get(queue_key(q))
    if old is None:
        return None
    return int(q.get("messages") or 0) - int(old.get("messages") or 0)


def zombie_queues(queues: Iterable[Mapping[str, Any]], bindings: Mapping[tuple[str, str], list[dict[str, Any]]],
                  before: Mapping[tuple[str, str], Mapping[str, Any]] | None, now: datetime) -> list[Finding]:
    found = []
    for q in queues:
        messages = int(q.get("messages") or 0)
        if messages <= 0 or int(q.get("consumers") or 0) > 0:
            continue
        vhost, name = queue_key(q)
        left_behind = bool(PER_PROCESS_QUEUE.search(name))
        feeds = [f"{b.get('source')} -> {b.get('routing_key')}" for b in bindings.get((vhost, name), [])
                 if b.get("source")]  # the default exchange's implicit binding feeds nobody by name
        parts = [f"{messages} messages, no consumer"]
        if left_behind:
            parts.append("a per-process queue whose process is gone")
        age = _age(q.get("idle_since"), now)
        if age:
            parts.append(f"idle for {age}")
        growth = _growth(q, before)
        if growth:
            parts.append(f"{growth:+d} messages since the last sample")
        if feeds:
            parts.append("fed by " + ", ".join(feeds))
        found.append(Finding("zombie-queue", queue_subject(q), "; ".join(parts), delete_command(vhost, name),
                             {"vhost": vhost, "queue": name, "messages": messages, "left_behind": left_behind,
                              "bindings": feeds, "growth": growth}))
    return found


def backlogs(queues: Iterable[Mapping[str, Any]], consumers: Iterable[Mapping[str, Any]],
             connection_names: Mapping[str, str], before: Mapping[tuple[str, str], Mapping[str, Any]] | None,
             threshold: int = BACKLOG_MESSAGES, growth_limit: int = GROWTH_MESSAGES) -> list[Finding]:
    by_queue: dict[tuple[str, str], list[str]] = {}
    for c in consumers:
        q = c.get("queue") or {}
        channel = c.get("channel_details") or {}
        conn = str(channel.get("connection_name") or "?")
        by_queue.setdefault((str(q.get("vhost", "/")), str(q.get("name", ""))), []).append(
            connection_names.get(conn, conn))
    found = []
    for q in queues:
        if int(q.get("consumers") or 0) == 0:
            continue  # no consumer: a zombie when it holds messages
        messages = int(q.get("messages") or 0)
        growth = _growth(q, before)
        over = messages >= threshold
        growing = growth is not None and growth >= growth_limit
        if not (over or growing):
            continue
        names = sorted(set(by_queue.get(queue_key(q), [])))
        parts = [f"{messages} messages"]
        if growing:
            parts.append(f"{growth:+d} since the last sample")
        parts.append(f"{int(q.get('consumers') or 0)} consumer(s): " + (", ".join(names) or "?"))
        found.append(Finding("backlog", queue_subject(q), "; ".join(parts), None,
                             {"vhost": queue_key(q)[0], "queue": queue_key(q)[1], "messages": messages,
                              "growth": growth, "consumers": names}))
    return found


def client_name(conn: Mapping[str, Any]) -> str:
    """The name a client gave its connection (``connection_name``), else the broker's name for it."""
    props = conn.get("client_properties") or {}
    return str(props.get("connection_name") or conn.get("name") or "?")


def channel_leaks(connections: Iterable[Mapping[str, Any]], limit: int = CHANNEL_LIMIT) -> list[Finding]:
    found = []
    for conn in connections:
        channels = int(conn.get("channels") or 0)
        if channels <= limit:
            continue
        name = client_name(conn)
        peer = f"{conn.get('peer_host')}:{conn.get('peer_port')}"
        found.append(Finding("channel-leak", name,
                             f"{channels} channels (limit {limit}) on the connection from {peer}, user "
                             f"{conn.get('user')}", None,
                             {"connection": conn.get("name"), "connection_name": name, "channels": channels,
                              "peer": peer}))
    return found


def cluster(nodes: Iterable[Mapping[str, Any]], queues: Iterable[Mapping[str, Any]]) -> list[Finding]:
    found = []
    down: set[str] = set()
    for node in nodes:
        name = str(node.get("name"))
        if not node.get("running", False):
            down.add(name)
            found.append(Finding("node-down", name, "node not running", None, {"node": name}))
            continue
        partitions = node.get("partitions") or []
        if partitions:
            found.append(Finding("partition", name, "network partition: cannot see " + ", ".join(map(str, partitions)),
                                 "rabbitmqctl -n NODE stop_app && rabbitmqctl -n NODE start_app (on the minority side)",
                                 {"node": name, "partitions": partitions}))
        for alarm, what in (("mem_alarm", "memory"), ("disk_free_alarm", "disk")):
            if node.get(alarm):
                found.append(Finding("alarm", name, f"{what} alarm: publishers are blocked", None,
                                     {"node": name, "alarm": what}))
    for q in queues:
        kind = q.get("type", "classic")
        if kind == "quorum":
            members = [str(m) for m in q.get("members") or []]
            online = [str(m) for m in q.get("online") or []]
            missing = [m for m in members if m not in online]
            leader = q.get("leader")
            if not leader or missing:
                problems: list[str] = [] if leader else ["no leader"]
                if missing:
                    problems.append("members offline: " + ", ".join(missing))
                found.append(Finding("quorum-queue", queue_subject(q), "; ".join(problems), None,
                                     {"vhost": queue_key(q)[0], "queue": queue_key(q)[1], "leader": leader,
                                      "offline": missing}))
        elif q.get("state") == "down" or str(q.get("node")) in down:
            found.append(Finding("queue-down", queue_subject(q), f"classic queue whose node {q.get('node')} is down",
                                 None, {"vhost": queue_key(q)[0], "queue": queue_key(q)[1], "node": q.get("node")}))
    return found
