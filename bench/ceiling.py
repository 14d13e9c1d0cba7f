"""How close a benchmark comes to the machine's limit: the CNN's floating-point work per image,
and two peaks of the machine that ran it, measured there. The practical ceiling is a large fp32
matrix multiply through the same runtime (Keras on its backend); the paper one is cores x clock x
fp32 lanes x 2 (a fused multiply-add is two operations) x FMA units, read from /proc/cpuinfo.
Machines here differ (AVX2 or AVX-512), so a figure only means something beside its peaks."""

from __future__ import annotations

import math
import os
import time

import keras
import numpy as np

from common import cpu

# fp32 lanes per vector register, by the widest unit the CPU reports.
LANES = {"avx512f": 16, "avx2": 8, "avx": 8}
# Two FMA pipes per core: Intel's server cores since Haswell and AMD's since Zen 2. Zen 4 runs
# AVX-512 on 256-bit pipes, so there the paper peak overstates what AVX-512 can reach by 2x;
# results files say which CPU it was.
FMA_UNITS = 2
MATMUL_SIZE = 2048  # big enough that the multiply, not the call, is what is timed


def forward_flops(cnn: keras.Model) -> int:
    """Multiply-adds x 2 of one image through the convolutions and dense layers: the work that
    matters here (activations, pooling and normalisation add well under 1%)."""
    return sum(layer_flops(layer) for layer in cnn.layers)


def layer_flops(layer: keras.layers.Layer) -> int:
    """One image's multiply-adds x 2 through a convolution or dense layer, 0 through any other
    (read from the layer as its model built it)."""
    if isinstance(layer, keras.layers.Conv2D):
        _, height, width, channels_out = layer.output.shape
        kernel = math.prod(layer.kernel.shape[:-1])  # kh x kw x channels in
        return 2 * height * width * channels_out * kernel
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(layer.kernel.shape)
    return 0


def training_flops(cnn: keras.Model) -> int:
    """Forward plus backward (gradients for inputs and for weights: twice the forward), the
    usual 3x estimate of a training step's work per image."""
    return 3 * forward_flops(cnn)


def measured_gflops(dtype: str = "float32", repeats: int = 5) -> float:
    """GFLOP/s of the best of `repeats` multiplies of two MATMUL_SIZE-square matrices."""
    rng = np.random.default_rng(0)
    a, b = (
        keras.ops.convert_to_tensor(rng.random((MATMUL_SIZE,) * 2, np.float32), dtype) for _ in "ab"
    )
    keras.ops.convert_to_numpy(keras.ops.matmul(a, b))  # warm-up: the runtime picks its kernel
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, b))  # to numpy: waits for the result
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / best / 1e9


def paper_gflops() -> dict[str, float | int | str] | None:
    """The fp32 peak the CPU's data sheet implies (None off Linux)."""
    fields, flags = cpu.fields(), cpu.flags()
    unit = next((flag for flag in LANES if flag in flags), None)
    if unit is None or "cpu MHz" not in fields:
        return None
    cores = os.cpu_count() or 1
    ghz = float(fields["cpu MHz"]) / 1000  # the clock now; turbo may run above it
    gflops = cores * ghz * LANES[unit] * 2 * FMA_UNITS
    return {"gflops": round(gflops, 1), "cores": cores, "ghz": round(ghz, 2), "unit": unit}


def report(images_per_s: float, flops_per_image: int, ceiling: float) -> dict[str, float]:
    """Achieved GFLOP/s and its share of the measured ceiling and of the paper peak."""
    achieved = images_per_s * flops_per_image / 1e9
    paper = paper_gflops()
    shares = {"of_measured_ceiling": round(achieved / ceiling, 3)}
    if paper is not None:
        shares["of_paper_peak"] = round(achieved / paper["gflops"], 3)
    return {"gflops": round(achieved, 2), **shares}
