"""runtime and cpu: the numerics a run trains in follow the CPU it runs on, read from its flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import cpu
from ml import runtime

ZEN4 = "model name\t: AMD EPYC 9R14\ncpu family\t: 25\nmodel\t\t: 17\ncpu MHz\t\t: 2600.000\n"
AVX512_BF16 = "flags\t\t: fpu sse2 avx fma avx2 avx512f avx512_bf16 avx512_vnni\n"
AVX2_ONLY = "flags\t\t: fpu sse2 avx fma avx2\n"
SECOND_CORE = "\nprocessor\t: 1\nflags\t\t: avx512_bf16\n"
SRC = Path(__file__).resolve().parent.parent / "src"


def cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\n{ZEN4}{flags}{SECOND_CORE}")
    return path


def test_the_cpu_is_named_with_its_family_and_vector_extensions(tmp_path):
    path = cpuinfo(tmp_path, AVX512_BF16)
    assert cpu.describe(path) == (
        "AMD EPYC 9R14 (family 25, model 17; avx512f avx512_bf16 avx512_vnni avx2 fma avx)"
    )
    assert cpu.has_native_bfloat16(path)


def test_only_the_first_cores_block_is_read(tmp_path):
    path = cpuinfo(tmp_path, AVX2_ONLY)  # the second block claims avx512_bf16
    assert not cpu.has_native_bfloat16(path)
    assert cpu.describe(path).endswith("; avx2 fma avx)")


def test_off_linux_there_is_no_cpuinfo_and_no_bfloat16(tmp_path):
    missing = tmp_path / "absent"
    assert cpu.fields(missing) == {} and not cpu.has_native_bfloat16(missing)
    assert cpu.describe(missing)  # the platform's own name instead


@pytest.mark.parametrize(
    ("native", "backend", "on_gpu", "expected"),
    [
        (True, "tensorflow", False, "mixed_bfloat16"),
        (False, "tensorflow", False, "float32"),  # emulated bfloat16 is slower than float32
        (True, "jax", False, "float32"),  # measured on TensorFlow only
        (True, "tensorflow", True, runtime.GPU_PRECISION),
    ],
)
def test_auto_precision_is_bfloat16_only_where_the_cpu_has_it(
    monkeypatch, native, backend, on_gpu, expected
):
    monkeypatch.setattr(cpu, "has_native_bfloat16", lambda: native)
    assert runtime.resolve_precision("auto", on_gpu, backend) == expected


def test_an_explicit_precision_is_used_as_given(monkeypatch):
    monkeypatch.setattr(cpu, "has_native_bfloat16", lambda: True)
    assert runtime.resolve_precision("float32", on_gpu=False, backend="tensorflow") == "float32"


@pytest.mark.parametrize(("given", "kernels"), [(None, "oneDNN"), ("0", "Eigen")])
def test_tensorflow_trains_on_onednn_unless_the_user_says_otherwise(given, kernels):
    """The bootstrap asks for oneDNN's kernels only where TF_ENABLE_ONEDNN_OPTS is unset (without
    it, TensorFlow picks Eigen's on CPUs without AVX-512 VNNI); the device line names the ones
    that run, in a fresh process, as an entry script starts."""
    env = {name: value for name, value in os.environ.items() if name != "TF_ENABLE_ONEDNN_OPTS"}
    env |= {"PYTHONPATH": str(SRC), "KERAS_BACKEND": "tensorflow"}
    if given is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = given
    starts = "from common import bootstrap; bootstrap.start('__main__')"
    prints = "from ml import runtime; print(runtime.configure().describe())"
    done = subprocess.run(
        [sys.executable, "-c", f"{starts}; {prints}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"tensorflow on CPU ({kernels}), float32"
