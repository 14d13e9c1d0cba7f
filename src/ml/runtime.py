"""Backend and device set-up: the one module that knows which Keras backend runs.

`KERAS_BACKEND` picks tensorflow (the default), jax or torch. `configure()` finds the devices,
makes CPU runs deterministic, and on GPU sets memory growth, mixed precision, data parallelism
over several GPUs and XLA. Call it once per process, before building any model. What the
backends read from the environment when they load (quiet logging, JAX's GPU memory) is set by
the bootstrap, before they load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass

import keras

from common import cpu
from common.errors import PipelineError

# float32 on GPU too: for this small CNN, mixed_float16 was no faster on an H200 (JAX: 0.459 s per
# epoch against 0.455) and compiled longer (11.2 s against 8.4; bench/README.md): its casts cost
# what its 16-bit math saves. train.precision opts in.
GPU_PRECISION = "float32"
# On a CPU with bfloat16 dot products in hardware (AVX-512 BF16, AMX), TensorFlow's oneDNN kernels
# train this CNN 1.6x faster in mixed_bfloat16 at the same validation accuracy (bench/README.md,
# "A better default recipe"); elsewhere bfloat16 is emulated and slower than float32. Measured on
# TensorFlow only: JAX and torch keep float32 on CPU.
CPU_BFLOAT16 = "mixed_bfloat16"
# Train steps per compiled call on GPU: this CNN's step is so short that launching it from Python
# costs more than running it. On CPU a step is long enough that one per call costs nothing.
GPU_STEPS_PER_EXECUTION = 32


@dataclass(frozen=True)
class Device:
    backend: str  # tensorflow | jax | torch
    kind: str  # "CPU" or "GPU"
    count: int
    precision: str  # the Keras dtype policy in force
    scope: Callable[[], ContextManager]  # build and compile the model inside it
    steps_per_execution: int = 1
    kernels: str = ""  # TensorFlow's on CPU: "oneDNN" or "Eigen" (they round differently)

    @property
    def jit_compile(self) -> bool | str:
        """XLA on GPU, not for TensorFlow on CPU: there it made the seed CNN 2.8x slower on 2
        cores (../shared/STACK_NOTES.md). "auto" is Keras' choice: XLA on JAX, eager on torch."""
        if self.backend == "tensorflow" and self.kind == "CPU":
            return False
        return "auto"

    def describe(self) -> str:
        where = f"{self.count}x GPU" if self.kind == "GPU" else "CPU"
        kernels = f" ({self.kernels})" if self.kernels else ""
        return f"{self.backend} on {where}{kernels}, {self.precision}"


def configure(precision: str = "auto") -> Device:
    """Pick the devices and numerics; on CPU also make every op deterministic."""
    backend = keras.backend.backend()
    gpus = _gpu_count(backend)
    policy = use_precision(precision, on_gpu=gpus > 0)
    if gpus == 0:
        _deterministic(backend)
        return Device(
            backend, "CPU", 1, policy, contextlib.nullcontext, kernels=_cpu_kernels(backend)
        )
    scope = _data_parallel(backend) if gpus > 1 else contextlib.nullcontext
    # Keras' torch trainer runs one step per call (it refuses more).
    steps = 1 if backend == "torch" else GPU_STEPS_PER_EXECUTION
    return Device(backend, "GPU", gpus, policy, scope, steps)


def use_precision(precision: str, on_gpu: bool) -> str:
    """Set Keras' global dtype policy (the models built next compute in it) and return it."""
    policy = resolve_precision(precision, on_gpu)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def resolve_precision(precision: str, on_gpu: bool, backend: str | None = None) -> str:
    """`auto`: float32 on GPU, bfloat16 compute on a CPU that has it in hardware (TensorFlow),
    else float32. Whatever trains, the saved model computes in float32 (ml.model.save)."""
    if precision != "auto":
        return precision
    if on_gpu:
        return GPU_PRECISION
    backend = backend or keras.backend.backend()
    return CPU_BFLOAT16 if backend == "tensorflow" and cpu.has_native_bfloat16() else "float32"


def _gpu_count(backend: str) -> int:
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            # Grab memory as needed instead of all of it, so other processes can share the GPU.
            tf.config.experimental.set_memory_growth(gpu, True)
        return len(gpus)
    if backend == "jax":
        import jax

        return sum(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        # Keras' distribution API has no torch implementation: it trains on one GPU.
        return min(torch.cuda.device_count(), 1)
    raise PipelineError(f"KERAS_BACKEND={backend} is not supported: set tensorflow, jax or torch")


def _cpu_kernels(backend: str) -> str:
    """Which kernels TensorFlow runs on CPU: oneDNN's (the bootstrap asks for them) or its own.
    TensorFlow has no public call for it; the one its own tests use is below."""
    if backend != "tensorflow":
        return ""
    from tensorflow.python.util import _pywrap_util_port

    return "oneDNN" if _pywrap_util_port.IsMklEnabled() else "Eigen"


def _deterministic(backend: str) -> None:
    """Same seed + same data -> same metrics on CPU (keras.utils.set_random_seed seeds the rest)."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True)
    # JAX on CPU is deterministic for a fixed seed as it is.


def _data_parallel(backend: str) -> Callable[[], ContextManager]:
    """Replicate the model on every GPU and split each batch between them."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope
    # JAX (torch never gets here: see _gpu_count). The distribution applies process-wide.
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    return contextlib.nullcontext
