"""Describe the machine a measurement ran on: numbers mean little without it."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# CPU features that decide which quantized kernels are fast on x86.
_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def _runtime_versions() -> dict[str, str]:
    from modelpress.runtimes import runtime_versions

    return runtime_versions()


def vm_mib(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str | None, frozenset[str]]:
    """(model name, ISA flags) from /proc/cpuinfo, in x86 ("model name", "flags") and ARM ("Hardware"/"CPU
    model", "Features") spellings; (None, empty) where there is no /proc. Read once per process."""
    name, flags = None, set()
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not name:
                    name = value.strip() or None
                elif key in ("flags", "features"):
                    flags |= set(value.split())
    except OSError:
        pass
    return name, frozenset(flags)


def memory_mib() -> dict[str, float | None]:
    """{"total": MiB, "available": MiB} from /proc/meminfo (None where it cannot be read). Read fresh each call:
    available memory changes."""
    out: dict[str, float | None] = {"total": None, "available": None}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    out["total" if key == "MemTotal" else "available"] = int(value.split()[0]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


@lru_cache(maxsize=1)
def describe() -> dict:
    name, flags = cpu_info()
    cpu = platform.processor() or platform.machine()
    if name and cpu in ("", platform.machine()):
        cpu = name
    import onnxruntime

    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": [f for f in _FLAGS if f in flags],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "runtimes": _runtime_versions(),
    }


# x86 flags with 8-bit dot-product instructions: signed 8-bit weights and static QDQ are fast there
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def has_vnni() -> bool:
    return bool(VNNI_FLAGS & set(describe()["cpu_flags"]))
