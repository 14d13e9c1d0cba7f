"""The team stack on one machine, to try team mode before pointing the same code at real services:
PostgreSQL, an S3 API (moto's server) and an MLflow server with basic auth, all on 127.0.0.1.

    python src/team_stack.py start     # start it; then `source <its dir>/env` in each terminal
                                       # (again: restarts whichever server is down)
    python src/team_stack.py status
    python src/team_stack.py stop      # stop it and delete everything it held

The MLflow server keeps runs, models and users in PostgreSQL and proxies artifacts to the S3
bucket; the bucket also holds the DVC remote (under dvc/); tuning workers share studies in
PostgreSQL. Its accounts: `maintainer` (env) registers versions of params.yaml's registered model
and moves its aliases; `member` (member.env) logs runs and reads models. Passwords and keys are
generated, kept in files only the owner can read, and never printed. moto keeps its objects in
memory, so this is a sandbox: `stop` forgets everything.
"""

from __future__ import annotations

from common import bootstrap

bootstrap.start(__name__)  # first: Ctrl-C is one line while the libraries below load, too

import argparse
import sys
from pathlib import Path

from common.errors import PipelineError
from ml import config
from team import stack


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["start", "status", "stop"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=stack.default_dir(),
        help=f"its state (default: {stack.default_dir()})",
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args(sys.argv[1:])
    root = args.dir.resolve()
    if args.action == "start":
        known = (root / "stack.json").exists()
        print(f"{'checking' if known else 'starting'} the team stack in {root} ...", flush=True)
        model = config.load().tracking.registered_model  # the maintainer's to register
        print(stack.report(root, stack.start(root, model)))
    elif args.action == "stop":
        print(f"stopped; {root} deleted" if stack.stop(root) else f"no team stack in {root}")
    elif (root / "stack.json").exists():
        print(stack.report(root, stack.load(root)))
    else:
        raise PipelineError(f"no team stack in {root}: python src/team_stack.py start")


if __name__ == "__main__":
    bootstrap.run(main)
