"""The regression gate: re-profile a new model and its baseline side by side on this machine, interleaved
(old, new, old, new, ... each round in fresh pinned processes) so machine drift hits both alike, and fail
when the new one is slower or less accurate than allowed.

Limits state their unit (modelpress.units):
  max_latency_regression   '5%' or a fraction 0.05 (a bare number is always a fraction; 1 or more is refused)
  max_accuracy_drop        '0.5pt' (points of top-1), '1%' (relative: 1% of the baseline's top-1), or a bare
                           number of points (0.5 = 0.5 pt), as `gate --max-accuracy-drop` always meant
The verdict records both limits with their units (GateResult.limits) and the accuracy limit in points.

Exit codes (cli): 0 pass, 5 regression, 2 bad input (e.g. the two models' I/O signatures differ, a limit
without a readable unit), 3 a bundle fails verification.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelpress.errors import ModelpressError
from modelpress.units import (BARE_POINTS, describe_accuracy_budget, format_accuracy_budget, format_percent,
                              parse_accuracy_budget)
from modelpress.units import parse_percent as _parse_percent
from modelpress.yamlsafe import clip, short

DEFAULT_MAX_LATENCY_REGRESSION = "5%"
DEFAULT_MAX_ACCURACY_DROP = "0.5pt"
BASELINE = "the baseline's"


@dataclass
class GateResult:
    passed: bool
    profile: str
    rounds: int
    baseline_p50_ms: float
    new_p50_ms: float
    latency_change: float  # new / baseline - 1 (positive = slower)
    max_latency_regression: float  # a fraction: 0.05 = 5%
    baseline_accuracy: float | None
    new_accuracy: float | None
    accuracy_drop_pt: float | None
    max_accuracy_drop_pt: float | None  # the accuracy limit in points (None: relative, and no baseline accuracy)
    accuracy_source: str
    reasons: list[str] = field(default_factory=list)
    rounds_ms: list[tuple[float, float]] = field(default_factory=list)
    # the limits as given, with their units: {"max_latency_regression": "5%", "max_accuracy_drop": "0.5pt" | "1%"}
    limits: dict[str, str] = field(default_factory=dict)
    runtime: str = "ort-cpu"  # both models were profiled and evaluated here
    target: dict[str, Any] | None = None  # --target: the device's agent that measured latency (accuracy: here)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_percent(text: str | float, where: str | None = None) -> float:
    """'5%' or '0.05' or 0.05 -> 0.05. A bare number is always a fraction; 1 or more is refused (write '5%').
    Kept here for compatibility: modelpress.units.parse_percent is the one definition."""
    return _parse_percent(text, where)


def parse_limits(max_latency_regression: str | float = DEFAULT_MAX_LATENCY_REGRESSION,
                 max_accuracy_drop: str | float = DEFAULT_MAX_ACCURACY_DROP) -> tuple[float, float, bool]:
    """The gate's two limits -> (latency fraction, accuracy fraction, accuracy relative?); one-line errors name
    the CLI option. A bare accuracy number is points (0.5 = 0.5 pt), as `--max-accuracy-drop` always meant."""
    lat = _parse_percent(max_latency_regression, "--max-latency-regression")
    acc, rel = parse_accuracy_budget(max_accuracy_drop, "--max-accuracy-drop", bare=BARE_POINTS,
                                     reference=BASELINE)
    return lat, acc, rel


def _accuracy(model: Path, manifest: dict | None, data, runtime: str) -> tuple[float | None, str]:
    if data is not None and data.labels is not None:
        from modelpress.benchmarks.evaluate import evaluate

        return evaluate(model, data, runtime=runtime)[0].top1, f"measured on --data ({runtime})"
    acc = ((manifest or {}).get("metrics") or {}).get("accuracy")
    return (acc["top1"], "from the bundle's manifest") if acc else (None, "none")


def gate(new: str | Path, baseline: str | Path, *, max_latency_regression: float | str = 0.05,
         max_accuracy_drop: float | str | None = None, max_accuracy_drop_pt: float | None = None,
         profile: str = "edge-1core", rounds: int = 5, iterations: int = 200,
         data_file: str | Path | None = None, runtime: str = "ort-cpu", remote: Any = None) -> GateResult:
    """Profile NEW and BASELINE interleaved and judge NEW against the limits.

    `max_latency_regression`: '5%' or a fraction (0.05). `max_accuracy_drop`: '0.5pt', '1%' (of the baseline's
    top-1) or a bare number of points; or, as before, `max_accuracy_drop_pt` in points. Default 0.5 pt.
    Both models are profiled and evaluated on `runtime` (any registered runtime: modelpress.runtimes).
    Every limit is checked, and the data loaded, before any model is opened or profiled. `remote` (a
    modelpress.agent.client.RemoteRounds) measures the rounds on a device's agent instead of here."""
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model
    from modelpress.bundle import open_model, signature
    from modelpress.data import load_npz

    if max_accuracy_drop is not None and max_accuracy_drop_pt is not None:
        raise ModelpressError("give max_accuracy_drop (with a unit) or max_accuracy_drop_pt (points), not both")
    if max_accuracy_drop is None:
        max_accuracy_drop = DEFAULT_MAX_ACCURACY_DROP if max_accuracy_drop_pt is None else max_accuracy_drop_pt
    lat_limit, acc_limit, acc_relative = parse_limits(max_latency_regression, max_accuracy_drop)
    limits = {"max_latency_regression": format_percent(lat_limit),
              "max_accuracy_drop": format_accuracy_budget(acc_limit, acc_relative)}
    prof = resolve_profile(profile) if remote is None else None  # on a device, its agent resolves the preset
    prof_name = prof.name if prof is not None else profile
    for label, value, top in (("--rounds", rounds, 100), ("--iterations", iterations, None)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (top is not None and value > top):
            raise ModelpressError(f"{label} must be a whole number from 1 to {top}, got {short(value)}" if top else
                                  f"{label} must be a whole number >= 1, got {short(value)}")
    cfg = ProfileConfig(iterations=iterations, warmup=20, runner=runtime)
    if remote is None:
        cfg.check()  # an unknown or unusable runtime fails here, before any model is opened
    for label, path in (("NEW", new), ("--baseline", baseline)):
        if not Path(path).exists():
            raise ModelpressError(f"no such model or bundle ({label}): {path}")
    data = load_npz(data_file) if data_file else None  # bad data fails before any model is opened
    with tempfile.TemporaryDirectory(prefix="modelpress-gate-") as tmp:
        new_model, new_manifest = open_model(new, Path(tmp) / "new", runtime)
        old_model, old_manifest = open_model(baseline, Path(tmp) / "old", runtime)
        s_new, s_old = signature(new_model), signature(old_model)
        if s_new != s_old:
            diff = [f"{k}: {[(x['name'], x['dtype'], x['shape']) for x in s_old[k]]} -> "
                    f"{[(x['name'], x['dtype'], x['shape']) for x in s_new[k]]}" for k in ("inputs", "outputs")
                    if s_new[k] != s_old[k]]
            raise ModelpressError(clip(f"the new model's I/O signature differs from the baseline's "
                                       f"({'; '.join(diff)}): not comparable", 600))
        inputs = data.take(64) if data is not None else None
        if remote is not None:  # every round as one job on the device, so nothing else runs between them
            pairs = remote.pairs(old_model, new_model, profile, cfg, inputs, rounds)
        else:
            pairs = []
            for _ in range(rounds):  # interleaved: drift affects both equally
                o = profile_model(old_model, prof, cfg, data=inputs).stats.p50_ms
                n = profile_model(new_model, prof, cfg, data=inputs).stats.p50_ms
                pairs.append((round(o, 4), round(n, 4)))
        old_p50 = statistics.median(p[0] for p in pairs)
        new_p50 = statistics.median(p[1] for p in pairs)
        change = statistics.median(n / o for o, n in pairs) - 1
        acc_old, src_old = _accuracy(old_model, old_manifest, data, runtime)
        acc_new, src_new = _accuracy(new_model, new_manifest, data, runtime)
    reasons = []
    if change > lat_limit:
        reasons.append(f"latency regressed {change:+.1%} on {prof_name} (limit +{lat_limit:.1%})")
    drop = None
    limit_pt = None if acc_relative else round(acc_limit * 100, 6)
    if acc_relative and acc_old is not None:
        limit_pt = round(acc_limit * acc_old * 100, 6)
    if acc_old is not None and acc_new is not None:
        drop = round((acc_old - acc_new) * 100, 4)
        if drop > limit_pt + 1e-9:
            stated = f"{limit_pt:.2f} pt"
            if acc_relative:
                stated = f"{describe_accuracy_budget(acc_limit, True, BASELINE)} = {stated}"
            reasons.append(f"top-1 dropped {drop:.2f} pt (limit {stated})")
    source = src_new if src_new == src_old else f"baseline {src_old}, new {src_new}"
    return GateResult(not reasons, prof_name, rounds, round(old_p50, 4), round(new_p50, 4), round(change, 4),
                      lat_limit, acc_old, acc_new, drop, limit_pt, source, reasons, pairs, limits, runtime,
                      None if remote is None else remote.target)
