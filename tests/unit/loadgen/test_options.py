"""One option table (``lossbench.loadgen.locust.options``) builds both parsers: Locust's flags and
``lossbench run``'s. Locust's parser is built in a child process, as Locust builds it (importing Locust
monkey-patches the whole process with gevent)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from lossbench.cli import build_parser
from lossbench.loadgen.locust.options import (
    OPTIONS,
    PluginOptions,
    locust_arguments,
    run_options,
)
from support import ROOT

LOCUST_PARSER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lossbench.loadgen.locust.lifecycle  # the plugin listens to init_command_line_parser
    from locust.argument_parser import get_parser

    parser = get_parser(default_config_files=[])
    names = json.loads(sys.argv[1])
    declared = {
        a.dest: {"flags": a.option_strings, "default": a.default, "choices": list(a.choices or []) or None}
        for a in parser._actions if a.dest in names
    }
    parsed = [
        {name: getattr(parser.parse_args(["-f", "x.py", *argv], env_vars=env), name) for name in names}
        for argv, env in json.loads(sys.argv[2])
    ]
    print(json.dumps({"declared": declared, "parsed": parsed}))
    """
)

FLAGS = ["--profile", "Cable", "--exit-model", "fixed:0.6", "--abort", "drop", "--seed", "7",
         "--techniques", "pixel,ajax", "--close-mode", "fin", "--real-time",
         "--precision", "0.25"]  # fmt: skip
GIVEN = PluginOptions(network_profile="Cable", exit_model="fixed:0.6", abort="drop", seed=7,
                      techniques="pixel,ajax", close_mode="fin", real_time=True, precision=0.25)  # fmt: skip
ENV = {"LOSSBENCH_SEED": "5", "LOSSBENCH_CLOSE_MODE": "silent", "LOSSBENCH_REAL_TIME": "true",
       "LOSSBENCH_PROFILE": "Cable", "LOSSBENCH_PRECISION": "0.5"}  # fmt: skip


@pytest.fixture(scope="module")
def locust() -> dict[str, Any]:
    """Locust's parser with the plugin's options: what it declares, and what it makes of the flags of
    FLAGS (Locust owns --profile), of them translated from lossbench run's, of the defaults translated, of
    nothing, and of nothing with ENV. One child process for all (importing Locust takes a while)."""
    names = [option.name for option in OPTIONS]
    cases = [
        (["--network-profile", *FLAGS[1:]], {}),
        (locust_arguments(GIVEN), {}),
        (locust_arguments(PluginOptions()), {}),
        ([], {}),
        ([], ENV),
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LOSSBENCH_", "LOCUST_"))}
    result = subprocess.run(
        [sys.executable, "-c", LOCUST_PARSER_SCRIPT, json.dumps(names), json.dumps(cases)],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return answer


def run_parser() -> argparse.ArgumentParser:
    """The ``lossbench run`` subparser, as the command line builds it."""
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = subparsers.choices["run"]
    return parser


def test_both_parsers_declare_the_same_options_with_the_same_defaults_and_choices(
    locust: dict[str, Any],
) -> None:
    declared_by_locust = locust["declared"]
    run_actions = {a.dest: a for a in run_parser()._actions}
    assert set(declared_by_locust) == {option.name for option in OPTIONS}
    for option in OPTIONS:
        declared = declared_by_locust[option.name]
        assert declared["flags"] == [option.flag]
        assert declared["default"] == option.default, option.name
        assert declared["choices"] == (list(option.choices) if option.choices else None), option.name
        if option.locust_only:  # lossbench run sets these itself
            assert option.name not in run_actions
            continue
        run = run_actions[option.name]
        assert option.flag in run.option_strings
        assert (list(run.choices) if run.choices else None) == declared["choices"], option.name
    nothing_given = PluginOptions(**locust["parsed"][3])
    assert nothing_given == PluginOptions() == run_options(run_parser().parse_args([]), environ={})


def test_lossbench_run_passes_its_options_on_to_locust_unchanged(locust: dict[str, Any]) -> None:
    """lossbench run's options, translated into Locust flags, parse back into the same values; and each
    parser reads the same values from the same flags."""
    assert run_options(run_parser().parse_args(FLAGS), environ=ENV) == GIVEN  # a flag beats a variable
    from_flags, from_translation, from_defaults = locust["parsed"][:3]
    assert PluginOptions(**from_flags) == GIVEN
    assert PluginOptions(**from_translation) == GIVEN
    assert PluginOptions(**from_defaults) == PluginOptions()


def test_environment_variables_set_the_same_defaults_in_both(locust: dict[str, Any]) -> None:
    from_run = run_options(run_parser().parse_args([]), environ=ENV)
    assert from_run == PluginOptions(**locust["parsed"][4])
    assert (from_run.seed, from_run.real_time, from_run.close_mode) == (5, True, "silent")
    assert from_run.precision == 0.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOSSBENCH_SEED", "many"),
        ("LOSSBENCH_ABORT", "explode"),
        ("LOSSBENCH_REAL_TIME", "maybe"),
        ("LOSSBENCH_PRECISION", "fine"),
    ],
)
def test_a_bad_environment_variable_is_named(name: str, value: str) -> None:
    option = next(o for o in OPTIONS if o.env == name)
    with pytest.raises(ValueError, match=f"{name}='{value}' is not a valid {option.flag}"):
        option.parse_env({name: value})


def test_techniques_empty_means_all_of_the_scenario() -> None:
    assert PluginOptions().chosen_techniques() == ()
    assert PluginOptions(techniques=" pixel, ajax ,").chosen_techniques() == ("pixel", "ajax")


@pytest.mark.parametrize(
    "argv", [["targets", "--precision", "1"], ["run", "--client", "chromium", "--precision", "1"]]
)
def test_precision_is_refused_where_nothing_would_stop_on_it(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(argv)
    assert args.func(args) == 2  # before starting anything
    assert "--precision" in capsys.readouterr().err
