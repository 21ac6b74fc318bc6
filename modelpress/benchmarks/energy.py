"""Energy counters read around the timed loop: joules per inference where the machine exposes them.

Only cumulative hardware counters are used, never a model of power: Linux powercap RAPL zones
(`/sys/class/powercap/intel-rapl:N/energy_uj`, Intel and recent AMD CPUs) and hwmon energy inputs
(`/sys/class/hwmon/hwmonN/energyM_input`, e.g. the amd_energy driver). Elsewhere (most ARM boards, VMs)
the record says "not available" and why; nothing is estimated. Standard library only: the measuring
child imports this module before the runtime starts.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

POWERCAP_ROOT = Path("/sys/class/powercap")
HWMON_ROOT = Path("/sys/class/hwmon")
_TOP_ZONE = re.compile(r"\A(intel-rapl|amd-rapl):\d+\Z")  # packages only: sub-zones (core, uncore) are inside them
_SCOPE = "whole CPU package(s) while the timed loop ran: includes idle power and any other process on the machine"


@dataclass
class _Counter:
    name: str
    path: Path
    wrap_uj: int | None  # the counter wraps back to 0 past this value (max_energy_range_uj)


def _read_int(path: Path) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _rapl_counters(root: Path) -> list[_Counter]:
    out = []
    for zone in sorted(root.glob("*")) if root.is_dir() else []:
        if not _TOP_ZONE.match(zone.name) or not (zone / "energy_uj").exists():
            continue
        try:
            name = (zone / "name").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        try:
            wrap = _read_int(zone / "max_energy_range_uj")
        except (OSError, ValueError):
            wrap = None
        out.append(_Counter(f"{zone.name} ({name})", zone / "energy_uj", wrap))
    return out


def _hwmon_counters(root: Path) -> list[_Counter]:
    out = []
    for mon in sorted(root.glob("hwmon*")) if root.is_dir() else []:
        try:
            chip = (mon / "name").read_text().strip()
        except OSError:
            chip = mon.name
        for f in sorted(mon.glob("energy*_input")):
            out.append(_Counter(f"{mon.name} {chip} {f.name}", f, None))
    return out


@dataclass
class EnergyMeter:
    """Cumulative counters found on this machine; `start()` before the loop, `result()` after it."""

    counters: list[_Counter] = field(default_factory=list)
    source: str = ""
    why_not: str = ""
    _start: list[int] = field(default_factory=list, repr=False)
    _t0: float = 0.0

    @classmethod
    def open(cls, powercap: Path = POWERCAP_ROOT, hwmon: Path = HWMON_ROOT) -> "EnergyMeter":
        """Find readable counters: RAPL first (package scope), else hwmon energy inputs."""
        found = [("linux powercap RAPL", _rapl_counters(Path(powercap))), ("linux hwmon energy", _hwmon_counters(Path(hwmon)))]
        denied = []
        for source, counters in found:
            readable = []
            for c in counters:
                try:
                    _read_int(c.path)
                    readable.append(c)
                except PermissionError:
                    denied.append(str(c.path))
                except (OSError, ValueError):
                    pass
            if readable:
                return cls(readable, source)
        if denied:
            return cls(why_not=f"energy counters exist but are not readable by this user ({denied[0]}; RAPL is "
                               "root-only since Linux 5.10: grant read access, e.g. with a udev rule)")
        return cls(why_not="no RAPL powercap or hwmon energy counters on this machine; most ARM boards and VMs have none")

    @property
    def available(self) -> bool:
        return bool(self.counters)

    def start(self) -> None:
        self._start = [_read_int(c.path) for c in self.counters]
        self._t0 = time.perf_counter()

    def result(self, inferences: int) -> dict[str, Any]:
        """Joules over the loop and per inference call; 'not available' (with the reason) when no counter."""
        if not self.available:
            return {"available": False, "reason": self.why_not}
        seconds = time.perf_counter() - self._t0
        domains = {}
        for c, before in zip(self.counters, self._start):
            now = _read_int(c.path)
            delta = now - before
            if delta < 0 and c.wrap_uj:
                delta += c.wrap_uj + 1  # the counter wrapped once during the loop
            domains[c.name] = round(max(delta, 0) / 1e6, 6)
        joules = sum(domains.values())
        return {
            "available": True, "source": self.source, "scope": _SCOPE, "joules": round(joules, 6),
            "seconds": round(seconds, 6), "inferences": inferences,
            "joules_per_inference": round(joules / inferences, 9) if inferences else None,
            "average_watts": round(joules / seconds, 3) if seconds > 0 else None, "domains": domains,
        }


def describe_energy() -> dict[str, Any]:
    """What this machine offers, for the device facts (no measurement)."""
    m = EnergyMeter.open()
    return {"available": True, "source": m.source, "counters": [c.name for c in m.counters]} if m.available \
        else {"available": False, "reason": m.why_not}


__all__ = ["EnergyMeter", "describe_energy"]
