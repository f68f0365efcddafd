"""The options of a run, written once: each is a Locust flag (with a ``LOSSBENCH_*`` environment variable)
and, unless Locust-only, a flag of ``lossbench run``, which passes it on to Locust unchanged.

Each field of ``PluginOptions`` is one option: its name, type and default are the field's, its flag, help,
environment variable and choices are in the field's metadata. ``OPTIONS`` lists them; the two parsers and
the translation back into a Locust command line are built from that list, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from lossbench.contract.server import REFERENCE_CORS_MAX_AGE, REFERENCE_IDLE_TIMEOUT, ServerHints
from lossbench.contract.techniques import ABORTS, CLOSE_MODES
from lossbench.model.browser import BROWSERS, DEFAULT_BROWSER, get_browser
from lossbench.model.exits import DEFAULT_EXIT_MODEL
from lossbench.model.predict import predict_loss
from lossbench.model.profiles import DEFAULT_PROFILE, PROFILES

Value = str | int | float | bool
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")  # configargparse's spellings


@dataclass(frozen=True)
class Option:
    """One option, as both parsers declare it."""

    name: str  # the attribute (argparse ``dest``); the flag is ``--`` plus it with dashes
    default: Value  # its type is the option's type; a bool is a flag that takes no value
    help: str
    env: str
    choices: tuple[str, ...] | None = None
    run_aliases: tuple[str, ...] = ()  # more spellings in lossbench run (Locust owns --profile)
    locust_only: bool = False  # lossbench run sets it itself (run directory, no summary)
    web_ui: bool = True  # shown in Locust's web UI

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse_env(self, environ: Mapping[str, str]) -> Value:
        """The default, or the value of the environment variable as Locust reads it (configargparse);
        ValueError naming the variable when it cannot be read."""
        raw = environ.get(self.env)
        if raw is None:
            return self.default
        try:
            if isinstance(self.default, bool):
                if raw.lower() not in _TRUE + _FALSE:
                    raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")
                return raw.lower() in _TRUE
            value = type(self.default)(raw)
            if self.choices is not None and value not in self.choices:
                raise ValueError(f"choose from {', '.join(self.choices)}")
        except ValueError as exc:
            raise ValueError(f"{self.env}={raw!r} is not a valid {self.flag}: {exc}") from None
        return value


def _option(
    default: Value,
    help: str,
    env: str,
    *,
    choices: tuple[str, ...] | None = None,
    run_aliases: tuple[str, ...] = (),
    locust_only: bool = False,
    web_ui: bool = True,
) -> Any:  # a dataclass field whose type is the attribute's (mypy's dataclass plugin reads the annotation)
    spec = {"help": help, "env": env, "choices": choices, "run_aliases": run_aliases,
            "locust_only": locust_only, "web_ui": web_ui}  # fmt: skip
    return field(default=default, metadata={"option": spec})


_PROFILES = ", ".join(f"{p.name} ({p.rtt * 1000:g} ms)" for p in PROFILES.values())


@dataclass(frozen=True)
class PluginOptions:
    """What the Locust plugin is told, typed: ``PluginOptions.of(environment.parsed_options)``."""

    run_dir: str = _option(
        "",
        "run directory for ledgers and results (default: results/<timestamp>)",
        "LOSSBENCH_RUN_DIR",
        locust_only=True,
    )
    network_profile: str = _option(
        DEFAULT_PROFILE,
        f"network profile (Locust owns --profile), from WebPageTest and Lighthouse presets: {_PROFILES} "
        "(default: %(default)s)",
        "LOSSBENCH_PROFILE",
        run_aliases=("--profile",),
    )
    exit_model: str = _option(
        DEFAULT_EXIT_MODEL,
        "when pages go away: mix (default), dwell (Weibull dwell, Liu et al. SIGIR 2010), outbound "
        "(click then navigate), none (zero-loss control), fixed:SECONDS[@AT]",
        "LOSSBENCH_EXIT_MODEL",
    )
    abort: str = _option(
        "unload",
        "unload: bytes in flight arrive; drop: the network vanished, the last half RTT is lost",
        "LOSSBENCH_ABORT",
        choices=ABORTS,
    )
    seed: int = _option(1, "random seed (default: %(default)s)", "LOSSBENCH_SEED")
    techniques: str = _option(
        "",
        "comma-separated subset of the scenario's techniques (default: all of them)",
        "LOSSBENCH_TECHNIQUES",
    )
    browser: str = _option(
        DEFAULT_BROWSER,
        "how the socket client behaves: chromium (default: Chromium's connection pool, preflight cache and "
        "FIN on the cut, calibrated against it), seed (lossbench's first model: a new connection and a "
        "preflight for every event, RST on the cut; the four seed techniques only)",
        "LOSSBENCH_BROWSER",
        choices=tuple(BROWSERS),
    )
    close_mode: str = _option(
        "preset",
        "how a cut closes a request's socket: fin (Chromium closing a tab), rst (the browser process "
        "killed), silent (the network vanished); preset (default): the --browser preset's, fin for "
        "chromium, rst for seed",
        "LOSSBENCH_CLOSE_MODE",
        choices=("preset", *CLOSE_MODES),
    )
    target_idle_timeout: float = _option(
        REFERENCE_IDLE_TIMEOUT,
        "seconds the collector keeps an idle connection open: pooled connections older than this are "
        "gone (the reference collector's --idle-timeout, default %(default)s; 30 in lossbench's nginx "
        "config, 75 in its aiohttp app). lossbench run sets it from the target it starts",
        "LOSSBENCH_TARGET_IDLE_TIMEOUT",
    )
    target_max_age: float = _option(
        float(REFERENCE_CORS_MAX_AGE),
        "the Access-Control-Max-Age the collector answers preflights with: a preflight answer is reused "
        "that long (Chromium caps it at 7200; -1: the header is absent, cached 5 s). The reference "
        "collector's --cors-max-age, default %(default)s; lossbench run sets it from the target it starts",
        "LOSSBENCH_TARGET_MAX_AGE",
    )
    real_time: bool = _option(
        False,
        "keep idle gaps real (slow; for keep-alive races with the collector's idle timeout)",
        "LOSSBENCH_REAL_TIME",
    )
    precision: float = _option(
        0.0,
        "stop as soon as every technique's 95-percent interval is within ±PRECISION percentage points "
        "(and has 2,000 events), --duration (Locust: --run-time) being the limit; stopping on the "
        "interval's width keeps the intervals honest (docs/MODEL.md). 0: off, the run lasts its duration "
        "(the default of locust -f, sweep and targets; lossbench run: 0.25, about what a 60 s run reaches)",
        "LOSSBENCH_PRECISION",
    )
    lag_stop: float = _option(
        0.0,
        "stop the run when the load generator's p90 timing error over the last 10 s stays above the limit "
        "compare warns at (10 percent of the median RTT, at least 30 ms) for LAG_STOP seconds: its "
        "collector would see a late schedule (docs/MODEL.md). 0: never, the default of locust -f, sweep "
        "and targets, which hold their load on purpose; lossbench run: 20",
        "LOSSBENCH_LAG_STOP",
    )
    no_summary: bool = _option(
        False,
        "do not compare and report at the end (lossbench run does it itself)",
        "LOSSBENCH_NO_SUMMARY",
        locust_only=True,
        web_ui=False,
    )

    @classmethod
    def of(cls, namespace: argparse.Namespace) -> PluginOptions:
        """The options Locust parsed (workers get them from the master at spawn)."""
        return cls(**{option.name: getattr(namespace, option.name) for option in OPTIONS})

    def server_hints(self) -> ServerHints:
        """What the target tells browsers about keeping connections and preflight answers."""
        max_age = None if self.target_max_age < 0 else self.target_max_age
        return ServerHints(idle_timeout=self.target_idle_timeout, cors_max_age=max_age)

    def effective_close_mode(self) -> str:
        """--close-mode, or the --browser preset's way of closing a cut connection."""
        return get_browser(self.browser).close_mode if self.close_mode == "preset" else self.close_mode

    def chosen_techniques(self) -> tuple[str, ...]:
        """--techniques as a tuple; empty means every technique of the scenario."""
        return tuple(t.strip() for t in self.techniques.split(",") if t.strip())

    def predict(
        self, techniques: Iterable[str], events: int, server: ServerHints | None = None
    ) -> dict[str, float]:
        """The model's loss per technique for a run with these options: its profile, exit model, abort,
        seed and browser, against what the target tells browsers (``server``; else these options' own).
        A Monte Carlo of ``events`` events; ValueError for a technique the model does not know."""
        predicted = predict_loss(
            self.network_profile,
            self.exit_model,
            self.abort,
            tuple(techniques),
            seed=self.seed,
            events=events,
            browser=self.browser,
            server=server or self.server_hints(),
        )
        return {str(tech): p.loss for tech, p in predicted.items()}


