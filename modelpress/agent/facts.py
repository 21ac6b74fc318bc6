"""The device's facts that decide which artifact is fastest on it: CPU, ISA, cores, memory, OS, runtime versions,
and the clock and temperature where Linux exposes them (sysfs/procfs; absent elsewhere, never guessed)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# ISA features that change which kernels a runtime picks: x86 (/proc/cpuinfo "flags") and ARM ("Features").
_ISA = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
        "avx512_fp16", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve",
        "sve2", "sme")


def _read(path: str | Path, limit: int = 4096) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read(limit).strip().strip("\x00")
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def memory_mb() -> dict[str, float | None]:
    """Total and available memory (MiB), as modelpress.machine reads them."""
    from modelpress.machine import memory_mib

    mem = memory_mib()
    return {f"{k}_mb": None if v is None else round(v, 1) for k, v in mem.items()}


def thermal() -> dict[str, Any]:
    """Current CPU clock per core (MHz) and thermal zone temperatures (degrees C), where sysfs has them.
    Taken before and after a job: a board that throttles shows it here."""
    freqs = {}
    for cpu in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
        v = _read(cpu / "cpufreq" / "scaling_cur_freq")
        if v and v.isdigit():
            freqs[cpu.name] = round(int(v) / 1000, 1)
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        v = _read(zone / "temp")
        try:
            temps[f"{zone.name} ({_read(zone / 'type') or '?'})"] = round(int(v) / 1000, 1)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    return {"cpu_mhz": freqs or "not available (no cpufreq in sysfs)",
            "temperature_c": temps or "not available (no thermal zones in sysfs)"}


def device_facts() -> dict[str, Any]:
    """Everything the client needs to say where a number came from (no hostname: facts, not identity)."""
    from modelpress import __version__
    from modelpress.benchmarks.energy import describe_energy

    from modelpress.machine import cpu_info

    name, flags = cpu_info()
    board = _read("/proc/device-tree/model") or _read("/sys/devices/virtual/dmi/id/product_name")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": name or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "board": board,
        "isa": [f for f in _ISA if f in flags],
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "memory": memory_mb(),
        "os": f"{platform.system()} {platform.release()}",
        "libc": " ".join(platform.libc_ver()).strip() or None,
        "python": platform.python_version(),
        "modelpress": __version__,
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "openvino": _version("openvino"),
        "energy": describe_energy(),
        "thermal": thermal(),
    }
