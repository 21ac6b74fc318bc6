"""ONNX Runtime quantization as passes: dynamic-range INT8 and calibrated static INT8 (QDQ).

Defaults follow what was measured on AVX2 x86 without VNNI (docs/field-notes in
the README): static QDQ with uint8 activations and int8 per-channel weights is
the fast path; dynamic INT8 of convolutions (ConvInteger) is often *slower* than
FP32 there, which the report surfaces rather than hides.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelpress.calibration import Reader
from modelpress.data import Dataset, batch_size_for
from modelpress.errors import ModelpressError
from modelpress.io import captured_output, working_directory
from modelpress.onnxutil import op_counts, wants_external_data
from modelpress.optimizers.base import Pass, PassConfig, PassResult


def _qtype(name: str):
    from onnxruntime.quantization import QuantType

    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def _preprocess(model_in: Path, workdir: Path, external: bool = False) -> tuple[Path, list[str]]:
    """ORT's recommended pre-processing (shape inference + graph optimization).

    Symbolic shape inference can assert on some exported transformers; retry without it. A model with
    external data goes through _preprocess_external instead: ORT's quant_pre_process loads and copies the
    whole model in Python several times (4x its size, measured) and loses the data file past 2 GB.
    """
    if external:
        return _preprocess_external(model_in, workdir)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = (workdir / "preprocessed.onnx").resolve()
    src = str(Path(model_in).resolve())
    with working_directory(workdir):  # keep ORT's failure dumps out of the user's folder
        try:
            quant_pre_process(src, str(out))
            return out, []
        except Exception as e:
            try:
                quant_pre_process(src, str(out), skip_symbolic_shape=True)
                return out, [f"pre-processing without symbolic shape inference ({type(e).__name__})"]
            except Exception as e2:
                return model_in, [f"pre-processing skipped: {type(e2).__name__}: {str(e2)[:200]}"]


def _preprocess_external(model_in: Path, workdir: Path) -> tuple[Path, list[str]]:
    """quant_pre_process's three steps, from paths, for a model with external data: ONNX Runtime's basic
    optimization (the weights held once, inside ORT, and written to the work folder's data file), then
    symbolic and ONNX shape inference on the graph alone (weights stay on disk). -> (model, notes)."""
    import onnx

    from modelpress.optimizers.graph import ort_optimized

    notes: list[str] = []
    opt, src = (workdir / "optimized.onnx").resolve(), Path(model_in).resolve()
    try:
        with working_directory(workdir):
            ort_optimized(src, opt, "basic", external=True)
    except Exception as e:  # noqa: BLE001 - ORT's own optimizer refusing the model: quantize it as given
        return model_in, [f"pre-processing skipped: {type(e).__name__}: {str(e)[:200]}"]
    graph = onnx.load(str(opt), load_external_data=False)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with captured_output():
            graph = SymbolicShapeInference.infer_shapes(graph, 2**31 - 1, False, False, 0)
    except Exception as e:  # noqa: BLE001 - as quant_pre_process's retry: go on without it
        notes.append(f"pre-processing without symbolic shape inference ({type(e).__name__})")
    sym = workdir / "symbolic.onnx"  # beside optimized.onnx.data, which its tensors point at
    onnx.save_model(graph, str(sym))
    out = workdir / "preprocessed.onnx"
    try:
        onnx.shape_inference.infer_shapes_path(str(sym), str(out))
    except Exception as e:  # noqa: BLE001
        notes.append(f"pre-processing without ONNX shape inference ({type(e).__name__})")
        out = sym
    try:
        from onnxruntime.quantization.quant_utils import add_pre_process_metadata

        m = onnx.load(str(out), load_external_data=False)
        add_pre_process_metadata(m)
        onnx.save_model(m, str(out))
    except ImportError:
        pass
    return out, notes


# Contrib ops that ORT's offline graph optimization fuses and its quantizer then passes over.
_FUSED = ("FusedConv", "FusedGemm", "FusedMatMul", "NhwcConv")


def fused_ops_note(model_in: Path) -> list[str]:
    fused = {k: v for k, v in op_counts(model_in).items() if k in _FUSED}
    if not fused:
        return []
    return [f"left in FP32: {', '.join(f'{v} {k}' for k, v in fused.items())} (ORT contrib ops from offline graph "
            "optimization, which the quantizer skips): quantize first, let ONNX Runtime fuse at load time"]


def resolve_reduce_range(value: bool | None) -> tuple[bool, list[str]]:
    """None = auto: 7-bit weights on x86 without VNNI. There ORT's U8S8 kernels use VPMADDUBSW, whose
    int16 pair sums saturate with full 8-bit weights. Measured here, static QDQ: MobileNetV2 logit cosine
    to fp32 0.944 -> 0.977 with it, MiniLM 0.931 -> 0.932; it does not change speed."""
    if value is not None:
        return value, []
    import platform

    from modelpress.machine import has_vnni

    if platform.machine().lower() in ("x86_64", "amd64") and not has_vnni():
        return True, ["reduce_range on (7-bit weights): this x86 CPU has no VNNI, and full 8-bit U8S8 saturates here"]
    return False, []


def check_quantized(path: Path, technique: str) -> None:
    """Refuse an output in which the technique quantized nothing (no quantized op at all)."""
    from modelpress.ops import quantized_among

    if not quantized_among(op_counts(path)):
        raise ModelpressError(f"{technique}: the model has no op this technique quantizes; nothing was written")


@dataclass
class DynamicInt8Config(PassConfig):
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = False
    # 7-bit weights. Off by default here: on MiniLM it cost cosine 0.960 -> 0.871 at no speed gain.
    # None = auto, as static-int8 does (on for x86 without VNNI).
    reduce_range: bool | None = False
    op_types: list[str] | None = None  # None: every op type ORT can quantize dynamically
    exclude_nodes: list[str] = field(default_factory=list)


class DynamicInt8(Pass):
    name = "dynamic-int8"
    summary = "ORT dynamic-range INT8: weights quantized offline, activations scaled at run time (no calibration)"
    config_cls = DynamicInt8Config
    quantizes = True

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        """External data in, external data out (`OUT.onnx.data`). Memory: ~3.3x the model (measured at 2.4 GB),
        ONNX Runtime's: quantize_dynamic holds the model while its ONNXQuantizer deep-copies and reloads it for
        shapes (modelpress.optimizers.memory refuses a run that cannot fit, naming int8-weight/static-int8)."""
        import onnx
        from onnxruntime.quantization import quantize_dynamic

        c: DynamicInt8Config = self.config  # type: ignore[assignment]
        reduce_range, rr_notes = resolve_reduce_range(c.reduce_range)
        external = wants_external_data(model_in)
        with tempfile.TemporaryDirectory(prefix="modelpress-q-") as tmp:
            src, notes = _preprocess(model_in, Path(tmp), external)
            quiet_ort_logs()
            with captured_output():
                quantize_dynamic(
                    str(src), str(model_out), weight_type=_qtype(c.weight_type), per_channel=c.per_channel,
                    reduce_range=reduce_range, op_types_to_quantize=c.op_types,
                    nodes_to_exclude=c.exclude_nodes or None, use_external_data_format=external,
                    # a weight whose type shape inference cannot reach (after contrib ops such as BiasGelu, in a
                    # graph without value_info, as most third-party exports are) is a float weight
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                )
        notes += rr_notes
        check_quantized(model_out, self.name)
        return PassResult(self.name, c.to_dict(), notes + fused_ops_note(model_in))

    def repairs(self, ctx, first):
        """Per-channel weights; then convolutions left in FP32 (ConvInteger is lossy and slow on CPUs);
        then the fewest most sensitive nodes kept in FP32."""
        from modelpress.onnxutil import op_counts
        from modelpress.optimizers.repair import Variants, with_options

        c: DynamicInt8Config = self.config  # type: ignore[assignment]
        tries = Variants(ctx, self, first)
        if not c.per_channel and (yield from tries.attempt(with_options(self, per_channel=True), "per_channel=true")):
            return
        if "Conv" in op_counts(ctx.source) and (c.op_types is None or "Conv" in c.op_types):
            no_conv = with_options(tries.base, op_types=[o for o in (c.op_types or _DYNAMIC_OPS) if o != "Conv"])
            if (yield from tries.attempt(no_conv, "convolutions left in FP32")):
                return
        yield from exclusion_repair(ctx, tries.base, op_types=set(tries.base.config.op_types or _DYNAMIC_OPS))


@dataclass
class StaticInt8Config(PassConfig):
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    activation_type: Literal["int8", "uint8"] = "uint8"  # U8S8 is faster than S8S8 on AVX2 without VNNI
    weight_type: Literal["int8", "uint8"] = "int8"
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    reduce_range: bool | None = None  # None: auto (on for x86 without VNNI)
    # Bounds calibration time and memory. (ORT 1.32's CalibMaxIntermediateOutputs drops, rather than
    # merges, each full chunk of collected ranges, so the cap on samples is our only memory bound.)
    max_calib_samples: int = 256
    calib_batch_size: int = 16
    op_types: list[str] | None = None
    exclude_nodes: list[str] = field(default_factory=list)
    exclude_most_sensitive: int = 0  # keep this many of the most sensitive layers in FP32 (SQNR ranking)
    keep_removable_activations: bool = False  # keep Relu/Clip that QDQ would fold into the uint8 range

    def validate(self) -> None:
        if self.exclude_most_sensitive < 0:
            raise ModelpressError("static-int8: exclude_most_sensitive must be >= 0")
        if self.max_calib_samples < 1 or self.calib_batch_size < 1:
            raise ModelpressError("static-int8: max_calib_samples and calib_batch_size must be >= 1")
        if self.calibration == "entropy" and not entropy_supported():
            raise ModelpressError(ENTROPY_NEEDS)  # refused before any work, not faked with MinMax's ranges


class StaticInt8(Pass):
    name = "static-int8"
    summary = "ORT static INT8 (QDQ, per-channel) with activation ranges calibrated on real data"
    config_cls = StaticInt8Config
    needs_calibration = True
    quantizes = True

    def min_opset(self) -> int:
        # per-channel DequantizeLinear (its `axis`) exists from opset 13; below it the model is invalid
        return 13 if self.config.per_channel else 0  # type: ignore[attr-defined]

    def for_old_opset(self):
        from modelpress.optimizers.repair import with_options

        return with_options(self, per_channel=False)

    def repairs(self, ctx, first):
        yield from calibration_then_exclusion(self, ctx, first)

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        """External data in, external data out (`OUT.onnx.data`). Memory: ~1.5x the model (measured at 2.4 GB):
        with external data, calibration runs apart (_calibrate_apart: the calibration session alone holds the
        weights), then quantize_static holds the model once plus the quantized weights; calibration streams
        batches of at most `max_calib_samples` samples through ORT's MinMax/histogram collectors."""
        from onnxruntime.quantization import CalibrationMethod, quantize_static

        c: StaticInt8Config = self.config  # type: ignore[assignment]
        calib, specs = self.calibration(model_in, calib)
        reduce_range, notes = resolve_reduce_range(c.reduce_range)
        if len(calib) > c.max_calib_samples:
            notes.append(f"calibrated on the first {c.max_calib_samples} of {len(calib)} samples (max_calib_samples)")
            calib = calib.take(c.max_calib_samples)
        bs = batch_size_for(specs, c.calib_batch_size)
        if len(calib) % bs and c.calibration != "minmax":
            # ORT's histogram collectors stack the batches: a short last batch breaks them. Whole batches only.
            keep = max(bs, len(calib) // bs * bs) if len(calib) >= bs else len(calib)
            bs = min(bs, len(calib))
            if keep < len(calib):
                notes.append(f"calibrated on {keep} of {len(calib)} samples (whole batches of {bs})")
                calib = calib.take(keep)
        exclude = list(c.exclude_nodes)
        if c.exclude_most_sensitive:
            from modelpress.optimizers.sensitivity import layer_sensitivity

            opts = {k: v for k, v in c.to_dict().items() if k != "exclude_most_sensitive"}
            ranked = layer_sensitivity(model_in, calib, opts, max_samples=min(32, c.max_calib_samples))
            kept = [s.node for s in ranked[: c.exclude_most_sensitive]]
            exclude += kept
            notes.append(f"kept in FP32 (most sensitive): {', '.join(kept)}")
        reader = Reader(calib, bs)
        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[c.calibration]
        external = wants_external_data(model_in)
        with tempfile.TemporaryDirectory(prefix="modelpress-q-") as tmp:
            src, pre_notes = _preprocess(model_in, Path(tmp), external)
            quiet_ort_logs()
            args = self.quantize_args()
            with captured_output():
                # apart: with external data (memory), and for entropy (quantize_static cannot pass its bins)
                apart = external or method == CalibrationMethod.Entropy
                cache = _calibrate_apart(src, reader, method, args, Path(tmp)) if apart else None
                quantize_static(
                    str(src), str(model_out), reader, per_channel=c.per_channel, reduce_range=reduce_range,
                    calibrate_method=method, nodes_to_exclude=exclude or None, use_external_data_format=external,
                    **args, **({} if cache is None else {"calibration_cache_path": str(cache)}),
                )
        check_quantized(model_out, self.name)
        return PassResult(self.name, c.to_dict(), pre_notes + notes + fused_ops_note(model_in) + self.check_output(model_out))

    def quantize_args(self) -> dict[str, Any]:
        """quantize_static's format, types, op types and extra options for this config (a subclass for another
        target, e.g. TensorRT's explicit quantization, changes only these)."""
        from onnxruntime.quantization import QuantFormat

        c: StaticInt8Config = self.config  # type: ignore[assignment]
        return {"quant_format": QuantFormat.QDQ if c.format == "qdq" else QuantFormat.QOperator,
                "activation_type": _qtype(c.activation_type), "weight_type": _qtype(c.weight_type),
                "op_types_to_quantize": c.op_types,
                "extra_options": {"QDQKeepRemovableActivations": c.keep_removable_activations}}

    def check_output(self, model_out: Path) -> list[str]:
        """Target-specific checks of the written model (notes; raise to refuse it). Default: none."""
        return []


# ONNX Runtime's entropy calibrator defaults to 128 histogram bins and 128 quantized bins: its KL search then has
# one candidate, the whole range, so "entropy" returns MinMax's ranges (ORT 1.32; quantize_static cannot pass other
# bins). 2048 bins searched for the 255-level window is the KL calibration TensorRT describes.
ENTROPY_BINS = {"num_bins": 2048, "num_quantized_bins": 255}
ENTROPY_NEEDS = ("calibration=entropy needs onnxruntime >= 1.32 (older quantize_static cannot be given the entropy "
                 "calibrator's bins, and with its own it returns MinMax's ranges); use percentile or minmax, or "
                 "upgrade onnxruntime")


def entropy_supported() -> bool:
    """Whether quantize_static reads a calibration cache (ORT >= 1.32): the one way to give it real entropy ranges,
    and what lets calibration run apart from it."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def default_op_types() -> set[str]:
    """The op types quantize_static quantizes when given none (ORT's QOperator and QDQ registries)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QLinearOpsRegistry) | set(QDQRegistry)


def _calibrate_apart(src: Path, reader, method, args: dict[str, Any], workdir: Path) -> Path | None:
    """Activation ranges computed in a phase of their own and saved as ONNX Runtime's calibration cache, which
    quantize_static then reads instead of calibrating (ORT >= 1.32; None where it cannot: quantize_static then
    calibrates itself). Inside quantize_static, calibration holds the model three times (its own copy, the
    calibrator's copy and the calibration session: 3.9x the model's size, measured on 0.5 GB); apart, the
    calibrator's copy is released once its augmented graph is written (external data) and the session is
    the only holder."""
    if not entropy_supported():
        return None
    import onnx
    from onnxruntime.quantization import calibrate as cal

    ops = args.get("op_types_to_quantize") or sorted(default_op_types())
    extra = args.get("extra_options") or {}
    given = {k: extra[n] for n, k in (("CalibTensorRangeSymmetric", "symmetric"), ("CalibMovingAverage", "moving_average"),
                                      ("CalibMovingAverageConstant", "averaging_constant"),
                                      ("CalibMaxIntermediateOutputs", "max_intermediate_outputs"),
                                      ("CalibPercentile", "percentile")) if n in extra}  # quantize_static's mapping
    # create_calibrator's classes and defaults, step by step, so the calibrator's copy of the model can be
    # released between writing the augmented graph and building the calibration session
    cls, defaults = {
        cal.CalibrationMethod.MinMax: (cal.MinMaxCalibrater, {"symmetric": False}),
        cal.CalibrationMethod.Entropy: (cal.EntropyCalibrater, {"symmetric": False, **ENTROPY_BINS}),
        cal.CalibrationMethod.Percentile: (cal.PercentileCalibrater, {"symmetric": True, "num_bins": 2048,
                                                                      "percentile": 99.999}),
    }[method]
    kw = {**defaults, **{k: v for k, v in given.items() if k in defaults or cls is cal.MinMaxCalibrater}}
    calibrator = cls(Path(src), ops, str(workdir / "augmented.onnx"), use_external_data_format=True, **kw)
    calibrator.augment_graph()
    calibrator.model = onnx.ModelProto()  # only augment_graph reads it: the weights go before the session loads
    calibrator.create_inference_session()
    calibrator.collect_data(reader)
    ranges = calibrator.compute_data()
    del calibrator
    cache = workdir / "calibration.json"
    cal.save_tensors_data(ranges, cache)
    if hasattr(reader, "rewind"):
        reader.rewind()
    return cache


# The op types ORT's dynamic quantizer handles (IntegerOpsRegistry), for "everything but Conv".
_DYNAMIC_OPS = ["Conv", "MatMul", "Gemm", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization"]


def calibration_then_exclusion(p: Pass, ctx, first, methods: tuple[str, ...] = ("percentile", "minmax")):
    """Repairs for calibrated INT8 (ORT and INC): the other calibration `methods` (percentile clips the outliers
    minmax stretches the range for), then, with the best of them, the first and last layers, then the fewest most
    sensitive nodes (per-layer SQNR on real data) kept in FP32."""
    from modelpress.optimizers.repair import Variants, with_options

    tries = Variants(ctx, p, first)
    # Not ORT's entropy: its KL search is the slowest (about 2 min for a 280-tensor detector on 2 cores) and it was
    # not the most faithful on any of the three real models measured (MobileNetV2: it clipped ReLU6 outputs to 1/8
    # of their range; all-MiniLM-L6-v2: its better start led the exclusion search to a worse end). Asked for, it
    # runs. INC's own entropy calibrator, a different implementation, stays in INC's `methods`.
    for method in methods:
        if method != p.config.calibration and ctx.has_budget():  # type: ignore[attr-defined]
            if (yield from tries.attempt(with_options(p, calibration=method), f"calibration={method}")):
                return
    base = tries.base
    ends = _first_and_last(ctx.source, base.config.exclude_nodes)  # type: ignore[attr-defined]
    if ends and ctx.has_budget():
        # the input layer sees raw pixels/embeddings and the head produces the logits: the layers PTQ hurts most
        # on classifiers (MobileNetV2: top-1 agreement on confident crops 96% -> 99% with both in FP32)
        trial = with_options(base, exclude_nodes=[*base.config.exclude_nodes, *ends])  # type: ignore[attr-defined]
        if (yield from tries.attempt(trial, "first and last layers kept in FP32")):
            return
    yield from exclusion_repair(ctx, tries.base, op_types=quantized_op_types(tries.base))


def quantized_op_types(p: Pass) -> set[str] | None:
    """The op types `p` quantizes (None: every type its quantizer knows), so an exclusion search ranks only nodes
    whose exclusion changes the model (trt-int8 quantizes MatMul/Conv/Gemm: keeping a bias Add or an embedding
    Gather in FP32 would change nothing, and ranked first they used up the search on all-MiniLM-L6-v2)."""
    ops = (p.quantize_args().get("op_types_to_quantize") if isinstance(p, StaticInt8) else None) \
        or getattr(p.config, "op_types", None)
    return set(ops) if ops else None


def _first_and_last(model: Path, already: list[str]) -> list[str]:
    import onnx

    names = [n.name for n in onnx.load(str(model), load_external_data=False).graph.node
             if n.op_type in ("Conv", "MatMul", "Gemm") and n.name]
    return [] if len(names) < 3 else [n for n in dict.fromkeys([names[0], names[-1]]) if n not in already]


def exclusion_repair(ctx, base: Pass, op_types: set[str] | None = None):
    from modelpress.optimizers.repair import Attempt, exclusion_search, with_options
    from modelpress.optimizers.sensitivity import layer_sensitivity

    if not ctx.has_budget():
        return
    try:
        # ranked as this technique quantizes (its op types), and only the nodes it would quantize
        opts = {"op_types": sorted(op_types)} if op_types else None
        ranked = [s.node for s in layer_sensitivity(ctx.source, ctx.data, opts, max_samples=min(32, len(ctx.data)))
                  if op_types is None or s.op_type in op_types]
    except Exception as e:  # noqa: BLE001 - no ranking, no exclusion search: say so in the tries
        ctx.attempts.append(Attempt("sensitivity ranking", None, error=f"{type(e).__name__}: {str(e)[:150]}"))
        return
    given = list(base.config.exclude_nodes)  # type: ignore[attr-defined]
    ranked = [n for n in ranked if n not in given]
    yield from exclusion_search(ctx, lambda nodes: with_options(base, exclude_nodes=given + nodes), ranked,
                                "most sensitive nodes")


def quiet_ort_logs() -> None:
    """ORT's quantizer logs advice at WARNING for every model; keep the terminal for our own output."""
    logging.getLogger().setLevel(logging.ERROR)
