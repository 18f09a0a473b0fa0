"""Each option is defined once (fastrpc.options.OPTIONS) and everything else
agrees with that one definition: the per-group dicts, Options.validate, the
oslo.config [fastrpc] group, and oslo's own [oslo_messaging_rabbit] group."""

from collections import Counter

import pytest
from oslo_config import cfg
from oslo_messaging import opts as oslo_opts

from fastrpc import options as options_module
from fastrpc.options import FASTRPC_OPTIONS, GROUPS, OPTIONS, OPTIONS_BY_NAME, URL_OPTIONS, Options
from fastrpc.oslo_driver import register_opts

HOST_DEPENDENT = ("hostname", "processname")
BOUNDED = [opt for opt in OPTIONS if opt.min is not None or opt.max is not None]


def _oslo_group(name: str) -> dict:
    return {opt.name: opt for group, opts in oslo_opts.list_opts() if group == name for opt in opts}


def test_every_option_is_defined_exactly_once():
    counts = Counter(opt.name for opt in OPTIONS)
    assert [name for name, n in counts.items() if n > 1] == []
    assert set(OPTIONS_BY_NAME) == set(counts)
    # The group dicts are views of the table: every option in exactly one group.
    grouped = Counter(name for group in GROUPS.values() for name in group)
    assert grouped == Counter(counts.keys())
    for opt in OPTIONS:
        assert GROUPS[opt.group][opt.name] == opt.default
    assert set(URL_OPTIONS) == set(GROUPS["oslo_messaging_rabbit"]) | set(GROUPS["fastrpc"])
    assert Options().as_dict() == {opt.name: opt.default for opt in OPTIONS}


def test_every_option_is_an_attribute_of_options():
    annotations = Options.__annotations__
    assert set(annotations) == set(OPTIONS_BY_NAME)


def test_oslo_fastrpc_group_matches_the_table():
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([], project="fastrpc-test", default_config_files=[])
    registered = {name: conf._get_opt_info(name, "fastrpc")["opt"] for name in conf["fastrpc"]}
    assert set(registered) == set(FASTRPC_OPTIONS)
    kinds = {str: cfg.types.String, int: cfg.types.Integer, float: cfg.types.Float, bool: cfg.types.Boolean}
    for name, oslo_opt in registered.items():
        ours = OPTIONS_BY_NAME[name]
        assert oslo_opt.default == ours.default, name
        assert getattr(conf.fastrpc, name) == ours.default, name
        assert isinstance(oslo_opt.type, kinds[ours.kind]), name
        assert getattr(oslo_opt.type, "min", None) == ours.min, name
        assert getattr(oslo_opt.type, "max", None) == ours.max, name
        choices = getattr(oslo_opt.type, "choices", None)
        assert (tuple(choices) if choices else None) == ours.choices, name
        assert oslo_opt.help == ours.help and ours.help, name


@pytest.mark.parametrize("opt", BOUNDED, ids=lambda opt: opt.name)
def test_validate_refuses_values_outside_each_bound(opt):
    def refused(value):
        with pytest.raises(ValueError, match=opt.name):
            Options(**{opt.name: value})

    if opt.min is not None:
        assert Options(**{opt.name: opt.min}).as_dict()[opt.name] == opt.min
        refused(opt.min - (1 if opt.kind is int else opt.min / 2 or 0.5))
        refused(opt.min - 1000)
    if opt.max is not None:
        assert Options(**{opt.name: opt.max}).as_dict()[opt.name] == opt.max
        refused(opt.max + 1)
    if opt.kind is float:
        refused(float("nan"))
        refused(float("inf") if opt.max is not None else float("-inf"))
    refused("not a number")


@pytest.mark.parametrize("opt", [opt for opt in OPTIONS if opt.choices], ids=lambda opt: opt.name)
def test_validate_refuses_values_outside_the_choices(opt):
    for choice in opt.choices:
        assert Options(**{opt.name: choice}).as_dict()[opt.name] == choice
    with pytest.raises(ValueError, match=f"{opt.name} must be one of"):
        Options(**{opt.name: "no-such-" + opt.choices[0]})


def test_rabbit_options_are_oslos_own_with_its_defaults():
    oslo_rabbit = _oslo_group("oslo_messaging_rabbit")
    for opt in OPTIONS:
        if opt.group != "oslo_messaging_rabbit":
            continue
        assert opt.name in oslo_rabbit, opt.name
        oslo_opt = oslo_rabbit[opt.name]
        if opt.name not in HOST_DEPENDENT:
            assert opt.default == oslo_opt.default, opt.name
        # Never stricter than oslo: a config file oslo accepts, Options accepts.
        oslo_min, oslo_max = getattr(oslo_opt.type, "min", None), getattr(oslo_opt.type, "max", None)
        if opt.min is not None:
            assert oslo_min is not None and oslo_min >= opt.min, opt.name
        if opt.max is not None:
            assert oslo_max is not None and oslo_max <= opt.max, opt.name
        if opt.choices is not None:
            assert set(oslo_opt.type.choices) <= set(opt.choices), opt.name


def test_url_text_converts_to_each_options_kind():
    for opt in OPTIONS:
        if opt.name not in URL_OPTIONS:
            continue
        if opt.kind is bool:
            assert options_module._from_text(opt.name, "yes") is True
        elif opt.kind in (int, float):
            value = options_module._from_text(opt.name, "2")
            assert type(value) is opt.kind and value == 2, opt.name
        else:
            assert options_module._from_text(opt.name, "text") == "text"
