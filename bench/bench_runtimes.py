"""Benchmark: the trained CNN on the Keras call it is served with, beside two other runtimes.

    uv run --with openvino==2026.4.1 --with nncf==3.4.0 --with tf2onnx==1.17.0 \
        --with onnxruntime==1.32.0 python bench/bench_runtimes.py

None of these is a dependency of the project: this measures what a switch of the serving runtime
would buy (bench/README.md, "Serving on the 2-core CPU"). Needs `dvc repro` first
(models/model.keras and data/processed). OpenVINO's model converter and NNCF send anonymous usage
data unless opted out: run `uv run --with openvino==2026.4.1 opt_in_out --opt_out` once before.

One process, side by side on the 10,000 test images: `predict_on_batch` in chunks of 2,048 (what
served_model.py calls: the baseline); the model exported with Keras' own `model.export` to
OpenVINO (compiled for latency, fp32) and to ONNX (ONNX Runtime, fp32); and each export quantized
to int8 by its own toolkit (NNCF; onnxruntime.quantization, QDQ), calibrated on 300 validation
images, never the test set. For each: images/s (best of 5 passes), one-image p50 over 300 calls,
test accuracy, agreement with the baseline's digits and the largest probability difference.
`--repeats` rounds (3) of the timings, the runtimes taking turns in each; every round is kept.
Writes bench/results/runtimes.json, with the model file's SHA-256.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import bootstrap

bootstrap.start(__name__)  # first: quiets the libraries below as they load

import keras

import provenance
from bench_serving import timed, timed_passes
from common import paths
from ml import data, model, runtime

RESULTS = Path(__file__).resolve().parent / "results" / "runtimes.json"
CHUNK = 2048  # served_model.CHUNK
CALIBRATION_IMAGES = 300
BASELINE = "keras_predict_on_batch"  # what served_model.py calls
Predict = Callable[[np.ndarray], np.ndarray]


def openvino_runtimes(cnn: keras.Model, calibration: np.ndarray) -> dict[str, Predict]:
    import nncf
    import openvino as ov

    core = ov.Core()
    settings = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    with tempfile.TemporaryDirectory() as scratch:  # compiled models keep no tie to the files
        xml = str(Path(scratch) / "model.xml")
        cnn.export(xml, format="openvino", verbose=False)
        fp32 = core.read_model(xml)
        batches = nncf.Dataset([image[np.newaxis] for image in calibration])
        int8 = nncf.quantize(fp32, batches, subset_size=len(calibration))
        compiled = {
            name: core.compile_model(m, "CPU", settings)
            for name, m in (("fp32", fp32), ("int8", int8))
        }
    return {f"openvino_{name}": lambda images, c=c: c(images)[0] for name, c in compiled.items()}


def onnx_runtimes(cnn: keras.Model, calibration: np.ndarray) -> dict[str, Predict]:
    import onnxruntime as ort
    from onnxruntime import quantization

    class Calibration(quantization.CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.batches = iter([{name: image[np.newaxis]} for image in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    sessions = {}
    with tempfile.TemporaryDirectory() as scratch:
        fp32, prepared, int8 = (str(Path(scratch) / f"{n}.onnx") for n in ("fp32", "pre", "int8"))
        cnn.export(fp32, format="onnx", verbose=False)
        quantization.quant_pre_process(fp32, prepared)
        name = ort.InferenceSession(fp32).get_inputs()[0].name
        quantization.quantize_static(prepared, int8, Calibration(name))
        for label, path in (("fp32", fp32), ("int8", int8)):
            sessions[label] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return {
        f"onnxruntime_{label}": lambda images, s=session: s.run(None, {name: images})[0]
        for label, session in sessions.items()
    }


def chunked(predict: Predict, images: np.ndarray) -> np.ndarray:
    return np.concatenate([predict(images[i : i + CHUNK]) for i in range(0, len(images), CHUNK)])


def images_per_s(predict: Predict, images: np.ndarray, passes: int = 5) -> int:
    return round(len(images) / min(timed_passes(passes, lambda: chunked(predict, images))))


def one_image_p50_ms(predict: Predict, images: np.ndarray, calls: int = 300) -> float:
    predict(images[:1])
    latencies = [timed(lambda i=i: predict(images[i : i + 1])) * 1000 for i in range(calls)]
    return round(statistics.median(latencies), 3)


def agreement(predict: Predict, test: data.Split, baseline: np.ndarray) -> dict[str, float]:
    """What a runtime's answers are worth: the same on every repeat, so measured once."""
    probabilities = chunked(predict, test.x)
    return {
        "test_accuracy": float((probabilities.argmax(1) == test.y).mean()),
        "same_digit_as_keras": float((probabilities.argmax(1) == baseline.argmax(1)).mean()),
        "max_probability_difference": float(np.abs(probabilities - baseline).max()),
    }


def timings(runtimes: dict[str, Predict], images: np.ndarray, repeats: int) -> dict[str, dict]:
    """Each runtime's batch rate and one-image p50, the runtimes taking turns within each repeat
    so that a slow spell of the shared machine hits all of them, not one."""
    rates: dict[str, list[int]] = {name: [] for name in runtimes}
    p50s: dict[str, list[float]] = {name: [] for name in runtimes}
    for _ in range(repeats):
        for name, predict in runtimes.items():
            rates[name].append(images_per_s(predict, images))
            p50s[name].append(one_image_p50_ms(predict, images))
    return {
        name: {
            "images_per_s": rates[name],
            "one_image_p50_ms": p50s[name],
            "images_per_s_vs_keras": [
                round(rate / keras, 2)
                for rate, keras in zip(rates[name], rates[BASELINE], strict=True)
            ],
        }
        for name in runtimes
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds over every runtime")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be 1 or more")
    runtime.configure()
    cnn = model.without_augmentation(model.load(paths.MODEL_FILE))
    test = data.load_split(paths.PROCESSED_DIR / "test.npz")
    val = data.load_split(paths.PROCESSED_DIR / "val.npz")
    runtimes = {BASELINE: lambda images: np.asarray(cnn.predict_on_batch(images))}
    runtimes[BASELINE](test.x[:1])  # a Keras model must have run to be exported
    runtimes |= openvino_runtimes(cnn, val.x[:CALIBRATION_IMAGES])
    runtimes |= onnx_runtimes(cnn, val.x[:CALIBRATION_IMAGES])
    baseline = chunked(runtimes[BASELINE], test.x)
    timed_rounds = timings(runtimes, test.x, args.repeats)
    results = {
        "command": " ".join(["python", "bench/bench_runtimes.py", *sys.argv[1:]]),
        "model": {
            "file": str(paths.MODEL_FILE.relative_to(paths.ROOT)),
            "sha256": data.sha256(paths.MODEL_FILE.read_bytes()),
        },
        "repeats": args.repeats,
        "runtimes": {
            name: {**timed_rounds[name], **agreement(predict, test, baseline)}
            for name, predict in runtimes.items()
        },
        **provenance.record(),
    }
    runtime_packages = ("openvino", "nncf", "tf2onnx", "onnxruntime")
    results["versions"] |= {p: metadata.version(p) for p in runtime_packages}
    provenance.save(RESULTS, results)


if __name__ == "__main__":
    bootstrap.run(main)  # a missing model is one line naming the fix, not a traceback
