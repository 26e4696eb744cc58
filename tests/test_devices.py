"""What the CPU offers (lead.devices): native bf16."""

from __future__ import annotations

from pathlib import Path

import pytest

from lead.devices import cpu_has_native_bf16


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux /proc/cpuinfo")
def test_native_bf16_means_the_cpu_flags_say_so():
    """oneDNN emulates bf16 on plain AVX512; only AVX512-BF16 or AMX make it fast."""
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
