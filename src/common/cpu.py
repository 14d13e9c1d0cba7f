"""What the CPU is, from /proc/cpuinfo: its name, family and vector extensions. The machines this
project runs on differ (AVX2 or AVX-512, with or without bfloat16 math), and both the numerics
the runtime picks and every benchmark figure depend on which one it was."""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The vector extensions that decide this project's speed and numerics, widest first.
VECTOR_FLAGS = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "avx2", "fma", "avx")


@cache
def fields(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """The first core's block of /proc/cpuinfo (they all say the same); empty off Linux."""
    try:
        first = cpuinfo.read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in first.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    return frozenset(fields(cpuinfo).get("flags", "").split())


def has_native_bfloat16(cpuinfo: Path = CPUINFO) -> bool:
    """bfloat16 dot products in hardware (AVX-512 BF16, or AMX on newer Intel parts). Without
    them oneDNN emulates bfloat16 through float32, which is slower than float32 itself."""
    return bool({"avx512_bf16", "amx_bf16"} & flags(cpuinfo))


def describe(cpuinfo: Path = CPUINFO) -> str:
    """E.g. 'AMD EPYC (family 25, model 17; avx512f avx512_bf16 avx512_vnni avx2 fma avx)'."""
    info = fields(cpuinfo)
    if not info:
        return platform.processor() or platform.machine()
    present = [flag for flag in VECTOR_FLAGS if flag in flags(cpuinfo)]
    family = f"family {info.get('cpu family', '?')}, model {info.get('model', '?')}"
    return f"{info.get('model name', platform.machine())} ({family}; {' '.join(present)})"
