"""Where a stage's tensors run and in what precision.

bf16 pays on CUDA and on CPUs that compute it natively (AVX512-BF16 or AMX tiles); oneDNN also
"supports" bf16 on plain AVX-512 by emulation, several times slower than fp32, so its own
support flag does not tell. The CPU's flags do: Linux lists them in /proc/cpuinfo (elsewhere
no CPU is taken for native, and bf16 falls back to fp32 with a warning).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags")
             for flag in line.partition(":")[2].split()}
    return bool(flags & NATIVE_BF16_FLAGS)
