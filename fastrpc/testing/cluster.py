"""A throwaway RabbitMQ cluster for tests, and the faults a test can inflict on it.

Every node is a :class:`~fastrpc.testing.node.RabbitNode` with its own name,
ports and directory; all share one private epmd and one Erlang cookie. Node 1
boots on its own; the others join it (``stop_app``, ``join_cluster``,
``start_app``). Node names carry a random cluster id, so clusters started in
parallel never clash.

Faults, on node index ``i`` (0-based): :meth:`kill` (SIGKILL), :meth:`freeze`
/ :meth:`thaw` (SIGSTOP / SIGCONT), :meth:`cut_off` / :meth:`reconnect`
(freeze plus iptables DROP of its loopback ports, see firewall.py),
:meth:`restart` and :meth:`heal` (``stop_app`` + ``start_app`` of a node left
partitioned). :meth:`restore` undoes them all.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import string
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import reaper
from .epmd import Epmd
from .firewall import LoopbackFirewall, remove_stale_chains
from .node import RabbitNode, RabbitNodeError, _tail
from .ports import LOOPBACK

# rabbitmqctl calls used for polling: short, so a wait notices its deadline.
_POLL_CTL_TIMEOUT = 15.0
# Running nodes, all members and the nodes it saw partitioned, one line each.
_LOCAL_VIEW = (
    'io:format("~w~n~w~n~w~n", [rabbit_mnesia:cluster_nodes(running), '
    "rabbit_mnesia:cluster_nodes(all), rabbit_node_monitor:partitions()])."
)
_QUOTED_ATOM = re.compile(r"'([^']+)'")
# A partition shows in the nodes' records about 2 s after the nodes meet again;
# a cluster counts as healed only if none appeared this long after the last change.
_SETTLE = 4.0
LOG = logging.getLogger(__name__)


class RabbitClusterError(RuntimeError):
    """The cluster did not form, did not recover, or a fault could not be applied."""


@dataclass
class ClusterStatus:
    """One node's view of the cluster: ``partitions`` maps a node to those it saw partitioned."""

    node: str
    running_nodes: list[str]
    disk_nodes: list[str]  # every member (all are disc nodes here)
    partitions: dict[str, list[str]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class RabbitCluster:
    """``size`` RabbitMQ nodes on loopback forming one cluster.

    ``RabbitCluster()`` boots and joins the nodes (``autostart=False`` defers that
    to :meth:`start`); use it as a context manager or call :meth:`stop`, which ends
    every node, removes every directory and the cluster's iptables chain.

    RabbitMQ's defaults apply unless given: ``partition_handling`` (``ignore``,
    ``pause_minority``, ``autoheal``) and ``net_ticktime`` (seconds, 60 by
    default; set through advanced.config). ``config`` adds rabbitmq.conf lines to
    every node; ``management`` enables the management plugin on each node.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        partition_handling: str | None = None,
        net_ticktime: int | None = None,
        config: Iterable[str] = (),
        management: bool = True,
        start_timeout: float = 180.0,
        workdir: str | None = None,
        autostart: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.id: str = secrets.token_hex(3)
        self.partition_handling = partition_handling
        self.net_ticktime = net_ticktime
        self.start_timeout = start_timeout
        self.workdir: Path = Path(tempfile.mkdtemp(prefix=f"fastrpc-cluster-{self.id}-", dir=workdir))
        # If this process dies first, the reaper removes the directory (after the nodes).
        reaper.on_exit(self._reaper_key, ["rm", "-rf", "--", str(self.workdir)])
        self._epmd = Epmd()
        self._firewall = LoopbackFirewall()
        self._frozen_since: dict[int, float] = {}
        self._cut: set[int] = set()
        self._suspects: set[int] = set()  # nodes that other nodes may have seen vanish
        self._needs_heal: set[int] = set()  # thawed after being frozen for long
        self._disturbed = False
        self._stopped = False
        self._last_change = 0.0  # monotonic time of the last thaw, reconnect, restart or heal
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(32))
        lines = list(config)
        if partition_handling is not None:
            lines.append(f"cluster_partition_handling = {partition_handling}")
        advanced = None
        if net_ticktime is not None:
            advanced = f"[{{kernel, [{{net_ticktime, {int(net_ticktime)}}}]}}]."
        self.nodes: list[RabbitNode] = []
        try:
            for i in range(1, size + 1):
                self.nodes.append(
                    RabbitNode(
                        self.workdir,
                        name=f"rabbit-{i}-{self.id}",
                        config=lines,
                        epmd=self._epmd,
                        cookie=cookie,
                        management=management,
                        advanced_config=advanced,
                        start_timeout=start_timeout,
                        autostart=False,
                    )
                )
            if autostart:
                self.start()
        except BaseException:
            self.stop()
            raise

    @property
    def _reaper_key(self) -> str:
        return f"cluster-dir-{self.id}"

    # -- addresses -------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """One single-host AMQP URL per node."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """A multi-host transport URL naming every node (failover order = node order)."""
        hosts = ",".join(f"guest:guest@{LOOPBACK}:{node.port}" for node in self.nodes)
        return f"amqp://{hosts}/"

    @property
    def disturbed(self) -> bool:
        """True when a fault was applied since the cluster formed or was last restored."""
        return self._disturbed

    @property
    def frozen(self) -> list[int]:
        return sorted(self._frozen_since)

    @property
    def cut(self) -> list[int]:
        return sorted(self._cut)

    @property
    def chain(self) -> str:
        """Name of the iptables chain holding this cluster's rules."""
        return self._firewall.chain

    def firewall_rules(self) -> list[str]:
        """The DROP rules currently in the cluster's chain (``iptables -S`` lines)."""
        return self._firewall.rules()

    def chain_exists(self) -> bool:
        return self._firewall.exists()

    # -- lifecycle -------------------------------------------------------

    def start(self) -> RabbitCluster:
        """Boot every node (in parallel), join nodes 2.. to node 1, wait until all run."""
        if self._stopped:
            raise RabbitClusterError("this cluster was stopped and its directories removed")
        remove_stale_chains()
        self._epmd.start()
        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            # list(): wait for every boot and raise the first failure.
            list(pool.map(lambda node: node.start(), self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            if first.nodename in self._view(node).running_nodes:
                continue  # already a member (start() after every node was halted)
            node.ctl("stop_app")
            node.ctl("join_cluster", first.nodename, timeout=120)
            node.ctl("start_app", timeout=self.start_timeout)
        self.wait_running(timeout=self.start_timeout)
        return self

    def stop(self) -> None:
        """Kill every node, stop epmd, remove the iptables chain and every directory."""
        self._stopped = True
        errors: list[BaseException] = []
        for action in (
            self._firewall.close,
            *[lambda node=node: node.halt(graceful=False) for node in self.nodes],
            *[node.stop for node in self.nodes],
            self._epmd.stop,
        ):
            try:
                action()
            except Exception as exc:  # stop everything even if one part fails
                errors.append(exc)
        shutil.rmtree(self.workdir, ignore_errors=True)
        reaper.cancel(self._reaper_key)
        self._frozen_since.clear()
        self._cut.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> RabbitCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RabbitCluster({self.id}, {self.nodes!r})"

    # -- status ----------------------------------------------------------

    def _reachable(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.running and i not in self._frozen_since]

    def _view(self, node: RabbitNode, timeout: float = _POLL_CTL_TIMEOUT) -> ClusterStatus:
        """The node's own idea of the cluster, from local state only.

        Unlike ``cluster_status`` (which asks every member and hangs while one is
        frozen), this answers whatever the other nodes do.
        """
        out = node.ctl("eval", _LOCAL_VIEW, timeout=timeout).splitlines()
        if len(out) < 3:
            raise RabbitNodeError(f"unexpected answer from {node.nodename}: {out!r}")
        running, everyone, partitions = (_QUOTED_ATOM.findall(line) for line in out[:3])
        return ClusterStatus(
            node=node.nodename,
            running_nodes=sorted(running),
            disk_nodes=sorted(everyone),
            partitions={node.nodename: sorted(partitions)} if partitions else {},
        )

    def view(self, i: int) -> ClusterStatus:
        """Node ``i``'s local view (running nodes, members, partitions it saw).

        Cheap and safe while another node is frozen or cut off; ``raw`` is empty.
        """
        return self._view(self.nodes[i])

    def status(self, i: int | None = None) -> ClusterStatus:
        """``rabbitmqctl cluster_status`` from node ``i`` (default: the first reachable node).

        RabbitMQ asks every member for this, so it may time out while a node is
        frozen or cut off; use :meth:`view` then.
        """
        if i is None:
            reachable = self._reachable()
            if not reachable:
                raise RabbitClusterError("no node is running and unfrozen")
            i = reachable[0]
        node = self.nodes[i]
        raw = json.loads(node.ctl("cluster_status", "--formatter", "json", timeout=_POLL_CTL_TIMEOUT))
        partitions = raw.get("partitions") or {}
        if isinstance(partitions, list):  # a list of [node, [nodes]] pairs in some versions
            partitions = {str(k): list(v) for k, v in partitions}
        return ClusterStatus(
            node=node.nodename,
            running_nodes=sorted(raw.get("running_nodes") or []),
            disk_nodes=sorted(raw.get("disk_nodes") or []),
            partitions={str(k): list(v) for k, v in partitions.items() if v},
            raw=raw,
        )

    def _wait(self, what: str, check: Callable[[], str | None], timeout: float, nodes: Sequence[int]) -> None:
        """Poll ``check`` (None = done, else what is still wrong) until ``timeout``."""
        deadline = time.monotonic() + timeout
        problem = "not checked"
        while True:
            try:
                result = check()
            except (RabbitNodeError, ValueError) as exc:
                result = str(exc)
            if result is None:
                return
            problem = result
            if time.monotonic() >= deadline:
                tails = "\n".join(
                    f"--- {self.nodes[i].nodename}: {self.nodes[i].log_file} (tail) ---\n"
                    f"{_tail(self.nodes[i].log_file, 15)}"
                    for i in nodes
                )
                raise RabbitClusterError(f"{what} not reached within {timeout} s: {problem}\n{tails}")
            time.sleep(0.5)

    def wait_running(self, nodes: Sequence[int] | None = None, timeout: float = 120.0) -> None:
        """Wait until each of ``nodes`` (indices, default all) runs and lists all of them as running."""
        indices = list(range(len(self.nodes))) if nodes is None else list(nodes)
        names = {self.nodes[i].nodename for i in indices}

        def check() -> str | None:
            for i in indices:
                node = self.nodes[i]
                if not node.running:
                    return f"{node.nodename} is not running"
                if i in self._frozen_since:
                    return f"{node.nodename} is frozen"
                missing = names - set(self._view(node).running_nodes)
                if missing:
                    return f"{node.nodename} does not see {sorted(missing)} running"
            return None

        self._wait("all nodes running", check, timeout, indices)

    def wait_partition_healed(self, timeout: float = 120.0) -> None:
        """Wait until every node runs, sees every node running and reports no partition."""
        everyone = list(range(len(self.nodes)))

        def check() -> str | None:
            names = {n.nodename for n in self.nodes}
            for node in self.nodes:
                if not node.running or node.paused:
                    return f"{node.nodename} is not running"
                view = self._view(node)
                if any(view.partitions.values()):
                    return f"{node.nodename} reports partitions {view.partitions}"
                missing = names - set(view.running_nodes)
                if missing:
                    return f"{node.nodename} does not see {sorted(missing)} running"
            return None

        self._wait("a healed cluster", check, timeout, everyone)

    def net_ticktime_of(self, i: int) -> int:
        """The net_ticktime node ``i`` really runs with (seconds)."""
        return int(self.nodes[i].ctl("eval", "net_kernel:get_net_ticktime().").strip())

    # -- faults ----------------------------------------------------------

    def _ports(self, i: int) -> list[int]:
        node = self.nodes[i]
        return [p for p in (node.port, node.dist_port, node.tls_port, node.management_port) if p is not None]

    def kill(self, i: int) -> None:
        """SIGKILL node ``i``'s whole process group, like a crash (see :meth:`restart`)."""
        self._disturbed = True
        self._suspects.add(i)
        self.nodes[i].halt(graceful=False)
        self._frozen_since.pop(i, None)

    def freeze(self, i: int) -> None:
        """SIGSTOP node ``i``: its sockets stay open, nothing answers."""
        self._disturbed = True
        self._suspects.add(i)
        self.nodes[i].pause()
        self._frozen_since.setdefault(i, time.monotonic())

    def thaw(self, i: int) -> None:
        """SIGCONT node ``i`` (undoes :meth:`freeze`)."""
        if self.frozen_for(i) >= (self.net_ticktime or 60) / 2:
            self._needs_heal.add(i)  # the others may have declared it down
        if self.nodes[i].running:
            self.nodes[i].resume()
        self._frozen_since.pop(i, None)
        self._last_change = time.monotonic()

    def cut_off(self, i: int) -> None:
        """Freeze node ``i`` and drop every loopback packet to or from its ports.

        Its AMQP, distribution (and TLS/management) ports go silent: new connections
        time out and open ones hear nothing, as if the host vanished from the network.
        """
        self.freeze(i)
        self._firewall.block(self._ports(i))
        self._cut.add(i)

    def reconnect(self, i: int) -> None:
        """Undo :meth:`cut_off`: remove node ``i``'s rules, then thaw it."""
        self._firewall.unblock(self._ports(i))
        self._cut.discard(i)
        self.thaw(i)

    def frozen_for(self, i: int) -> float:
        """Seconds node ``i`` has been frozen (0 when it is not)."""
        since = self._frozen_since.get(i)
        return 0.0 if since is None else time.monotonic() - since

    def restart(self, i: int, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop node ``i`` (gracefully or by SIGKILL; no-op after :meth:`kill`) and boot it again.

        It rejoins the cluster from its own data directory; returns once it runs
        and sees every other running node.
        """
        self._disturbed = True
        if i in self._cut:
            self._firewall.unblock(self._ports(i))
            self._cut.discard(i)
        self._frozen_since.pop(i, None)
        self._needs_heal.discard(i)
        node = self.nodes[i]
        node.halt(graceful=graceful)
        node.start()
        self._last_change = time.monotonic()
        others = [j for j in self._reachable() if j != i]
        self.wait_running([i, *others], timeout=timeout or self.start_timeout)

    def heal(self, i: int, timeout: float | None = None) -> None:
        """``stop_app`` + ``start_app`` node ``i``: a node left partitioned rejoins the cluster.

        A node whose ``start_app`` does not finish in time (seen after a cut-off:
        it waited on for the cluster's tables) is killed and booted again
        from its data directory instead, which rejoins it as well.
        """
        self._disturbed = True
        node = self.nodes[i]
        try:
            node.ctl("stop_app", timeout=120)
            node.ctl("start_app", timeout=timeout or self.start_timeout)
        except RabbitNodeError as exc:
            LOG.warning("heal of %s: %s; booting it again", node.nodename, exc)
            self.restart(i, graceful=False, timeout=timeout)
        self._needs_heal.discard(i)
        self._last_change = time.monotonic()

    def _minority(self, views: Sequence[ClusterStatus]) -> int:
        """The node to heal first: the one that saw itself cut from the most nodes.

        RabbitMQ forgets a recorded partition once the nodes it named are down,
        so restarting the app of the node on the small side clears the others'
        records as well (ties: a disturbed node, then the later node).
        """
        def weight(i: int) -> tuple[int, bool, int]:
            seen = sum(len(v) for v in views[i].partitions.values())
            return (seen, i in self._suspects, i)

        return max(range(len(views)), key=weight)

    def heal_partitions(self, timeout: float | None = None) -> None:
        """Heal nodes, the small side first, until no node reports a partition.

        Done once no partition was reported for a few seconds after the last
        thaw, reconnect, restart or heal (RabbitMQ records one only when the
        nodes meet again).
        """
        timeout = timeout or self.start_timeout
        deadline = time.monotonic() + timeout
        everyone = range(len(self.nodes))

        def check() -> str | None:
            views = [self._view(self.nodes[i]) for i in everyone]
            reporting = {v.node: v.partitions[v.node] for v in views if v.partitions}
            if not reporting:
                settling = _SETTLE - (time.monotonic() - self._last_change)
                return f"settling for {settling:.1f} s more" if settling > 0 else None
            self.heal(self._minority(views), timeout=max(deadline - time.monotonic(), 1.0))
            return f"partitions were reported: {reporting}"

        self._wait("a cluster without partitions", check, timeout, list(everyone))
        self.wait_partition_healed(max(deadline - time.monotonic(), 1.0))

    def restore(self, timeout: float | None = None) -> None:
        """Undo every fault: no rule, no frozen or stopped node, no partition.

        A node that was frozen long enough for the others to declare it down
        (half of net_ticktime or more) is healed, then partitions are healed
        (see :meth:`heal_partitions`). Raises
        RabbitClusterError if the cluster does not recover within ``timeout``.
        """
        timeout = timeout or self.start_timeout
        deadline = time.monotonic() + timeout
        for i in list(self._cut):
            self.reconnect(i)
        self._firewall.close()
        for i in list(self._frozen_since):
            self.thaw(i)
        for i, node in enumerate(self.nodes):
            if node.paused and node.running:
                node.resume()
            if not node.running:
                self.restart(i, timeout=timeout)
        for i in sorted(self._needs_heal):
            self.heal(i, timeout=timeout)
        # a few settling periods at least, after a heal that had to boot a node again
        self.heal_partitions(max(deadline - time.monotonic(), 4 * _SETTLE))
        self._suspects.clear()
        self._disturbed = False
