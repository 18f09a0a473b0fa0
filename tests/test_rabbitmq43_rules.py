"""RabbitMQ 4.3's rules (fastrpc.drivers.broker_rules) against every declaration
fastrpc makes, in each documented configuration; no broker (the one here is
3.10, which refuses none of it).

The README's "Choosing queue types" table says which configurations are
4.3-safe; this test reads that table, so the README and the declarations
cannot drift apart. A refusal by a 4.3 broker becomes a DeclarationRefused
naming the setting to choose, raised at once.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from fastrpc.amqp import exceptions as amqp_exc
from fastrpc.amqp.channel import Channel
from fastrpc.drivers import broker_rules
from fastrpc.drivers.amqp.errors import messaging_error
from fastrpc.drivers.amqp.sending import Sender
from fastrpc.drivers.topology import ExchangeSpec, QueueSpec, Topology
from fastrpc.exceptions import DeclarationRefused
from fastrpc.options import Options

pytestmark = pytest.mark.twins

ROOT = Path(__file__).resolve().parent.parent

# What RabbitMQ 4.3 answers to a transient non-exclusive queue.declare: the
# connection closes with 541 and the deprecated feature's warning
# (rabbit_amqqueue:declare -> rabbit_deprecated_features:get_warning).
TRANSIENT_REFUSAL = (
    "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n"
    "By default, this feature is not permitted anymore.\n"
    "The feature will be removed from a future major RabbitMQ version, regardless of the configuration; "
    "actual version to be determined.\n"
    "To continue using this feature when it is not permitted by default, set the following parameter "
    "in your configuration:\n"
    "    \"deprecated_features.permit.transient_nonexcl_queues = true\"")
LOCATOR_REFUSAL = TRANSIENT_REFUSAL.replace("transient_nonexcl_queues", "queue_master_locator")


def declarations(options: Options) -> list[QueueSpec | ExchangeSpec]:
    """Every exchange and queue fastrpc declares with ``options``: an RPC
    server's and client's, a notifier's and a notification listener's (with
    and without a pool)."""
    topo = Topology(options)
    exchange = topo.exchange_name(None)
    notification = topo.topic_queue("notifications.info")
    return [
        topo.topic_exchange(exchange),                 # RPC servers, clients, notifiers
        topo.fanout_exchange("compute"),
        topo.topic_queue("compute"),                   # shared with every server of the topic
        topo.topic_queue("compute", "host-1"),
        topo.fanout_queue("compute"),                  # one server's own
        topo.reply_queue(),                            # one transport's own
        notification,                                  # notifiers and listeners
        QueueSpec("my_pool", notification.durable, notification.auto_delete, notification.arguments),
    ]


def refusals(options: Options) -> list[broker_rules.Violation]:
    return [v for spec in declarations(options) for v in broker_rules.violations(spec) if v.refused]


# ---- the README's table --------------------------------------------------------------


def readme_configurations() -> list[tuple[str, dict[str, bool], bool]]:
    """(row label, options, 4.3-safe) for each row of the README's queue-type table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Choosing queue types", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= {"-", " "}:
            continue
        verdict = cells[-1].lower()
        if "safe" not in verdict and "refused" not in verdict:
            continue  # the header
        settings = dict(re.findall(r"`(\w+)=(true|false)`", cells[0]))
        if not settings and "default" not in cells[0].lower():
            continue
        rows.append((cells[0], {k: v == "true" for k, v in settings.items()}, "refused" not in verdict))
    return rows


def test_the_readme_table_lists_the_configurations():
    rows = readme_configurations()
    labels = {tuple(sorted(opts.items())) for _, opts, _ in rows}
    assert () in labels  # the defaults
    for name in ("amqp_durable_queues", "rabbit_quorum_queue", "rabbit_ha_queues"):
        assert ((name, True),) in labels
    assert (("rabbit_quorum_queue", True), ("rabbit_transient_quorum_queue", True)) in labels
    assert any(safe for _, _, safe in rows)


