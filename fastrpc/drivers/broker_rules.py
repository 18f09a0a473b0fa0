"""What RabbitMQ 4.3 refuses or ignores of the declarations fastrpc makes.

The Debian broker the tests run on (3.10) accepts all of these; RabbitMQ 4.3
does not, so the rules are written down here and every declaration fastrpc
makes is checked against them (``tests/test_rabbitmq43_rules.py``). Each rule
is a *deprecated feature* of RabbitMQ (``rabbit_deprecated_features``); its
phase moves from ``permitted_by_default`` to ``denied_by_default`` to
``removed``. A denied feature can still be permitted per node in
``rabbitmq.conf`` (``deprecated_features.permit.<name> = true``) until it is
removed.

``transient_nonexcl_queues`` (queue rule)
    A queue that is neither durable nor exclusive. Deprecated in 3.13 (the
    4.0 deprecation announcements), ``permitted_by_default`` through 4.2,
    ``denied_by_default`` since 4.3.0. A refused ``queue.declare`` closes the
    *connection* with ``541 INTERNAL_ERROR`` and the feature's warning as
    text ("Feature `transient_nonexcl_queues` is deprecated. By default, this
    feature is not permitted anymore. ..."), not the channel with a 406.
    Durable queues (classic, quorum) and exclusive queues are permitted.
    Durability is per queue, so it is the declaring client's options that
    decide: ``amqp_durable_queues`` or ``rabbit_quorum_queue`` for the shared
    topic and notification queues, ``rabbit_transient_quorum_queue`` for the
    reply and fanout queues.

``classic_queue_mirroring`` (queue rule)
    Mirrored classic queues, ``removed`` in 4.0.0. What ``rabbit_ha_queues``
    asks for (the ``x-ha-policy: all`` argument) has done nothing since
    RabbitMQ 3.0, where mirroring moved to policies; 4.x accepts and ignores
    the argument and ignores the ``ha-*`` keys of policies. Nothing is refused,
    but nothing is replicated either: such a queue is a plain classic queue.
    Replicated queues are quorum queues (``rabbit_quorum_queue``).

``queue_master_locator`` (queue rule)
    The ``x-queue-master-locator`` argument of classic queues (and the
    ``queue-master-locator`` policy key); ``denied_by_default`` since 4.3.0,
    where a declaration carrying it is refused (541, like the above).
    ``x-queue-leader-locator`` replaces it. Neither fastrpc nor oslo sets it;
    the rule is here for declarations made from other specs.

``global_qos`` (qos rule)
    ``basic.qos`` with ``global = true``; ``denied_by_default`` since 4.3.0,
    where the broker applies the limit per consumer instead (no error).
    fastrpc and oslo send ``rabbit_qos_prefetch_count`` per consumer
    (``global = false``), which is unaffected.

Exchanges have no rule: transient (non-durable) and auto-delete exchanges are
still permitted in 4.3.

Sources: rabbitmq-server's ``release-notes/4.3.0.md`` ("Deprecated Features
are Now Disabled by Default", "Deprecated Features"), ``release-notes/4.0.1.md``
(removal of classic queue mirroring), and the ``-rabbit_deprecated_feature``
declarations in ``deps/rabbit/src/rabbit_amqqueue.erl``
(``transient_nonexcl_queues``, ``is_queue_args_combination_permitted``),
``rabbit_channel.erl`` (``global_qos``), ``rabbit_queue_location.erl`` and
``rabbit_classic_queue.erl`` (``queue_master_locator``), and
``rabbit_mirror_queue_misc.erl`` (``classic_queue_mirroring``) on the
``v4.0.x`` to ``v4.3.x`` branches; the refusal text is built by
``rabbit_deprecated_features:generate_warnings``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeGuard

from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.drivers.topology import ExchangeSpec, QueueSpec

VERSION = (4, 3)

TRANSIENT_NONEXCL_QUEUES = "transient_nonexcl_queues"
CLASSIC_QUEUE_MIRRORING = "classic_queue_mirroring"
QUEUE_MASTER_LOCATOR = "queue_master_locator"
GLOBAL_QOS = "global_qos"

# The setting to choose instead, for each rule; a transient queue's hint
# depends on whose queue it is.
SHARED_QUEUE_HINT = "set amqp_durable_queues=true or rabbit_quorum_queue=true"
PRIVATE_QUEUE_HINT = "set rabbit_transient_quorum_queue=true"
HINTS: dict[str, str] = {
    TRANSIENT_NONEXCL_QUEUES: (
        "set amqp_durable_queues=true or rabbit_quorum_queue=true (topic and notification queues) "
        "and rabbit_transient_quorum_queue=true (reply and fanout queues), the same on every service "
        "of the fleet, or permit the feature on the broker "
        "(deprecated_features.permit.transient_nonexcl_queues = true)"),
    CLASSIC_QUEUE_MIRRORING: (
        "set rabbit_ha_queues=false and rabbit_quorum_queue=true (and rabbit_transient_quorum_queue=true) "
        "for replicated queues"),
    QUEUE_MASTER_LOCATOR: (
        "drop the x-queue-master-locator argument or queue-master-locator policy key "
        "(use x-queue-leader-locator); fastrpc and oslo never set it"),
    GLOBAL_QOS: (
        "use the per-consumer prefetch (rabbit_qos_prefetch_count), which fastrpc and oslo send "
        "with global=false"),
}

# What the broker does about each: refuse the declaration, or ignore what was asked.
REFUSED = {TRANSIENT_NONEXCL_QUEUES: True, QUEUE_MASTER_LOCATOR: True,
           CLASSIC_QUEUE_MIRRORING: False, GLOBAL_QOS: False}

# A refusal's text names the feature: "Feature `transient_nonexcl_queues` is deprecated."
_FEATURE_TEXT = re.compile(r"Feature `([a-z_]+)` is (?:deprecated|removed)")
# The names fastrpc gives its private queues (topology.Topology).
_PRIVATE = re.compile(r"^(?:reply_[0-9a-f]{32}|.+_fanout_[0-9a-f]{32})$")


@dataclass(frozen=True)
class Violation:
    """One thing RabbitMQ 4.3 refuses (``refused``) or ignores in a declaration."""

    feature: str  # the deprecated feature's name in RabbitMQ
    subject: str  # "queue 'x'", "basic.qos"
    message: str  # what happens and the setting to choose instead
    refused: bool

    def __str__(self) -> str:
        return self.message


def is_private_queue(name: str) -> bool:
    """Whether ``name`` is one of fastrpc's (and oslo's) per-process queues:
    a reply queue or a server's fanout queue, which no other process declares."""
    return bool(_PRIVATE.match(name))


