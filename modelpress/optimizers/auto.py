"""`-t auto`: the fastest faithful artifact for the machine it runs on.

Which INT8 format is fastest depends on the instruction set (VNNI makes signed 8-bit weights and static QDQ fast;
plain AVX2 saturates U8S8 and wants 7-bit weights) and on the model (a transformer wants its attention fused
before quantization). `auto` builds the candidates that can win here (`candidates_for`), lets the validation
floor drop the unfaithful ones (with every technique's repairs), times the rest under the edge profile in
pinned child processes, and writes the fastest, never something slower than FP32 with graph optimizations; the
record says why each other one lost. It is a study (modelpress.study) with a fixed candidate list, so the step
cache, failure recording and the report come with it. The candidate list and the pick are `candidates_for` and
`pick_fastest_faithful` (modelpress.optimizers.autopick), which a study's `auto` candidate uses too
(modelpress.study.auto): a study reports the same pick this command would write.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.optimizers.autopick import candidates_for, isa_flags, pick_fastest_faithful

__all__ = ["AutoResult", "auto_optimize", "candidates_for"]


@dataclass
class AutoResult:
    output: str
    pick: str  # the candidate written ("graph" when nothing beat FP32 with graph optimizations)
    isa: list[str]
    runtime: str
    profile: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # every candidate: speed, fidelity, size, why not
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def auto_optimize(model: str | Path, output: str | Path, calib: Dataset | None = None, *, data: Dataset | None = None,
                  min_fidelity: Any = None, profile: str = "edge-1core", runtime: str = "ort-cpu",
                  iterations: int = 100, show_progress: bool = False) -> AutoResult:
    """Build, validate and time the candidates for this machine; write the fastest faithful one to `output`."""
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig
    from modelpress.io import place_model
    from modelpress.onnxutil import check_onnx_file
    from modelpress.runtimes import get_runner
    from modelpress.study import Candidate, compare
    from modelpress.study.plan import model_file
    from modelpress.validate import DEFAULT_MIN_FIDELITY

    model = check_onnx_file(model)
    output = Path(output)
    if output.resolve() == model.resolve():
        raise ModelpressError("output must differ from the input model")
    evald = data if data is not None else calib
    if evald is None:
        raise ModelpressError("auto needs samples to judge fidelity on: give --calib (and/or --data) FILE.npz")
    prof = resolve_profile(profile)
    runner = get_runner(runtime)
    flags = isa_flags()
    cands = candidates_for(model, flags, calib is not None, runner.fast_fp16)
    with tempfile.TemporaryDirectory(prefix="modelpress-auto-") as tmp:
        rep = compare(model, tmp, [Candidate(n, chain=c) for n, c in cands], [prof], eval_data=evald.take(64),
                      calib_data=calib, profile_config=ProfileConfig(iterations=iterations, warmup=10, runner=runtime),
                      metric="agreement" if evald.labels is None else "top1", show_progress=show_progress,
                      min_fidelity=DEFAULT_MIN_FIDELITY if min_fidelity is None else min_fidelity,
                      selection={"relative": False}, max_accuracy_drop=1.0, title="modelpress auto")
        res = pick_fastest_faithful(rep, dict(cands), prof.name)  # the one rule studies' auto candidates use too
        if res.pick is None:
            why = "; ".join(f"{r['name']}: {r['why_not']}" for r in res.rows)
            raise ModelpressError(f"auto: {res.note}: {why}"[:800])
        place_model(Path(tmp) / model_file(res.pick), output, move=True)  # with its external data, if any
    return AutoResult(str(output), res.pick, sorted(flags), runtime, prof.name, res.rows, res.note)