def _options() -> tuple[Option, ...]:
    options = []
    for f in fields(PluginOptions):
        assert isinstance(f.default, str | int | float | bool), f"{f.name}: every option has a default"
        options.append(Option(f.name, f.default, **f.metadata["option"]))
    return tuple(options)


OPTIONS: tuple[Option, ...] = _options()


class LocustParser(Protocol):
    """Locust's parser (configargparse), as far as the options need it: ``env_var`` and web-UI keywords."""

    def add_argument(self, *flags: str, **keywords: Any) -> Any: ...


def add_locust_arguments(parser: LocustParser) -> None:
    """Every option, on Locust's own parser (its web-UI keywords work there, not on argument groups)."""
    for option in OPTIONS:
        keywords: dict[str, Any] = {"dest": option.name, "env_var": option.env, "default": option.default}
        if not option.web_ui:
            keywords["include_in_web_ui"] = False
        parser.add_argument(option.flag, help=option.help, **keywords, **_value_keywords(option))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options lossbench run passes on, on its argparse parser, with the same choices. Their defaults
    are the table's, or the environment's as for Locust, decided by ``run_options`` (not here: a bad
    variable must not break the other commands, which build the same parser)."""
    for option in OPTIONS:
        if not option.locust_only:
            parser.add_argument(
                option.flag,
                *option.run_aliases,
                dest=option.name,
                default=None,  # not given
                help=option.help % {"default": option.default},
                **_value_keywords(option, none_when_absent=True),
            )


def _value_keywords(option: Option, *, none_when_absent: bool = False) -> dict[str, Any]:
    """How the option takes its value; with ``none_when_absent`` a flag not given is None, not False."""
    if isinstance(option.default, bool):
        return {"action": "store_const", "const": True} if none_when_absent else {"action": "store_true"}
    return {"type": type(option.default), "choices": option.choices}


def locust_arguments(options: PluginOptions) -> list[str]:
    """The options as Locust flags, every one of them: the environment of the Locust process then
    changes nothing that lossbench run decided (a flag that is off has no flag to say so)."""
    arguments: list[str] = []
    for option in OPTIONS:
        value = getattr(options, option.name)
        if isinstance(value, bool):
            arguments += [option.flag] if value else []
        else:
            arguments += [option.flag, str(value)]
    return arguments


def run_options(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> PluginOptions:
    """What lossbench run was given, as the options it passes on: each one given, or else its environment
    variable's value, or else the table's default (the Locust-only ones are lossbench run's to set)."""
    values: dict[str, Any] = {}  # each of its option's type
    for option in OPTIONS:
        if not option.locust_only:
            given = getattr(args, option.name)
            values[option.name] = given if given is not None else option.parse_env(environ)
    return PluginOptions(**values)