def queue_violations(spec: QueueSpec, private: bool | None = None) -> list[Violation]:
    """What RabbitMQ 4.3 refuses or ignores in declaring ``spec``.

    ``private``: whether the queue is a process's own (reply, fanout) rather
    than one shared with other services (topic, notification); guessed from
    its name when None. It only changes which setting the message names.
    """
    if private is None:
        private = is_private_queue(spec.name)
    subject = f"queue {spec.name!r}"
    found: list[Violation] = []
    queue_type = spec.arguments.get("x-queue-type", "classic")
    if not spec.durable and not spec.exclusive:
        hint = PRIVATE_QUEUE_HINT if private else SHARED_QUEUE_HINT
        found.append(Violation(
            TRANSIENT_NONEXCL_QUEUES, subject,
            f"{subject} is transient (non-durable) and not exclusive, which RabbitMQ 4.3 refuses by default "
            f"(deprecated feature {TRANSIENT_NONEXCL_QUEUES}): {hint}", True))
    if "x-ha-policy" in spec.arguments:
        found.append(Violation(
            CLASSIC_QUEUE_MIRRORING, subject,
            f"{subject} asks for mirroring (x-ha-policy, from rabbit_ha_queues), which RabbitMQ 4.0 removed "
            f"({CLASSIC_QUEUE_MIRRORING}); the queue is not replicated: {HINTS[CLASSIC_QUEUE_MIRRORING]}", False))
    if "x-queue-master-locator" in spec.arguments and queue_type == "classic":
        found.append(Violation(
            QUEUE_MASTER_LOCATOR, subject,
            f"{subject} has x-queue-master-locator, which RabbitMQ 4.3 refuses by default "
            f"(deprecated feature {QUEUE_MASTER_LOCATOR}): {HINTS[QUEUE_MASTER_LOCATOR]}", True))
    return found


def exchange_violations(spec: ExchangeSpec) -> list[Violation]:
    """What RabbitMQ 4.3 refuses or ignores in declaring ``spec``: nothing, so far."""
    return []


def qos_violations(prefetch_count: int, global_: bool = False) -> list[Violation]:
    """What RabbitMQ 4.3 refuses or ignores in a ``basic.qos``."""
    if not global_:
        return []
    return [Violation(
        GLOBAL_QOS, "basic.qos",
        f"basic.qos with global=true (prefetch {prefetch_count}) is applied per consumer by RabbitMQ 4.3 "
        f"(deprecated feature {GLOBAL_QOS}): {HINTS[GLOBAL_QOS]}", False)]


def violations(spec: QueueSpec | ExchangeSpec) -> list[Violation]:
    """The 4.3 violations of one declaration."""
    if isinstance(spec, QueueSpec):
        return queue_violations(spec)
    return exchange_violations(spec)


def refused_feature(reply_text: str) -> str | None:
    """The deprecated feature a broker's refusal names (its ``reply_text``), if any."""
    found = _FEATURE_TEXT.search(reply_text or "")
    return found.group(1) if found else None


def refusal_hint(reply_text: str) -> str | None:
    """What to set instead, for a refusal that names a deprecated feature."""
    feature = refused_feature(reply_text)
    if feature is None:
        return None
    hint = HINTS.get(feature, f"permit it on the broker (deprecated_features.permit.{feature} = true)")
    return f"RabbitMQ refused a deprecated feature ({feature}): {hint}"


def is_deprecation_refusal(exc: BaseException) -> TypeGuard[amqp_exc.ChannelClosed | amqp_exc.ConnectionClosed]:
    """Whether ``exc`` is the broker closing a channel or the connection because
    a deprecated feature is denied: the same request will be refused again, so
    it is no connection problem to retry."""
    return (isinstance(exc, amqp_exc.ChannelClosed | amqp_exc.ConnectionClosed)
            and refused_feature(exc.reply_text) is not None)
