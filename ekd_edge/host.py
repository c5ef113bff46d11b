"""The CPU this process runs on: its name, its int8-relevant instruction-set flags, and the int8
target those imply. Export picks its default quantisation target here; every benchmark records
the same facts, so a number measured on one host is never read as another's.
"""

from __future__ import annotations

import platform

# The extensions int8 kernels dispatch on: VNNI (AVX-512 or AVX), AVX-512 BW and AVX2 on x86;
# dot product and i8mm on arm64. Speed, and for some kernels the outputs, differ between hosts.
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "avx512bw", "avx2", "asimddp", "i8mm")


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's name as the kernel reports it; ARM boards use other keys than x86."""
    info = _cpuinfo()
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in info.splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() == key and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(names=INT8_FLAGS) -> dict[str, bool]:
    """{flag: present?} for the int8-relevant flags of the first CPU listed."""
    present: set[str] = set()
    for line in _cpuinfo().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            present = set(value.split())
            break
    return {name: name in present for name in names}


def int8_arch(machine: str | None = None, flags: dict[str, bool] | None = None) -> str:
    """The int8 quantisation target for this host: arm64 on ARM, avx512_vnni where the CPU has
    AVX-512 VNNI, else avx2 (an AVX2-only EPYC would run VNNI-targeted weights through slower
    emulation paths)."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    return "avx512_vnni" if flags.get("avx512_vnni") else "avx2"
