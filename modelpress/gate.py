"""The regression gate: re-profile a new model and its baseline side by side on this machine, interleaved
(old, new, old, new, ... each round in fresh pinned processes) so machine drift hits both alike, and fail
when the new one is slower or less accurate than allowed.

Exit codes (cli): 0 pass, 5 regression, 2 bad input (e.g. the two models' I/O signatures differ),
3 a bundle fails verification.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelpress.errors import ModelpressError


@dataclass
class GateResult:
    passed: bool
    profile: str
    rounds: int
    baseline_p50_ms: float
    new_p50_ms: float
    latency_change: float  # new / baseline - 1 (positive = slower)
    max_latency_regression: float
    baseline_accuracy: float | None
    new_accuracy: float | None
    accuracy_drop_pt: float | None
    max_accuracy_drop_pt: float
    accuracy_source: str
    reasons: list[str] = field(default_factory=list)
    rounds_ms: list[tuple[float, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_percent(text: str | float) -> float:
    """'5%' or '0.05' or 5 (read as percent when > 1) -> 0.05."""
    s = str(text).strip()
    try:
        v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise ModelpressError(f"bad percentage {text!r}: use e.g. 5% or 0.05") from None
    v = v / 100 if not s.endswith("%") and v > 1 else v
    if v < 0:
        raise ModelpressError(f"a regression limit cannot be negative: {text!r}")
    return v


def _accuracy(model: Path, manifest: dict | None, data) -> tuple[float | None, str]:
    if data is not None and data.labels is not None:
        from modelpress.benchmarks.evaluate import evaluate

        return evaluate(model, data)[0].top1, "measured on --data"
    acc = ((manifest or {}).get("metrics") or {}).get("accuracy")
    return (acc["top1"], "from the bundle's manifest") if acc else (None, "none")


def gate(new: str | Path, baseline: str | Path, *, max_latency_regression: float = 0.05,
         max_accuracy_drop_pt: float = 0.5, profile: str = "edge-1core", rounds: int = 5, iterations: int = 200,
         data_file: str | Path | None = None) -> GateResult:
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model
    from modelpress.bundle import open_model, signature
    from modelpress.data import load_npz

    prof = resolve_profile(profile)
    if rounds < 1 or iterations < 1:
        raise ModelpressError("--rounds and --iterations must be >= 1")
    with tempfile.TemporaryDirectory(prefix="modelpress-gate-") as tmp:
        new_model, new_manifest = open_model(new, Path(tmp) / "new")
        old_model, old_manifest = open_model(baseline, Path(tmp) / "old")
        s_new, s_old = signature(new_model), signature(old_model)
        if s_new != s_old:
            diff = [f"{k}: {[(x['name'], x['dtype'], x['shape']) for x in s_old[k]]} -> "
                    f"{[(x['name'], x['dtype'], x['shape']) for x in s_new[k]]}" for k in ("inputs", "outputs")
                    if s_new[k] != s_old[k]]
            raise ModelpressError(f"the new model's I/O signature differs from the baseline's ({'; '.join(diff)}): "
                                  "not comparable")
        data = load_npz(data_file) if data_file else None
        cfg = ProfileConfig(iterations=iterations, warmup=20)
        inputs = data.take(64) if data is not None else None
        pairs = []
        for _ in range(rounds):  # interleaved: drift affects both equally
            o = profile_model(old_model, prof, cfg, data=inputs).stats.p50_ms
            n = profile_model(new_model, prof, cfg, data=inputs).stats.p50_ms
            pairs.append((round(o, 4), round(n, 4)))
        old_p50 = statistics.median(p[0] for p in pairs)
        new_p50 = statistics.median(p[1] for p in pairs)
        change = statistics.median(n / o for o, n in pairs) - 1
        acc_old, src_old = _accuracy(old_model, old_manifest, data)
        acc_new, src_new = _accuracy(new_model, new_manifest, data)
    reasons = []
    if change > max_latency_regression:
        reasons.append(f"latency regressed {change:+.1%} on {prof.name} (limit +{max_latency_regression:.1%})")
    drop = None
    if acc_old is not None and acc_new is not None:
        drop = round((acc_old - acc_new) * 100, 4)
        if drop > max_accuracy_drop_pt + 1e-9:
            reasons.append(f"top-1 dropped {drop:.2f} pt (limit {max_accuracy_drop_pt:.2f} pt)")
    source = src_new if src_new == src_old else f"baseline {src_old}, new {src_new}"
    return GateResult(not reasons, prof.name, rounds, round(old_p50, 4), round(new_p50, 4), round(change, 4),
                      max_latency_regression, acc_old, acc_new, drop, max_accuracy_drop_pt, source, reasons, pairs)
