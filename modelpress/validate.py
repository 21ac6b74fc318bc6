"""The choke point every model modelpress writes passes through: valid, loadable, finite and faithful.

A pass (or an exporter, or a study step) writes to a temp path; before that path is renamed into
place, `Validator.check` runs

1. `onnx.checker` -- the full check (strict shape inference) where the model's ops allow it, the
   plain check where contrib ops (com.microsoft, ...) have no ONNX schema;
2. a session on the target runtime (a model ONNX Runtime refuses is not an artifact);
3. inference on real data (calibration or evaluation samples; synthetic inputs shaped by the model's
   signature when none are given, and the result says so), refusing NaN/Inf where the source is finite;
4. fidelity to the source model on the same samples, per output: cosine (mean and worst sample) and
   max-abs error for float outputs, top-1 agreement for classifier-shaped outputs [N, C].

The result is a plain record (`Validation.to_dict()`) that goes into pass results, recipes-as-run,
reports and bundle manifests. `FidelityFloor` is the user's bar (`cosine=0.99`, `agreement=0.99`,
`none`); below it a technique's repairs run (modelpress.optimizers.repair) or the write is refused.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from modelpress.data import Dataset, batch_size_for, synthetic
from modelpress.errors import CheckFailed, ModelpressError, first_line

# Measured (README, "Valid and faithful by construction"): INT8 MobileNetV2 logits reach cosine ~0.973 with 99%
# top-1 agreement on confident crops, while the collapsed models this floor exists for sit at 0.22-0.92.
DEFAULT_MIN_FIDELITY = "cosine=0.97"
DEFAULT_SAMPLES = 32
SYNTHETIC_DIM = 64  # symbolic non-batch dims of synthetic inputs (a multiple of 32: strided CNNs accept it)
_METRICS = ("cosine", "agreement")


class InvalidArtifact(CheckFailed):
    """A technique wrote a model that fails the checker, does not load, or gives NaN/Inf (exit 3)."""


@dataclass(frozen=True)
class FidelityFloor:
    """The least fidelity an artifact must keep to its source: `metric` on the worst output."""

    metric: Literal["cosine", "agreement"]
    value: float

    @classmethod
    def parse(cls, text: "str | FidelityFloor | None") -> "FidelityFloor | None":
        """'cosine=0.99', 'agreement=0.99' or 'none' (None and '' mean the default)."""
        if isinstance(text, FidelityFloor):
            return text
        s = DEFAULT_MIN_FIDELITY if text is None or str(text).strip() == "" else str(text).strip()
        if s.lower() in ("none", "off", "false"):
            return None
        metric, sep, value = s.partition("=")
        metric = metric.strip().lower()
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if not sep or metric not in _METRICS or not 0 <= v <= 1:
            raise ModelpressError(f"bad min-fidelity {s[:60]!r}: use cosine=0.99, agreement=0.99 or none "
                                  "(a value between 0 and 1)")
        return cls(metric, v)

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"


@dataclass
class OutputFidelity:
    name: str
    kind: str  # "float", "classifier" or "exact" (integer/bool outputs compared element by element)
    cosine_mean: float | None = None
    cosine_min: float | None = None
    max_abs_err: float | None = None
    agreement: float | None = None  # top-1 agreement (classifier outputs) or exact-match rate (integer outputs)

    def score(self, metric: str) -> float:
        """This output's value of `metric` (cosine: the mean over samples), falling back to what exists."""
        if metric == "agreement" and self.agreement is not None:
            return self.agreement
        if self.cosine_mean is not None:
            return self.cosine_mean
        return self.agreement if self.agreement is not None else 1.0


@dataclass
class Validation:
    """What the choke point found; `passed` is False only for a fidelity below the floor (invalid raises)."""

    checker: str  # "full", "basic (contrib ops: full check skipped)"
    runtime: str
    samples: int
    data_source: str
    outputs: list[OutputFidelity]
    floor: str | None
    metric: str
    worst_output: str | None
    worst: float | None
    passed: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.worst is None:
            return f"valid on {self.runtime} ({self.samples} samples of {self.data_source})"
        return (f"{self.metric} {fmt_fidelity(self.worst)} on {self.worst_output!r} ({self.samples} samples of {self.data_source}"
                f"{'' if self.floor is None else f'; floor {self.floor}'})")


