"""The model registry's policy: every evaluated version becomes `challenger`, tagged with its test
accuracy; `champion` is the best-scoring judged version at or above the floor (the newest among
equals). The champion is settled by an optimistic loop rather than a lock, so it is safe however
many evaluations finish at once, on one machine or many sharing a tracking server (see
`settle_champion`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, ErrorCode

from common import redact
from tracking import store

CHAMPION, CHALLENGER = "champion", "challenger"
SCORE_TAG = "test_accuracy"  # set only by evaluate: versions without it are never champion
MAINTAINER_TAG = "maintainer"  # on a registered model: the account that registers its versions
# Each round re-reads after writing; a round only repeats when another evaluation wrote in
# between, so even many racing evaluations settle in a few rounds.
MAX_ROUNDS = 20


@dataclass(frozen=True)
class Decision:
    promote: bool
    accuracy: float
    champion_accuracy: float | None
    floor: float

    def describe(self) -> str:
        before = (
            "no champion yet"
            if self.champion_accuracy is None
            else f"champion {self.champion_accuracy:.4f}"
        )
        verdict = "becomes champion" if self.promote else "stays challenger"
        return f"test accuracy {self.accuracy:.4f} vs {before} (floor {self.floor:.4f}): {verdict}"


def best_version(scores: Mapping[str, float], floor: float) -> str | None:
    """The judged version with the highest score at or above the floor; the newest among equals."""
    eligible = [version for version, score in scores.items() if score >= floor]
    return max(eligible, key=lambda v: (scores[v], int(v)), default=None)


def judged_scores(client: mlflow.MlflowClient, name: str) -> dict[str, float]:
    """{version: test accuracy} of every version evaluate has judged."""
    versions = client.search_model_versions(f"name = '{name}'")
    return {
        str(v.version): float(v.tags[SCORE_TAG]) for v in versions if SCORE_TAG in (v.tags or {})
    }


def alias_version(client: mlflow.MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def settle_champion(
    client: mlflow.MlflowClient,
    name: str,
    floor: float,
    before_write: Callable[[], None] = lambda: None,
) -> str | None:
    """Point `champion` at the best judged version; return it (None: none reaches the floor).

    Read the scores, write the alias, read the scores again: done when nothing changed. Why this
    is safe without a lock: every evaluation tags its score before its first read, so the last
    read of all sees every score; whoever writes after that read must read again, so the alias
    left at the end is the best. A plain read-decide-write could leave the worse of two racing
    models as champion. `before_write` lets tests run a rival evaluation at the worst moment.
    """
    scores = judged_scores(client, name)
    for _ in range(MAX_ROUNDS):
        best = best_version(scores, floor)
        if best is not None and alias_version(client, name, CHAMPION) != best:
            before_write()
            client.set_registered_model_alias(name, CHAMPION, best)
        again = judged_scores(client, name)
        if again == scores:
            return best
        scores = again
    raise store.TrackingError(
        f"the champion of {name} did not settle in {MAX_ROUNDS} rounds: other evaluations kept "
        f"writing; rerun `python src/evaluate.py` once they are done"
    )


def apply_registry_policy(
    name: str,
    version: str,
    accuracy: float,
    floor: float,
    before_write: Callable[[], None] = lambda: None,
    evidence: Mapping[str, Any] | None = None,  # more tags: what it costs to serve, say
) -> Decision:
    """Make the new version `challenger`, tag its score, and settle `champion` (see above)."""
    client = mlflow.MlflowClient()
    before = alias_version(client, name, CHAMPION)
    before_accuracy = judged_scores(client, name).get(before) if before else None
    mark_challenger(
        client,
        name,
        version,
        {**(evidence or {}), "champion_accuracy_before": before_accuracy, "floor": floor},
    )
    # The score goes last: from this write on, any racing evaluation counts this version in.
    client.set_model_version_tag(name, version, SCORE_TAG, f"{accuracy:.6f}")
    champion = settle_champion(client, name, floor, before_write)
    decision = Decision(champion == version, accuracy, before_accuracy, floor)
    client.set_model_version_tag(name, version, "decision", decision.describe())
    return decision


def mark_challenger(
    client: mlflow.MlflowClient, name: str, version: str, tags: Mapping[str, Any]
) -> None:
    """Point `challenger` at the version and tag it with the evidence it was judged on."""
    client.set_registered_model_alias(name, CHALLENGER, version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


class NotAllowed(store.TrackingError):
    """The tracking server lets this account read the registered model, not change it."""


@contextmanager
def allowed_to_change(name: str) -> Iterator[None]:
    """Turn the server's refusal of a registry write (HTTP 403) into one line saying whose it
    is: on a team's server only the maintainer registers versions and moves aliases, since
    `champion` decides what predict.py and serve.py run for everyone."""
    try:
        yield
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(PERMISSION_DENIED):
            raise
        account = os.environ.get("MLFLOW_TRACKING_USERNAME") or "this account"
        maintainer = maintainer_of(name)
        who = f"its maintainer ({maintainer})" if maintainer else "an account with EDIT on it"
        raise NotAllowed(
            f"account {account} may not register versions of {name} or move its aliases on "
            f"{redact.uri(mlflow.get_tracking_uri())}; {who} may"
        ) from err


def maintainer_of(name: str) -> str | None:
    try:
        tags = mlflow.MlflowClient().get_registered_model(name).tags
    except MlflowException:
        return None
    return tags.get(MAINTAINER_TAG)
