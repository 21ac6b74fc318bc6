"""Edge profiles: where and how a measurement runs, stated exactly.

A profile pins the measuring child process to some cores and fixes the
runtime's thread pools, so a 16-core workstation can stand in for a 1- or
2-core device (same ISA, same cache per core: an approximation we say out loud).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from modelpress.errors import ModelpressError


@dataclass(frozen=True)
class EdgeProfile:
    name: str
    cores: tuple[int, ...] | None  # None: no pinning
    intra_op_threads: int  # 0: runtime default (one per core it sees)
    inter_op_threads: int
    description: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cores"] = list(self.cores) if self.cores is not None else None
        return d


PRESETS: dict[str, EdgeProfile] = {
    p.name: p
    for p in (
        EdgeProfile("edge-1core", (0,), 1, 1, "pinned to core 0; 1 intra-op thread, 1 inter-op thread"),
        EdgeProfile("edge-2core", (0, 1), 2, 1, "pinned to cores 0-1; 2 intra-op threads, 1 inter-op thread"),
        EdgeProfile("edge-4core", (0, 1, 2, 3), 4, 1, "pinned to cores 0-3; 4 intra-op threads, 1 inter-op thread"),
        EdgeProfile("host", None, 0, 0, "no pinning; runtime default threads (all cores)"),
    )
}


def parse_cores(text: str) -> tuple[int, ...]:
    """'0', '0,1', '0-3' or '0-1,4' -> sorted core ids."""
    cores: set[int] = set()
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            cores.update(range(int(a), int(b or a) + 1))
    except ValueError:
        raise ModelpressError(f"bad --cores {text!r}: use e.g. 0 or 0,1 or 0-3") from None
    if not cores:
        raise ModelpressError(f"bad --cores {text!r}")
    return tuple(sorted(cores))


def resolve_profile(preset: str | None = None, cores: str | None = None, threads: int | None = None) -> EdgeProfile:
    """A preset, optionally overridden by --cores/--threads; checks the cores exist here."""
    if preset is not None and preset not in PRESETS:
        raise ModelpressError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    base = PRESETS[preset or ("edge-1core" if cores is None and threads is None else "host")]
    if cores is None and threads is None:
        prof = base
    else:
        pinned = parse_cores(cores) if cores is not None else base.cores
        n = threads if threads is not None else (len(pinned) if pinned else base.intra_op_threads)
        if n < 0:
            raise ModelpressError("--threads must be >= 0")
        where = f"pinned to cores {','.join(map(str, pinned))}" if pinned else "no pinning"
        plural = "" if n == 1 else "s"
        prof = EdgeProfile("custom", pinned, n, 1, f"{where}; {n or 'default'} intra-op thread{plural}, 1 inter-op thread")
    check_cores(prof)
    return prof


def check_cores(prof: EdgeProfile) -> None:
    if prof.cores is None:
        return
    have = os.sched_getaffinity(0)
    missing = sorted(set(prof.cores) - have)
    if missing:
        raise ModelpressError(
            f"profile {prof.name} needs cores {list(prof.cores)} but this process may use only {sorted(have)}"
        )