def fmt_fidelity(value: float) -> str:
    """4 decimals, more where they matter (0.99999 is not 1.0000)."""
    return f"{value:.4f}" if value < 0.9999 or value == 1 else f"{value:.6f}"


def check_structure(path: str | Path) -> str:
    """onnx.checker, full where the ops allow; returns which check ran, raises InvalidArtifact."""
    import onnx

    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return "full"
    except Exception as full_err:  # noqa: BLE001 - onnx raises ValidationError, InferenceError, ...
        first = first_line(full_err)
    model = onnx.load(str(path), load_external_data=False)
    contrib = sorted({n.domain for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # noqa: BLE001
        raise InvalidArtifact(f"{path.name} is not a valid ONNX model: {first_line(e)}") from None
    if contrib:
        return f"basic (ops of {', '.join(contrib)} have no ONNX schema: full check skipped)"
    raise InvalidArtifact(f"{path.name} is not a valid ONNX model: {first}")


class Validator:
    """Checks artifacts against one source model on one runtime and one set of samples.

    The source's outputs are computed once and reused for every candidate (a repair search validates
    many). `data=None` uses synthetic inputs from the source's signature."""

    def __init__(self, source: str | Path, data: Dataset | None = None, runtime: str = "ort-cpu",
                 floor: "FidelityFloor | str | None" = DEFAULT_MIN_FIDELITY, samples: int = DEFAULT_SAMPLES,
                 data_source: str | None = None, judged: Sequence[str] | None = None) -> None:
        self.source = Path(source)
        self.runtime = runtime
        self.floor = FidelityFloor.parse(floor)
        self._data = data
        self._samples = samples
        self._data_source = data_source
        self._ref: dict[str, np.ndarray] | None = None
        self._feeds: Dataset | None = None
        self._unmeasured: str | None = None  # why fidelity cannot be measured (the source fails on synthetic inputs)
        # the outputs the floor judges (None: all); the others are recorded. An LLM's KV-cache outputs feed the next
        # step, so its logits are what a user sees.
        self.judged = list(judged) if judged else None

    @property
    def metric(self) -> str:
        return self.floor.metric if self.floor else "cosine"

    def prepare(self) -> None:
        """Load the source on the runtime and compute its outputs (once): an input model that does not load is
        the user's to fix (exit 2, naming it), found before any technique runs."""
        self._prepare()

    def _prepare(self) -> None:
        from modelpress.runtimes import create_runner

        if self._ref is not None:
            return
        with create_runner(self.runtime, self.source) as r:
            specs = r.inputs
            if self._data is not None:
                self._data.check_against(specs, self._data_source or "validation data")
                self._feeds = _spread(self._data, self._samples)
                self._data_source = self._data_source or "the given data"
                self._ref = _run(r, self._feeds)
                return
            self._data_source = "synthetic inputs (no data given: fidelity on random inputs)"
            try:
                self._feeds = synthetic(specs, batch_size_for(specs, 1), max(1, min(self._samples, 8)),
                                        default_dim=SYNTHETIC_DIM, int_high=2)
                self._ref = _run(r, self._feeds)
            except ModelpressError as e:
                self._ref = {}
                self._unmeasured = (f"fidelity not measured: the source model does not run on synthetic inputs "
                                    f"({first_line(e)[:120]}); give real samples (--data/--calib)")

    @property
    def data(self) -> Dataset:
        """The samples fidelity is measured on (for repairs that rank layers on the same data)."""
        self._prepare()
        if self._feeds is None:
            raise ModelpressError(self._unmeasured or "no samples to measure on: give real samples (--data/--calib)")
        return self._feeds

    def check(self, candidate: str | Path, enforce_floor: bool = True) -> Validation:
        """Raise InvalidArtifact for an invalid/unloadable/non-finite model; otherwise measure fidelity."""
        from modelpress.runtimes import create_runner

        candidate = Path(candidate)
        self._prepare()
        checker = check_structure(candidate)
        try:
            with create_runner(self.runtime, candidate) as r:
                if self._unmeasured:
                    return Validation(checker, self.runtime, 0, "none", [], None if self.floor is None else
                                      str(self.floor), self.metric, None, None, True, [self._unmeasured])
                out = _run(r, self._feeds)
        except ModelpressError as e:
            raise InvalidArtifact(f"{candidate.name} does not run on {self.runtime}: {first_line(e)}") from None
        assert self._ref is not None
        fids, notes = [], []
        for name, ref in self._ref.items():
            got = out.get(name)
            if got is None:
                raise InvalidArtifact(f"{candidate.name} has no output {name!r} (the source model has)")
            if got.shape != ref.shape:
                raise InvalidArtifact(f"{candidate.name}: output {name!r} has shape {list(got.shape)}, the source "
                                      f"gives {list(ref.shape)}")
            if got.dtype.kind == "f" and not np.isfinite(got).all() and np.isfinite(ref).all():
                bad = int((~np.isfinite(got.reshape(len(got), -1))).any(1).sum())
                raise InvalidArtifact(f"{candidate.name}: output {name!r} is NaN/Inf on {bad} of {len(got)} samples "
                                      "where the source model is finite")
            fids.append(compare_output(name, got, ref))
        metric = self.metric
        bar = [f for f in fids if self.judged is None or f.name in self.judged] or fids
        worst = min(bar, key=lambda f: f.score(metric)) if bar else None
        if metric == "agreement" and not any(f.agreement is not None for f in fids):
            notes.append("no classifier-shaped output: agreement floor judged on cosine")
        value = None if worst is None else round(worst.score(metric), 8)
        passed = self.floor is None or value is None or value >= self.floor.value - 1e-9 or not enforce_floor
        return Validation(checker, self.runtime, len(self._feeds), self._data_source or "", fids,
                          None if self.floor is None else str(self.floor), metric,
                          None if worst is None else worst.name, value, passed, notes)


def compare_output(name: str, got: np.ndarray, ref: np.ndarray) -> OutputFidelity:
    """Per-sample fidelity of one output (first axis = samples)."""
    n = len(ref) if ref.ndim else 1
    if ref.dtype.kind not in "fc":
        same = (got.reshape(n, -1) == ref.reshape(n, -1)).all(1)
        return OutputFidelity(name, "exact", agreement=round(float(same.mean()), 6))
    a = got.reshape(n, -1).astype(np.float64)
    b = ref.reshape(n, -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    # a vector negligible next to the batch's typical norm counts as zero: two zeros agree perfectly
    tiny = 1e-6 * max(float(np.median(nb)) if len(nb) else 0.0, 1e-30)
    za, zb = na <= tiny, nb <= tiny
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-300)
    cos = np.where(za & zb, 1.0, np.where(za | zb, 0.0, cos))
    fid = OutputFidelity(name, "float", round(float(cos.mean()), 8), round(float(cos.min()), 8),
                         float(np.abs(a - b).max()) if a.size else 0.0)
    if ref.ndim == 2 and ref.shape[1] > 1:
        fid.kind = "classifier"
        fid.agreement = round(float((a.argmax(1) == b.argmax(1)).mean()), 6)
    return fid


def _spread(data: Dataset, n: int) -> Dataset:
    """Up to n samples spread over the data set (not just its head: calibration sets are often sorted)."""
    if len(data) <= n:
        return data
    idx = np.linspace(0, len(data) - 1, n).round().astype(int)
    return Dataset({k: v[idx] for k, v in data.inputs.items()}, None if data.labels is None else data.labels[idx])


def _run(runner: Any, data: Dataset) -> dict[str, np.ndarray]:
    specs = runner.inputs
    bs = batch_size_for(specs, 8)
    fixed = any(s.shape and isinstance(s.shape[0], int) for s in specs)
    names = [o.name for o in runner.outputs]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for batch in data.batches(bs):
        if fixed and len(next(iter(batch.values()))) != bs:
            break  # a fixed-batch model takes whole batches only
        res = runner.infer(batch)
        for n in names:
            parts[n].append(np.asarray(res[n]))
    return {n: np.concatenate(v) if v and v[0].ndim else np.stack(v) for n, v in parts.items() if v}