@pytest.mark.parametrize("label, settings, safe", readme_configurations(),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_what_the_readme_says_of_each_configuration_holds(label, settings, safe):
    refused = refusals(Options(**settings))
    if safe:
        assert refused == [], f"the README calls {label} 4.3-safe, but: {[str(v) for v in refused]}"
    else:
        assert refused, f"the README says 4.3 refuses {label}, but nothing declared is refused"


# ---- each configuration, declaration by declaration ----------------------------------


def _refused_names(options: Options) -> set[str]:
    names = set()
    for spec in declarations(options):
        if any(v.refused for v in broker_rules.violations(spec)):
            names.add("reply" if spec.name.startswith("reply_") else
                      "fanout" if "_fanout_" in spec.name else spec.name)
    return names


SHARED = {"compute", "compute.host-1", "notifications.info", "my_pool"}
PRIVATE = {"reply", "fanout"}


@pytest.mark.parametrize("settings, refused", [
    ({}, SHARED | PRIVATE),
    ({"amqp_durable_queues": True}, PRIVATE),
    ({"rabbit_quorum_queue": True}, PRIVATE),
    ({"rabbit_transient_quorum_queue": True}, SHARED),
    ({"amqp_durable_queues": True, "rabbit_transient_quorum_queue": True}, set()),
    ({"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True}, set()),
    ({"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True, "rabbit_quorum_delivery_limit": 5,
      "rabbit_quorum_max_memory_length": 100, "rabbit_quorum_max_memory_bytes": 1 << 20}, set()),
    ({"rabbit_ha_queues": True}, SHARED | PRIVATE),
    ({"rabbit_ha_queues": True, "amqp_durable_queues": True}, PRIVATE),
])
def test_which_declarations_4_3_refuses(settings, refused):
    assert _refused_names(Options(**settings)) == refused


def test_exchanges_have_no_rule():
    for settings in ({}, {"amqp_durable_queues": True}, {"rabbit_quorum_queue": True},
                     {"rabbit_quorum_queue": True, "rabbit_transient_quorum_queue": True}):
        for spec in declarations(Options(**settings)):
            if isinstance(spec, ExchangeSpec):
                assert broker_rules.violations(spec) == []


def test_each_refusal_names_the_setting_to_choose():
    for spec in declarations(Options()):
        for v in broker_rules.violations(spec):
            assert v.feature == "transient_nonexcl_queues" and v.refused
            assert spec.name in v.message and "4.3" in v.message
            if spec.name.startswith("reply_") or "_fanout_" in spec.name:
                assert "rabbit_transient_quorum_queue=true" in v.message
            else:
                assert "amqp_durable_queues=true or rabbit_quorum_queue=true" in v.message


def test_ha_queues_are_not_refused_but_not_mirrored_either():
    found = [v for spec in declarations(Options(rabbit_ha_queues=True, amqp_durable_queues=True,
                                                rabbit_transient_queues_ttl=0))
             for v in broker_rules.violations(spec) if not v.refused]
    assert found and {v.feature for v in found} == {"classic_queue_mirroring"}
    assert all("rabbit_quorum_queue=true" in v.message and "not replicated" in v.message for v in found)


def test_exclusive_and_locator_rules():
    assert broker_rules.queue_violations(QueueSpec("x", False, True, exclusive=True)) == []
    found = broker_rules.queue_violations(QueueSpec("x", True, False, {"x-queue-master-locator": "min-masters"}))
    assert [(v.feature, v.refused) for v in found] == [("queue_master_locator", True)]
    assert broker_rules.queue_violations(QueueSpec("x", True, False, {"x-queue-leader-locator": "balanced"})) == []


# ---- QoS -----------------------------------------------------------------------------


def test_global_qos_rule():
    assert broker_rules.qos_violations(10) == []
    (v,) = broker_rules.qos_violations(10, global_=True)
    assert v.feature == "global_qos" and not v.refused and "rabbit_qos_prefetch_count" in v.message


def test_fastrpc_never_sends_global_qos():
    # The channel's default is per consumer, and no call in fastrpc/ passes global_.
    assert inspect.signature(Channel.basic_qos).parameters["global_"].default is False
    calls = 0
    for path in (ROOT / "fastrpc").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "basic_qos" and not path.name.startswith("channel")):
                calls += 1
                for kw in node.keywords:
                    assert kw.arg != "global_" or (isinstance(kw.value, ast.Constant) and kw.value.value is False), \
                        f"{path}:{node.lineno} sends basic.qos with global_"
                assert len(node.args) < 3, f"{path}:{node.lineno} passes global_ positionally"
    assert calls >= 1  # the listeners' prefetch


# ---- the refusal, as callers see it --------------------------------------------------


@pytest.mark.parametrize("closed", [amqp_exc.ChannelClosed, amqp_exc.ConnectionClosed])
def test_a_deprecated_feature_refusal_is_a_declaration_refused_with_the_setting(closed):
    err = messaging_error(closed(541, TRANSIENT_REFUSAL, 50, 10))
    assert isinstance(err, DeclarationRefused)
    assert (err.reply_code, err.reply_text) == (541, TRANSIENT_REFUSAL)
    text = str(err)
    assert "queue declaration" in text and "transient_nonexcl_queues" in text
    assert "amqp_durable_queues=true or rabbit_quorum_queue=true" in text
    assert "rabbit_transient_quorum_queue=true" in text
    # Also when the broker does not say which method it refused.
    assert "rabbit_transient_quorum_queue=true" in str(messaging_error(closed(541, TRANSIENT_REFUSAL)))
    locator = messaging_error(closed(541, LOCATOR_REFUSAL, 50, 10))
    assert isinstance(locator, DeclarationRefused) and "x-queue-leader-locator" in str(locator)


def test_other_refusals_carry_no_hint():
    err = messaging_error(amqp_exc.ChannelClosed(406, "PRECONDITION_FAILED - inequivalent arg 'durable' for "
                                                 "exchange 'x' in vhost '/': received 'true' but current is "
                                                 "'false'", 40, 10))
    assert isinstance(err, DeclarationRefused) and err.name == "x"
    assert "deprecated" not in str(err)


@pytest.mark.parametrize("closed", [amqp_exc.ChannelClosed, amqp_exc.ConnectionClosed])
def test_a_deprecated_feature_refusal_is_not_retried(closed):
    # A 541 is otherwise a connection problem worth a reconnect; this one would
    # be refused again on every attempt.
    attempts = []

    def declare():
        attempts.append(1)
        raise closed(541, TRANSIENT_REFUSAL, 50, 10)

    sender = SimpleNamespace(conf=Options(rabbit_retry_interval=0.01))
    with pytest.raises(closed):
        Sender.with_retry(sender, declare, None, None)  # type: ignore[arg-type]
    assert len(attempts) == 1
