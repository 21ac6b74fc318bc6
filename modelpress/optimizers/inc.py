"""Intel Neural Compressor's ONNX line (`onnx-neural-compressor`) as passes: static (with SmoothQuant),
dynamic, and accuracy-aware autotune. INC 3.x dropped its ONNX Runtime backend; this is where it lives now.

onnx-neural-compressor 1.0 calls `exit(0)` in several places (no op to quantize, no trial meets the goal,
an evaluator error): every call goes through `_guard`, which turns that into a clear error, and
autotune's best trial is tracked here, so a run that misses its goal still saves the best model found.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from modelpress.data import Dataset, batch_size_for, load_npz
from modelpress.errors import ModelpressError
from modelpress.io import captured_output
from modelpress.optimizers.base import Pass, PassConfig, PassResult
from modelpress.calibration import Reader
from modelpress.ops import quantized_among
from modelpress.optimizers.ort_quant import check_quantized, quiet_ort_logs, resolve_reduce_range


def _inc():
    """The INC module, imported quietly (its import builds default configs that log to the terminal)."""
    try:
        with captured_output():
            from onnx_neural_compressor.quantization import config, quantize, tuning  # noqa: F401
    except ImportError as e:
        raise ModelpressError(f"Intel Neural Compressor is not installed ({e}): pip install 'modelpress[inc]'") from None
    return importlib.import_module("onnx_neural_compressor.quantization")


@contextlib.contextmanager
def _guard(what: str) -> Iterator[None]:
    """INC exits the process on some failures; turn that into an error we can report."""
    import logging

    logging.getLogger("onnx_neural_compressor").setLevel(logging.ERROR)
    quiet_ort_logs()
    try:
        with captured_output():
            yield
    except SystemExit:
        raise ModelpressError(f"{what}: Intel Neural Compressor stopped without a model (nothing to quantize?)") from None


def _quantize(what: str, model_in: Path, model_out: Path, cfg) -> None:
    """INC's quantize, into a private folder: it writes weights as external data beside its output, so the
    result is re-saved at `model_out` (the caller's atomic temp path): one self-contained file, or with
    `OUT.onnx.data` when the input had external data (or was past 1 GB)."""
    from modelpress.onnxutil import wants_external_data

    with tempfile.TemporaryDirectory(prefix="modelpress-inc-") as tmp:
        with _guard(what):
            _inc().quantize(str(model_in), str(Path(tmp) / "q.onnx"), cfg)
        _copy_model(Path(tmp) / "q.onnx", model_out, wants_external_data(model_in))


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


@dataclass
class IncStaticConfig(PassConfig):
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    activation_type: Literal["int8", "uint8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    reduce_range: bool | None = None  # None: auto (on for x86 without VNNI), as INC itself recommends
    max_calib_samples: int = 100
    calib_batch_size: int = 8
    smooth_quant: bool = False  # SmoothQuant: migrate activation outliers into weights (transformers)
    smooth_quant_alpha: float = 0.5
    # Fold SmoothQuant's scales into the previous op's weights. INC 1.0 fails to fold into a scalar
    # initializer (e.g. GELU's Mul 0.5: "Number of values (256) does not match ... 1 elements"); false
    # inserts explicit Mul nodes instead.
    smooth_quant_folding: bool = True
    op_types: list[str] | None = None
    exclude_nodes: list[str] = field(default_factory=list)


def _static_config(c: IncStaticConfig, reader, exclude: list[str]):
    from onnxruntime.quantization import CalibrationMethod, QuantFormat

    inc = _inc()
    kwargs: dict[str, Any] = {}
    if c.op_types:
        kwargs["op_types_to_quantize"] = c.op_types
    if c.smooth_quant:
        # SmoothQuantConfig carries alpha/folding to INC's smoother (StaticQuantConfig's extra_options do not)
        cls = inc.config.SmoothQuantConfig
        kwargs.update(alpha=c.smooth_quant_alpha, folding=c.smooth_quant_folding)
        extra = {"SmoothQuant": True}
    else:
        cls, extra = inc.config.StaticQuantConfig, {}
    return cls(
        calibration_data_reader=reader,
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[c.calibration],
        quant_format=QuantFormat.QDQ if c.format == "qdq" else QuantFormat.QOperator,
        activation_type=_qtype(c.activation_type), weight_type=_qtype(c.weight_type), per_channel=c.per_channel,
        reduce_range=resolve_reduce_range(c.reduce_range)[0],
        nodes_to_exclude=exclude or None, calibration_sampling_size=c.max_calib_samples, extra_options=extra,
        execution_provider="CPUExecutionProvider", **kwargs,
    )


def _reader_for(step: Pass, model_in: Path, calib: Dataset | None, c: IncStaticConfig):
    calib, specs = step.calibration(model_in, calib)
    bs = min(batch_size_for(specs, c.calib_batch_size), len(calib))
    # whole batches only: INC's SmoothQuant stacks them and fails on a short last batch
    data = calib.take(max(bs, min(c.max_calib_samples, len(calib)) // bs * bs))
    return Reader(data, bs), len(data)


class IncStatic(Pass):
    name = "inc-static"
    summary = "Intel Neural Compressor static INT8 (QDQ), optionally with SmoothQuant for transformers"
    config_cls = IncStaticConfig
    needs_calibration = True
    quantizes = True

    def min_opset(self) -> int:
        return 13 if self.config.per_channel else 0  # type: ignore[attr-defined]  # per-channel QDQ's axis

    def for_old_opset(self):
        from modelpress.optimizers.repair import with_options

        return with_options(self, per_channel=False)

    def repairs(self, ctx, first):
        from modelpress.optimizers.ort_quant import calibration_then_exclusion
        from modelpress.optimizers.repair import with_options

        base = self
        if first.error and "inside its library" in first.error and not self.config.op_types:  # type: ignore[attr-defined]
            # INC 1.0 has no quantizer for some ops it tries by default (Shape, in Paddle exports): the weighted ones only
            base = with_options(self, op_types=["Conv", "MatMul", "Gemm"])
            first = ctx.attempt(base, "op_types=[Conv, MatMul, Gemm]")
            yield first
            if first.passed:
                return
        yield from calibration_then_exclusion(base, ctx, first, ("percentile", "entropy", "minmax"))

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        c: IncStaticConfig = self.config  # type: ignore[assignment]
        reader, n = _reader_for(self, model_in, calib, c)
        notes = [f"calibrated on {n} samples"]
        try:
            _quantize(self.name, model_in, model_out, _static_config(c, reader, c.exclude_nodes))
        except ValueError as e:
            if not (c.smooth_quant and c.smooth_quant_folding):
                raise
            from dataclasses import replace

            notes.append(f"SmoothQuant scales not folded (INC could not fold them: {str(e)[:80]}); Mul nodes inserted")
            _quantize(self.name, model_in, model_out,
                      _static_config(replace(c, smooth_quant_folding=False), reader, c.exclude_nodes))
        check_quantized(model_out, self.name)
        return PassResult(self.name, c.to_dict(), notes)


# onnx-neural-compressor 1.0's dynamic quantizer crashes on Conv biases
# (AttributeError: 'DynamicQuantizer' object has no attribute '_dynamic_quantize_bias'): leave Conv out.
INC_DYNAMIC_OPS = ["MatMul", "Attention", "EmbedLayerNormalization", "Gather", "LSTM"]


@dataclass
class IncDynamicConfig(PassConfig):
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = False
    op_types: list[str] = field(default_factory=lambda: list(INC_DYNAMIC_OPS))
    exclude_nodes: list[str] = field(default_factory=list)


class IncDynamic(Pass):
    name = "inc-dynamic"
    summary = "Intel Neural Compressor dynamic INT8 (no calibration)"
    config_cls = IncDynamicConfig
    quantizes = True

    def repairs(self, ctx, first):
        """Per-channel weights, then the fewest most sensitive nodes kept in FP32."""
        from modelpress.optimizers.ort_quant import exclusion_repair
        from modelpress.optimizers.repair import Variants, with_options

        tries = Variants(ctx, self, first)
        if not self.config.per_channel and (  # type: ignore[attr-defined]
                yield from tries.attempt(with_options(self, per_channel=True), "per_channel=true")):
            return
        yield from exclusion_repair(ctx, tries.base, op_types=set(tries.base.config.op_types))

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        c: IncDynamicConfig = self.config  # type: ignore[assignment]
        with _guard(self.name):
            cfg = _inc().config.DynamicQuantConfig(weight_type=_qtype(c.weight_type), per_channel=c.per_channel,
                                                   op_types_to_quantize=c.op_types, nodes_to_exclude=c.exclude_nodes or None,
                                                   execution_provider="CPUExecutionProvider")
        _quantize(self.name, model_in, model_out, cfg)
        check_quantized(model_out, self.name)
        notes = ["Conv left in FP32: INC 1.0's dynamic quantizer fails on Conv biases"] if "Conv" not in c.op_types else []
        return PassResult(self.name, c.to_dict(), notes)


@dataclass
class IncTuneConfig(IncStaticConfig):
    """Autotune: static INT8 first, then keep the most sensitive layers in FP32, one more per trial."""

    tolerable_loss: float = 0.01
    loss: Literal["relative", "absolute"] = "relative"
    max_trials: int = 5
    eval_data: str | None = None  # .npz; default: the calibration data
    evaluator: str | None = None  # 'module:function' (model path -> score, higher is better); default below

    def validate(self) -> None:
        if self.max_trials < 1 or self.tolerable_loss < 0:
            raise ModelpressError("inc-tune: max_trials must be >= 1 and tolerable_loss >= 0")


def default_evaluator(reference: Path, data: Dataset) -> Callable[[str], float]:
    """Top-1 accuracy when the data has labels, else mean cosine similarity to the reference's outputs."""
    from modelpress.benchmarks.evaluate import evaluate, predict

    ref = predict(reference, data)

    def score(model_path: str) -> float:
        metrics, _ = evaluate(model_path, data, reference=ref)
        return metrics.top1 if metrics.top1 is not None else metrics.fidelity.cosine_mean

    return score


def _load_evaluator(spec: str) -> Callable[[str], float]:
    from modelpress.registry import load_object

    return load_object(spec, "inc-tune: cannot load evaluator")


class IncTune(Pass):
    name = "inc-tune"
    summary = "Intel Neural Compressor accuracy-aware autotune: falls back sensitive layers to FP32 until the loss fits"
    config_cls = IncTuneConfig
    needs_calibration = True
    quantizes = True

    def min_opset(self) -> int:
        return 13 if self.config.per_channel else 0  # type: ignore[attr-defined]

    def for_old_opset(self):
        from modelpress.optimizers.repair import with_options

        return with_options(self, per_channel=False)

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        from modelpress.optimizers.sensitivity import layer_sensitivity

        c: IncTuneConfig = self.config  # type: ignore[assignment]
        reader, n = _reader_for(self, model_in, calib, c)
        eval_data = load_npz(c.eval_data) if c.eval_data else calib
        evaluate = _load_evaluator(c.evaluator) if c.evaluator else default_evaluator(model_in, eval_data)
        ranking = [s.node for s in layer_sensitivity(model_in, calib, max_samples=min(32, c.max_calib_samples))]
        baseline = float(evaluate(str(model_in)))
        tolerable = c.tolerable_loss if c.loss == "relative" else c.tolerable_loss / max(abs(baseline), 1e-12)

        trials: list[dict[str, Any]] = []
        best_dir = Path(tempfile.mkdtemp(prefix="modelpress-tune-"))

        def tracked(model_path: str) -> float:
            score = float(evaluate(model_path))
            if model_path != str(model_in) and quantized_among(_ops(model_path)):
                trials.append({"trial": len(trials) + 1, "score": score})
                if score >= max((t["score"] for t in trials[:-1]), default=-float("inf")):
                    _copy_model(model_path, best_dir / "best.onnx")
            return score

        inc = _inc()
        try:
            with _guard(self.name):
                configs = [_static_config(c, reader, c.exclude_nodes + ranking[:k]) for k in range(c.max_trials)]
                tune_cfg = inc.tuning.TuningConfig(config_set=configs, tolerable_loss=tolerable, max_trials=c.max_trials)
                best = inc.tuning.autotune(str(model_in), tune_cfg, eval_fn=tracked, calibration_data_reader=reader)
        except ModelpressError:
            best = None  # INC exits when no trial meets the goal; our record of trials still holds the best
        try:
            if not trials:
                raise ModelpressError("inc-tune: no trial produced a quantized model")
            best_score = max(t["score"] for t in trials)
            met = (baseline - best_score) / max(abs(baseline), 1e-12) <= tolerable + 1e-12
            chosen = next(i for i, t in enumerate(trials) if t["score"] == best_score)
            if best is not None and met:
                from modelpress.onnxutil import save_model, wants_external_data

                save_model(best, model_out, wants_external_data(model_in))
            else:
                _copy_model(best_dir / "best.onnx", model_out)
        finally:
            shutil.rmtree(best_dir, ignore_errors=True)
        notes = [f"baseline {baseline:.4f}; trials: " + ", ".join(f"#{t['trial']} {t['score']:.4f}" for t in trials),
                 f"kept in FP32: {ranking[:chosen] or 'nothing'}", f"calibrated on {n} samples",
                 "goal met" if met else f"GOAL NOT MET: best loss {(baseline - best_score):.4f} exceeds the budget"]
        return PassResult(self.name, c.to_dict(), notes, goal_met=met)


def _ops(path: str) -> set[str]:
    import onnx

    return {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}


def _copy_model(src: str | Path, dst: str | Path, external: bool | None = None) -> None:
    """Copy a model (INC saves trials with external data) with its data folded in, or, with `external` (None:
    when it is past 1 GB), into `DST.data` beside it."""
    import onnx

    from modelpress.onnxutil import EXTERNAL_THRESHOLD_BYTES, model_size_bytes, save_model

    if external is None:
        external = model_size_bytes(src) > EXTERNAL_THRESHOLD_BYTES
    model = onnx.load(str(src))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    save_model(model, dst, external)
