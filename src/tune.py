"""Tune: an Optuna search over params.yaml's tune.space, each trial an MLflow run; use its winner.

    python src/tune.py                                    # the search params.yaml describes
    python src/tune.py --study quick -S tune.n_trials=3 -S train.epochs=2   # a quick one
    python src/tune.py --study quick --apply && dvc repro   # train that study's winner
    python src/tune.py --study quick --register             # or register it as `challenger`
    python src/tune.py --study mo -S 'tune.objectives=[val_accuracy,latency_ms]'  # a Pareto front
    python src/tune.py --study mo --apply --pick fastest:0.1   # fastest within 0.1 pp of the best

Trials train on the training split and are scored on the validation split; the test split is
never read. -S KEY=VALUE changes params.yaml for this command only: tune.* keys shape the search
(e.g. tune.space.train.epochs.high=14), train.* and seed are fixed in every trial and leave the
space. Run the same command in several terminals to search in parallel: the workers share one
study, which resumes where it stopped. --apply and --register run no trial: they act on the
trial --pick chooses so far (the most accurate, unless told otherwise).
"""

from __future__ import annotations

from common import bootstrap

# First: Ctrl-C is one line while the libraries below load, and Keras loads params' backend.
bootstrap.start(__name__, backend_from_params=True)

import argparse
import sys
from collections.abc import Callable
from typing import Any

from common.errors import PipelineError
from ml import config
from tuning.pick import Pick

# What -S may change: the search (tune.*), where its runs go (tracking.*), and what every trial
# trains with (train.*, seed). Trials reuse the preprocessed data, so other sections are the
# pipeline's: change them in params.yaml and run `dvc repro`.
TUNABLE = ("tune", "tracking")
FIXABLE = ("train", "seed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_set_option(parser)
    option = parser.add_argument
    option("--study", type=given(str), help="the study's name (default: tune.study)")
    option("--storage", type=given(str), help="an RDB URL (default: tune.storage, else SQLite)")
    option("--n-trials", type=given(int), help="trials this worker runs (default: tune.n_trials)")
    option("--timeout", type=given(float), help="seconds this worker searches (tune.timeout_s)")
    option("--seed", type=given(int), help="the sampler's seed (default: tune.seed)")
    option("--apply", action="store_true", help="write the study's winner into params.yaml")
    option(
        "--register",
        action="store_true",
        help="retrain the study's winner and register it in MLflow as `challenger`",
    )
    option(
        "--pick",
        type=pick_rule,
        metavar="RULE",
        help="which trial --apply and --register take: accuracy (the most accurate, the "
        "default), fastest:TOL or smallest:TOL (the fastest or smallest within TOL percentage "
        "points of its validation accuracy)",
    )
    args = parser.parse_args(argv)
    if args.pick is not None and not (args.apply or args.register):
        parser.error("--pick chooses the trial for --apply or --register: give one of them")
    return args


def pick_rule(text: str) -> Pick:
    try:
        return Pick.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def given(kind: type) -> Callable[[str], Any]:
    """An option's parser where "" means params.yaml's value (MLproject passes every parameter)."""

    def parse(text: str) -> Any:
        return kind(text) if text else None

    parse.__name__ = kind.__name__  # argparse names it in errors: "invalid int value: 'x'"
    return parse


def fixed_values(overrides: list[str]) -> dict[str, Any]:
    """The -S values every trial trains with; a key outside what tuning reads is an error."""
    fixed = {}
    for key, value in map(config.parse_override, overrides):
        section = key.split(".")[0]
        if section in FIXABLE:
            fixed[key] = value
        elif section not in TUNABLE:
            raise PipelineError(
                f"-S {key}: tune.py reads only tune.*, tracking.*, train.* and seed (trials "
                f"reuse the preprocessed data); change {section} in params.yaml and run "
                f"`dvc repro`"
            )
    return fixed


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as the tune.* values they stand for (validated with params.yaml)."""
    named = {
        "tune.study": args.study,
        "tune.storage": args.storage,
        "tune.n_trials": args.n_trials,
        "tune.timeout_s": args.timeout,
        "tune.seed": args.seed,
    }
    return {key: value for key, value in named.items() if value is not None}


def main() -> None:
    args = parse_args(sys.argv[1:])
    overrides = config.given_overrides(args.set)
    fixed = fixed_values(overrides)
    acting = args.apply or args.register
    if acting and fixed:
        raise PipelineError(
            "--apply and --register use the values the study searched with: drop the train.* "
            "and seed -S values"
        )
    params = config.load(overrides=overrides, values=flag_values(args))
    # Imported only now: TensorFlow takes seconds to load, and --help or a bad flag need not wait.
    from tuning import search

    if acting:
        pick = args.pick or Pick()
        search.act_on_best(params, apply=args.apply, register=args.register, pick=pick)
    else:
        search.search(params, fixed)


if __name__ == "__main__":
    bootstrap.run(main)
