"""`auto` as a study candidate: a recipe's `- [auto]` (or `Candidate("auto", technique="auto")`) is expanded when the
study runs into the chains `optimize -t auto` would try on this machine (`candidates_for`: this CPU's ISA flags,
this model, whether the study has calibration data, whether its runtime has fast fp16 kernels), named
`NAME/CHAIN` (`auto/graph`, `auto/dynamic-int8-pc`, `auto/static-int8`, ...). They are ordinary candidates:
built through the study's validation floor, evaluated, profiled, cached, and judged by the study's own selection
under its accuracy budget like any other. The report's `auto` section adds what `-t auto` would pick among them
(`pick_fastest_faithful`, the same function: the fastest that passed the floor, never slower than FP32 with graph
optimizations, timed on the selection profile), why each other one lost, and the ISA flags the expansion used.

Without `data.calib` the static INT8 candidates are left out (as `-t auto --data` alone does) and the section's
note says so. The expansion follows the CPU of the process that plans the study (with `--executor ray`, the
driver's), which is the machine the timings are meant for unless `ray_resources` sends them elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpress.errors import ModelpressError
from modelpress.optimizers.autopick import GRAPH, NAMES, Chain, candidates_for, isa_flags, pick_fastest_faithful
from modelpress.study.plan import Candidate, check_names


@dataclass
class AutoExpansion:
    """What a study's `auto` candidate became on this machine."""

    name: str  # the candidate as written; its chains are NAME/CHAIN
    isa: list[str]  # the CPU flags candidates_for read
    runtime: str
    chains: dict[str, Chain]  # expanded candidate name -> chain, in candidates_for's order
    note: str = ""


def possible_names(name: str, chain: Chain) -> list[str]:
    """Every candidate name a recipe's candidate may run as (auto: each name it can expand to), for the output
    guard that runs before the model is read."""
    if Candidate(name, chain=chain).is_auto:
        return [f"{name}/{n}" for n in NAMES]
    return [name]


def expand_auto(candidates: list[Candidate], reference: Path, calib: bool, runtime: str,
                flags: set[str] | None = None) -> tuple[list[Candidate], AutoExpansion | None]:
    """The candidates with the `auto` one replaced, in place, by its chains for this CPU (`flags`: this machine's
    unless given); (candidates, None) when there is no auto candidate."""
    autos = [c for c in candidates if c.is_auto]
    if not autos:
        return candidates, None
    if len(autos) > 1:
        raise ModelpressError(f"auto may be a candidate once per study: {[c.name for c in autos]} all ask for it")
    from modelpress.runtimes import get_runner

    auto = autos[0]
    flags = isa_flags() if flags is None else set(flags)
    chains = {f"{auto.name}/{n}": chain
              for n, chain in candidates_for(reference, flags, calib, get_runner(runtime).fast_fp16)}
    out: list[Candidate] = []
    for c in candidates:
        out.extend([Candidate(n, chain=chain) for n, chain in chains.items()] if c is auto else [c])
    check_names(out)
    note = "" if calib else "no calibration data (data.calib): the static INT8 candidates were left out"
    return out, AutoExpansion(auto.name, sorted(flags), runtime, chains, note)


def auto_section(report: dict[str, Any], exp: AutoExpansion, profile: str) -> dict[str, Any]:
    """The report's `auto` section: the expansion, and what `-t auto` would pick from this study's measurements."""
    res = pick_fastest_faithful(report, exp.chains, profile, graph=f"{exp.name}/{GRAPH}")
    return {"candidate": exp.name, "isa": exp.isa, "runtime": exp.runtime, "profile": profile,
            "candidates": {n: [[t, o] for t, o in chain] for n, chain in exp.chains.items()},
            "pick": res.pick, "note": "; ".join(filter(None, [exp.note, res.note])), "rows": res.rows}
