"""What a model costs where it serves: the time one image takes through it on this machine, its
weight count and its saved size. Tuning searches and bounds them (tune.objectives,
tune.constraints); evaluate and tune.py --register record them on every registered version."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from ml import model

# The first calls trace and compile the predict function (seconds, not milliseconds); the
# median of many calls after them ignores the odd call that a busy machine delays. The figure
# still moves with the machine's load from one measurement to the next (bench/README.md, Tuning
# for speed and size), so models are compared on figures measured side by side.
WARMUP_CALLS, TIMED_CALLS = 10, 100


@dataclass(frozen=True)
class Footprint:
    latency_ms: float  # one image, median over TIMED_CALLS, on the machine that measured it
    params: int  # weights
    size_kb: float  # the saved .keras archive

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def latency_ms(
    cnn: keras.Model,
    image: np.ndarray,
    clock: Callable[[], float] = time.perf_counter,  # tests pass their own
    warmup: int = WARMUP_CALLS,
    repeats: int = TIMED_CALLS,
) -> float:
    """The median time of one image through `predict_on_batch`, the call serving makes
    (tracking.served_model), in milliseconds."""
    batch = image.reshape((1, *cnn.input_shape[1:]))
    for _ in range(warmup):
        cnn.predict_on_batch(batch)
    times = []
    for _ in range(repeats):
        start = clock()
        cnn.predict_on_batch(batch)
        times.append(clock() - start)
    return statistics.median(times) * 1000


def measure(
    cnn: keras.Model, image: np.ndarray, clock: Callable[[], float] = time.perf_counter
) -> Footprint:
    """Measured on the model as the pipeline saves and serves it (ml.model.save): float32,
    whatever precision trained it, so a trial's latency is the one its model will have."""
    with model.served_copy(cnn) as (served, path):
        return measure_saved(served, path, image, clock)


def measure_saved(
    served: keras.Model,
    path: Path,
    image: np.ndarray,
    clock: Callable[[], float] = time.perf_counter,
) -> Footprint:
    """Measured on a model loaded from the archive at `path` (evaluate's models/model.keras)."""
    return Footprint(
        latency_ms=round(latency_ms(served, image, clock), 4),
        params=served.count_params(),
        size_kb=round(path.stat().st_size / 1024, 1),
    )
