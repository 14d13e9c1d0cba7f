"""registry: the challenger/champion policy, safe when evaluations race; models load back."""

from __future__ import annotations

import multiprocessing

import mlflow
import numpy as np
import pytest

from ml import config, model
from tracking import models, registry, store

ROUNDS = 20


@pytest.mark.parametrize(
    ("scores", "floor", "best"),
    [
        ({}, 0.99, None),
        ({"1": 0.985}, 0.99, None),
        ({"1": 0.991}, 0.99, "1"),
        ({"1": 0.991, "2": 0.992}, 0.99, "2"),
        ({"1": 0.993, "2": 0.992}, 0.99, "1"),
        ({"1": 0.991, "2": 0.991}, 0.99, "2"),  # equal: the newer version
        ({"9": 0.991, "10": 0.991}, 0.99, "10"),  # versions compare as numbers, not strings
    ],
)
def test_the_champion_is_the_best_judged_version_above_the_floor(scores, floor, best):
    assert registry.best_version(scores, floor) == best


def test_registry_aliases_follow_the_policy_and_the_champion_predicts():
    store.connect(store.tracking_uri())
    mlflow.set_experiment("registry")
    cnn = model.build_cnn(config.ModelSpec(blocks=[config.ConvBlock(filters=2)]))
    pixels = np.zeros((3, 28, 28, 1), dtype=np.uint8)
    champions = []
    for accuracy in (0.991, 0.990, 0.995):
        with mlflow.start_run():
            version = models.log_and_register(cnn, pixels, "digits")
            decision = registry.apply_registry_policy("digits", version, accuracy, floor=0.99)
        champions.append(mlflow.MlflowClient().get_model_version_by_alias("digits", "champion"))
        assert decision.promote is (version != "2")
    assert [str(c.version) for c in champions] == ["1", "1", "3"]
    challenger = mlflow.MlflowClient().get_model_version_by_alias("digits", "challenger")
    assert str(challenger.version) == "3" and challenger.tags["test_accuracy"] == "0.995000"
    served = mlflow.pyfunc.load_model("models:/digits@champion")
    assert served.predict(pixels).shape == (3, 10)


def bare_versions(name: str, count: int) -> list[str]:
    """Registered versions without model files: the policy reads only tags and aliases."""
    client = mlflow.MlflowClient()
    client.create_registered_model(name)
    return [
        str(client.create_model_version(name, source=f"file:///nowhere/{i}").version)
        for i in range(count)
    ]


def test_a_rival_writing_between_our_read_and_write_cannot_leave_the_worse_champion():
    store.connect(store.tracking_uri())
    old, worse, better = bare_versions("race", 3)
    registry.apply_registry_policy("race", old, 0.9900, floor=0.99)

    def rival_finishes_first() -> None:  # the other evaluation runs start to end right here
        if registry.alias_version(mlflow.MlflowClient(), "race", "champion") == old:
            registry.apply_registry_policy("race", better, 0.9930, floor=0.99)

    decision = registry.apply_registry_policy(
        "race", worse, 0.9920, floor=0.99, before_write=rival_finishes_first
    )
    assert registry.alias_version(mlflow.MlflowClient(), "race", "champion") == better
    assert not decision.promote


def race_worker(uri: str, barrier, slot: int, accuracies: list[tuple[float, float]]) -> None:
    """One of two evaluations: in each round, wait for the other, then judge our version."""
    store.connect(uri)
    for round_number, pair in enumerate(accuracies):
        barrier.wait()
        version = str(2 + slot)  # version 1 is the old champion, 2 and 3 the racing models
        registry.apply_registry_policy(f"race-{round_number}", version, pair[slot], floor=0.99)


def test_two_racing_evaluations_keep_the_better_champion(mlflow_store):
    rounds = [(0.9930, 0.9920) if i % 2 else (0.9920, 0.9930) for i in range(ROUNDS)]
    for number in range(ROUNDS):
        old, _, _ = bare_versions(f"race-{number}", 3)
        registry.apply_registry_policy(f"race-{number}", old, 0.9910, floor=0.99)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=race_worker, args=(mlflow_store, barrier, slot, rounds))
        for slot in (0, 1)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    assert [worker.exitcode for worker in workers] == [0, 0]
    client = mlflow.MlflowClient()
    champions = [registry.alias_version(client, f"race-{i}", "champion") for i in range(ROUNDS)]
    expected = ["2" if pair[0] > pair[1] else "3" for pair in rounds]
    assert champions == expected
