"""Benchmark: batch inference through the logged model, and single-image latency when served.

    uv run python bench/bench_serving.py      # needs a champion: run `dvc repro` first

Loads `models:/<registered_model>@champion` from the project's MLflow store (as predict.py and
`mlflow models serve` do), predicts the 10,000 test images in batches of 1,000 (best of 3 passes),
then starts `mlflow models serve` on 127.0.0.1 and times 200 sequential one-image requests.
Writes bench/results/serving.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import config
import data
import registry
import tracking

RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"
PORT = 5057


def batch_throughput(uri: str, images: np.ndarray) -> float:
    predict = registry.load_model(uri)
    predict(images[:1000])  # warm-up: graph tracing
    best = min(
        timed(lambda: [predict(images[i : i + 1000]) for i in range(0, len(images), 1000)])
        for _ in range(3)
    )
    return len(images) / best


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def served_latency(uri: str, images: np.ndarray, requests_count: int = 200) -> dict[str, float]:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": tracking.tracking_uri(),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(PORT),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{PORT}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        session = requests.Session()
        bodies = [{"inputs": images[i : i + 1].tolist()} for i in range(requests_count)]
        session.post(f"{url}/invocations", json=bodies[0], timeout=30).raise_for_status()
        latencies = [
            timed(
                lambda b=b: session.post(
                    f"{url}/invocations", json=b, timeout=30
                ).raise_for_status()
            )
            * 1000
            for b in bodies
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50_ms": round(cuts[49], 2), "p95_ms": round(cuts[94], 2), "requests": requests_count}


def main() -> None:
    params = config.load()
    uri = f"models:/{params.tracking.registered_model}@{registry.CHAMPION}"
    test = data.load_split(config.PROCESSED_DIR / "test.npz")
    results = {
        "model": uri,
        "batch_images_per_s": round(batch_throughput(uri, test.x)),
        "served_single_image": served_latency(uri, test.x),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
