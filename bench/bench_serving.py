"""Benchmark: batch inference through the logged model, and single-image latency when served.

    uv run python bench/bench_serving.py      # needs a champion: run `dvc repro` first

Side by side on the 10,000 test images (3 passes each, one call per pass): the logged model
`models:/<registered_model>@champion` through pyfunc (as predict.py and `mlflow models serve`
load it), the same .keras model called directly with `predict_on_batch` (the floor), and with
`model.predict` (what the `mlflow.keras` flavor's pyfunc calls: the baseline). Then it starts
`mlflow models serve` and src/serve.py (the same app behind request guards) in turn on 127.0.0.1
and times 200 sequential one-image requests to each (p50/p95/p99), the image sent as 28x28x1
nested lists, and once more to src/serve.py as one row of 784 pixels (MLflow's server copies the
nested lists before parsing them: bench/README.md); beside them, one-image `predict_on_batch`
calls in this process. The batch figures also as GFLOP/s against this machine's measured
ceiling and paper peak (ceiling.py); the batch floor at other chunk sizes (`chunk_sizes`); and
where a batch's time goes, layer by layer (`layer_breakdown`). Writes bench/results/serving.json.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

# First: the libraries below load with what the stages give them (oneDNN's kernels, quiet
# logs), and so do the servers started from here, which inherit the environment.
bootstrap.start(__name__)

import keras
import numpy as np
import requests

import ceiling
import provenance
from common import paths
from common.errors import PipelineError
from ml import config, data, model
from team import local_servers
from tracking import models, registry, served_model, store

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"
NOISE_S = 0.04  # a cut's best time moved by up to 40 ms between runs on 2 cores (layer_breakdown)


def batch_throughput(uri: str, images: np.ndarray) -> dict[str, dict[str, object]]:
    """Images per second of each way to predict a batch (see the module docstring): the best of
    the passes, and every pass."""
    logged = models.load_model(uri)
    cnn = model.load(paths.MODEL_FILE)
    ways = {
        "logged_model_pyfunc": lambda: logged.predict(images),
        "keras_predict_on_batch": lambda: chunked(cnn, images, served_model.CHUNK),
        "keras_predict_baseline": lambda: cnn.predict(images, batch_size=32, verbose=0),
    }
    rates = {}
    for name, work in ways.items():
        passes = [round(len(images) / seconds) for seconds in timed_passes(3, work)]
        rates[name] = {"images_per_s": max(passes), "passes": passes}
    return rates


def chunked(cnn: keras.Model, images: np.ndarray, chunk: int) -> list:
    return [cnn.predict_on_batch(images[i : i + chunk]) for i in range(0, len(images), chunk)]


def chunk_sizes(
    images: np.ndarray, sizes: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
) -> dict:
    """`predict_on_batch` on the .keras model in chunks of each size, best of 3 passes: what
    tracking.served_model.CHUNK chooses between. Small chunks pay the call per chunk; large ones
    hold the first layers' feature maps in memory rather than in the caches (300 MB for 2048)."""
    cnn = model.load(paths.MODEL_FILE)
    rates = {}
    for size in sizes:
        best = min(timed_passes(3, lambda size=size: chunked(cnn, images, size)))
        rates[str(size)] = round(len(images) / best)
    return {"images_per_s": rates, "served_model_chunk": served_model.CHUNK}


def measured_model(uri: str) -> dict[str, str | None]:
    """Which model was timed: the registry version the alias named, and the .keras file's
    digest (the batch floor and the single-image figures time that file)."""
    digest = hashlib.sha256(paths.MODEL_FILE.read_bytes()).hexdigest()
    return {"uri": uri, "version": models.resolved_version(uri), "model_keras_sha256": digest}


def inference_compute(batch: dict[str, dict]) -> dict:
    """Each batch way's GFLOP/s beside the peaks of this machine, measured now."""
    flops = ceiling.forward_flops(model.load(paths.MODEL_FILE))
    peak = ceiling.measured_gflops()
    return {
        "forward_mflop_per_image": round(flops / 1e6, 2),
        "measured_ceiling_gflops": round(peak, 1),
        "paper_peak": ceiling.paper_gflops(),
        "batch": {
            way: ceiling.report(rate["images_per_s"], flops, peak) for way, rate in batch.items()
        },
    }


