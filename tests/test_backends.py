"""The same training, saving and loading on every Keras backend installed (CPU, subprocesses).

TensorFlow and JAX come from the lock (JAX from the `backends` group that .ci/run installs);
the torch test runs where torch is installed and is skipped, saying so, where it is not.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from conftest import REPO, run_stage, update_params

INSTALLED = [name for name in ("tensorflow", "jax", "torch") if importlib.util.find_spec(name)]
BACKENDS = [
    pytest.param(
        name, marks=pytest.mark.skipif(name not in INSTALLED, reason=f"{name} is not installed")
    )
    for name in ("tensorflow", "jax", "torch")
]
PROBE = REPO / "tests" / "backend_probe.py"
# Blocks these imports in a subprocess: what a bare GPU box without them would do.
BLOCKER = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked}:
            raise ModuleNotFoundError(f"blocked for this test: {{name}}")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
sys.path.insert(0, sys.argv[0].rpartition("/")[0])  # as `python script.py` does
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def python(args: list[str], env: dict[str, str]) -> str:
    """Run this interpreter with `args` and `env` added to ours; return its stdout."""
    result = subprocess.run(
        [sys.executable, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def probe(backend: str, out: Path, *others: Path) -> dict:
    paths = f"{REPO / 'src'}{os.pathsep}{REPO / 'tests'}"
    args = [str(PROBE), str(out), *map(str, others)]
    stdout = python(args, {"KERAS_BACKEND": backend, "PYTHONPATH": paths})
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Each installed backend trained twice from the same seed; the second run also loads the
    models every backend saved in the first."""
    out = tmp_path_factory.mktemp("backends")
    first = {name: probe(name, out) for name in INSTALLED}
    saved = sorted(out.glob("*.keras"))
    return {name: [first[name], probe(name, out, *saved)] for name in INSTALLED}


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_with_weight_averaging_saves_loads_predicts_and_evaluates(runs, backend):
    run = runs[backend][0]
    assert run["device"].startswith(f"{backend} on CPU")
    reloaded, in_memory = np.array(run["predictions"]), np.array(run["in_memory_predictions"])
    assert reloaded.shape == (50, 10)
    np.testing.assert_allclose(reloaded.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(reloaded, in_memory, atol=1e-6)  # the file holds what was trained
    loss, accuracy = run["evaluate"]
    assert np.isfinite(loss) and accuracy > 0.1  # learned something: chance is 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_seed_gives_the_same_losses_on_cpu(runs, backend):
    first, second = runs[backend]
    assert first["losses"] == second["losses"]
    assert first["predictions"] == second["predictions"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_saved_by_any_backend_predicts_the_same_on_this_one(runs, backend):
    here = runs[backend][1]["others"]
    for saver, saver_runs in runs.items():
        np.testing.assert_allclose(
            np.array(here[saver]),
            np.array(saver_runs[0]["predictions"]),
            atol=1e-5,
            err_msg=f"{saver}'s model loaded on {backend}",
        )


def test_the_gpu_bench_runs_without_tensorflow_mlflow_and_dvc(mirror, tmp_path):
    """bench_gpu on JAX, in a process where importing tensorflow, mlflow or dvc fails."""
    pytest.importorskip("jax")
    bench = REPO / "bench"
    out = tmp_path / "gpu.json"
    blocker = BLOCKER.format(blocked={"tensorflow", "mlflow", "dvc"})
    args = ["--mnist", str(mirror[0]), "--train-images", "200", "--out", str(out)]
    args += ["-S", "train.epochs=2", "-S", "preprocess.val_size=50", "--arm", "float32:1:32"]
    python(["-c", blocker, str(bench / "bench_gpu.py"), *args], {"KERAS_BACKEND": "jax"})
    report = json.loads(out.read_text())
    assert report["backend"] == "jax"
    (arm,) = report["arms"]
    assert arm["device"] == "jax on CPU, float32" and arm["epochs"] == 2
    assert 0 <= arm["test_accuracy"] <= 1 and arm["predict_images_per_s"] > 0
    assert {"commit", "dirty", "versions", "machine"} <= set(report)


def test_a_backend_set_only_in_the_environment_stops_the_stage_in_one_line(project):
    """DVC never sees KERAS_BACKEND: a stage refuses one that disagrees with train.backend
    before Keras loads, and names the command that makes DVC see it."""
    result = run_stage(project, "train", env={"KERAS_BACKEND": "jax"})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "error: KERAS_BACKEND=jax but params.yaml has train.backend: tensorflow, and DVC sees "
        "only the param: run `dvc exp run -S train.backend=jax` (or unset KERAS_BACKEND)\n"
    )


@pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
def test_the_backend_param_is_the_one_the_stages_train_and_record(project, mirror):
    update_params(project, {"train": {"backend": "jax"}})
    (project / "data").mkdir(exist_ok=True)
    (project / "data" / "raw").symlink_to(mirror[0])
    env = {"KERAS_BACKEND": ""}  # unset: the param alone decides
    for stage in ("preprocess", "train", "evaluate"):
        result = run_stage(project, stage, env=env)
        assert result.returncode == 0, f"{stage}: {result.stderr[-2000:]}"
        if stage == "train":
            assert "training on jax on CPU" in result.stdout
    (run,) = mlflow.search_runs(experiment_names=["mnist-cnn"], output_format="list")
    assert run.data.params["train.backend"] == "jax"
    assert run.data.tags["device"].startswith("jax on CPU")