def layer_breakdown(images: np.ndarray, ceiling_gflops: float, passes: int = 5) -> dict:
    """Where a batch's time goes: models/model.keras cut after each layer, timed on one chunk
    (served_model.CHUNK images) through `predict_on_batch` (the batch floor's call), best of
    `passes`. A cut that ends in a feature map ends in a global max pool too, so that handing a
    large map back to numpy is not what is timed. A layer's time is its cut's minus the cut
    before it's: the graph stays the model's own, with its fusions. Convolutions and dense layers
    also as GFLOP/s against the ceiling, where their time is above the cuts' noise."""
    cnn = model.load(paths.MODEL_FILE)
    chunk = images[: served_model.CHUNK]
    rows, before = [], 0.0
    for layer in cnn.layers:
        end = layer.output
        if len(end.shape) == 4:
            end = keras.layers.GlobalMaxPooling2D()(end)
        cut = keras.Model(cnn.inputs, end)
        seconds = min(timed_passes(passes, lambda cut=cut: cut.predict_on_batch(chunk)))
        row = {"layer": layer.name, "cut_ms": round(seconds * 1000, 2)}
        row["ms"] = round((seconds - before) * 1000, 2)
        flops = ceiling.layer_flops(layer)
        # Under NOISE_S a layer's time is the difference of two cuts' noise, not a rate.
        if flops and seconds - before > NOISE_S:
            gflops = flops * len(chunk) / (seconds - before) / 1e9
            row["gflops"] = round(gflops, 1)
            row["of_measured_ceiling"] = round(gflops / ceiling_gflops, 3)
        rows.append(row)
        before = seconds
    for row in rows:
        row["share"] = round(row["ms"] / rows[-1]["cut_ms"], 3)
    return {"images": len(chunk), "whole_model_ms": rows[-1]["cut_ms"], "layers": rows}


def timed_passes(passes: int, work) -> list[float]:
    work()  # warm-up: graph tracing
    return [timed(work) for _ in range(passes)]


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def servers(uri: str) -> dict[str, Callable[[int], list[str]]]:
    """The two ways to serve, as commands for a port: MLflow's own and the guarded one."""
    mlflow_serve = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri]
    mlflow_serve += ["--env-manager", "local", "-h", "127.0.0.1", "-p"]
    serve_py = [sys.executable, str(paths.ROOT / "src" / "serve.py"), "--model", uri, "--port"]
    return {
        "mlflow models serve": lambda port: [*mlflow_serve, str(port)],
        "src/serve.py": lambda port: [*serve_py, str(port)],
    }


def served_latency(
    command: Callable[[int], list[str]], images: np.ndarray, count: int = 200
) -> dict[str, float]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": store.tracking_uri(),
    }
    port = (
        local_servers.free_port()
    )  # one per server: one still stopping cannot answer for the next
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:  # the server's stderr: shown if it fails to start
        server = subprocess.Popen(command(port), env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            try:
                local_servers.wait_until_up(server, f"{url}/ping", "the model server")
            except PipelineError as err:
                log.seek(0)
                sys.exit(f"error: {err}:\n{log.read()[-2000:]}")
            latencies = request_latencies(url, images[:count])
        finally:
            server.terminate()
            server.wait(timeout=30)
    return {**percentiles(latencies), "requests": count}


def request_latencies(url: str, images: np.ndarray) -> list[float]:
    """Milliseconds of each one-image request, sent one after another on one connection."""
    session = requests.Session()
    bodies = [{"inputs": images[i : i + 1].tolist()} for i in range(len(images))]
    session.post(f"{url}/invocations", json=bodies[0], timeout=30).raise_for_status()  # warm-up

    def post(body: dict) -> None:
        session.post(f"{url}/invocations", json=body, timeout=30).raise_for_status()

    return [timed(lambda b=b: post(b)) * 1000 for b in bodies]


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies_ms, n=100)
    return {f"p{q}_ms": round(cuts[q - 1], 2) for q in (50, 95, 99)}


def direct_latency(images: np.ndarray, calls: int = 200) -> dict[str, float]:
    """One image per `predict_on_batch` call in this process: what serving adds is the rest."""
    cnn = model.load(paths.MODEL_FILE)
    cnn.predict_on_batch(images[:1])
    return percentiles(
        [timed(lambda i=i: cnn.predict_on_batch(images[i : i + 1])) * 1000 for i in range(calls)]
    )


def main() -> None:
    params = config.load()
    uri = f"models:/{params.tracking.registered_model}@{registry.CHAMPION}"
    test = data.load_split(paths.PROCESSED_DIR / "test.npz")
    rows = test.x.reshape(len(test), -1)
    batch = batch_throughput(uri, test.x)
    compute = inference_compute(batch)
    results = {
        "command": "python bench/bench_serving.py",
        "model": measured_model(uri),
        "batch_images_per_s": batch,
        "compute": compute,
        "batch_chunks": chunk_sizes(test.x),
        "batch_layers": layer_breakdown(test.x, compute["measured_ceiling_gflops"]),
        "served_single_image": {
            name: served_latency(command, test.x) for name, command in servers(uri).items()
        }
        | {"src/serve.py, 784-pixel rows": served_latency(servers(uri)["src/serve.py"], rows)},
        "direct_single_image": direct_latency(test.x),
        **provenance.record(),
    }
    provenance.save(RESULTS, results)


if __name__ == "__main__":
    bootstrap.run(main)
