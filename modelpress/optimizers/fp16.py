"""Float16 conversion with ONNX Runtime's converter (it handled every transformer export where
onnxconverter-common failed), keeping numerically unsafe ops in float32."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from modelpress.data import Dataset
from modelpress.io import captured_output
from modelpress.optimizers.base import Pass, PassConfig, PassResult


@dataclass
class Fp16Config(PassConfig):
    keep_io_types: bool = True  # inputs/outputs stay float32: callers need not change
    op_block_list: list[str] = field(default_factory=list)  # added to ORT's default block list
    node_block_list: list[str] = field(default_factory=list)
    target: str = "ort-cpu"  # the runtime this artifact is for: warns where fp16 will not pay
    # ONNX Runtime's basic graph optimization first (constant folding, BatchNorm fused into Conv): the float16
    # converter mis-types BatchNormalization's statistics and Constant nodes on some exports (Paddle's)
    fold_first: bool = False


class Fp16(Pass):
    name = "fp16"
    summary = "float16 weights and activations (ORT converter; unsafe ops stay float32); halves size"
    config_cls = Fp16Config
    quantizes = True  # float16 over an INT8 graph makes no valid model: refuse it up front

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        """Memory: the converter works on a ModelProto, so the model is held once in FP32 plus its float16
        copy (1.5x; protobuf releases a replaced tensor's bytes only with the whole model), plus one chunk of a
        tensor while it is converted (_chunked_np_to_float16); an input with external data (or past 1 GB) is
        written with external data (`OUT.onnx.data`), tensor by tensor, never as one protobuf."""
        import onnx
        from onnxruntime.transformers import float16

        from modelpress.onnxutil import save_model, wants_external_data

        c: Fp16Config = self.config  # type: ignore[assignment]
        external = wants_external_data(model_in)
        if c.fold_first:
            import tempfile

            from modelpress.optimizers.graph import ort_optimized

            with tempfile.TemporaryDirectory(prefix="modelpress-fp16-") as tmp:
                folded = Path(tmp) / "folded.onnx"
                ort_optimized(model_in, folded, "basic", external)
                model = _load_inferred(folded) if external else onnx.load(str(folded))
        else:
            model = _load_inferred(model_in) if external else onnx.load(str(model_in))
        blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(c.op_block_list))
        with captured_output(), _chunked_np_to_float16(float16):
            model = float16.convert_float_to_float16(
                model, keep_io_types=c.keep_io_types, op_block_list=blocked, node_block_list=c.node_block_list or None,
                disable_shape_infer=external,  # shapes were inferred on the graph alone (_load_inferred)
            )
        save_model(model, model_out, external)
        del model
        notes = []
        if not _fast_fp16(c.target):
            notes.append(f"{c.target} has few float16 kernels: expect no speed-up (casts around most ops), only half the size")
        if c.node_block_list:
            notes.append(f"kept in FP32: {len(c.node_block_list)} node(s) ({', '.join(c.node_block_list[:6])}"
                         f"{', ...' if len(c.node_block_list) > 6 else ''})")
        return PassResult(self.name, c.to_dict(), notes)

    def repairs(self, ctx, first):
        """Data-driven mixed precision: keep in FP32 the fewest nodes whose FP32 activations on real data are
        the largest (overflow past 65504 first), found by doubling then bisection."""
        from modelpress.optimizers.repair import Variants, activation_ranking, exclusion_search, with_options

        tries = Variants(ctx, self, first)
        if not self.config.fold_first and (  # type: ignore[attr-defined]
                yield from tries.attempt(with_options(self, fold_first=True),
                                         "folded first (constants, BatchNorm into Conv)")):
            return
        blocked = tries.base.config.op_block_list
        # Constant nodes converted to float16 feed ops the converter keeps in float32 (Clip bounds, Resize scales
        # in Paddle exports) without a Cast: keeping them float32 costs nothing in size.
        if "Constant" not in blocked and (yield from tries.attempt(
                with_options(tries.base, op_block_list=[*blocked, "Constant"]), "Constant nodes kept in FP32")):
            return
        base = tries.base
        kept = base.config.node_block_list
        ranked = [n for n in activation_ranking(ctx.source, ctx.data) if n not in kept]
        yield from exclusion_search(ctx, lambda nodes: with_options(base, node_block_list=kept + nodes), ranked,
                                    "overflow-prone nodes")


_CHUNK = 1 << 22  # elements per step of the float16 conversion (16 MB of float32)


def _np_to_float16(a, min_positive_val: float = 5.96e-08, max_finite_val: float = 65504.0):
    """onnxruntime's `float16.convert_np_to_float16`, element for element (values in (0, min_positive_val) become
    min_positive_val, beyond max_finite_val become max_finite_val, the same for negatives; 0, NaN and inf stay),
    in chunks: ORT's version builds int64 index arrays of every positive and negative element (4x a float32
    tensor's size in temporaries and 47 s for 0.5 GB, measured); this holds one 16 MB chunk at a time."""
    import numpy as np

    a = np.asarray(a)
    out = np.empty(a.shape, np.float16)
    src, dst = a.reshape(-1), out.reshape(-1)
    lo, hi = a.dtype.type(min_positive_val), a.dtype.type(max_finite_val)
    for i in range(0, src.size, _CHUNK):
        c = src[i:i + _CHUNK].copy()
        c[(c > 0) & (c < lo)] = lo
        c[(c < 0) & (c > -lo)] = -lo
        c[(c > hi) & (c < np.inf)] = hi
        c[(c < -hi) & (c > -np.inf)] = -hi
        dst[i:i + _CHUNK] = c
    return out


@contextlib.contextmanager
def _chunked_np_to_float16(float16_module) -> Iterator[None]:
    """Run ORT's converter with _np_to_float16 in place of its element helper (same values, bounded memory)."""
    original = float16_module.convert_np_to_float16
    float16_module.convert_np_to_float16 = _np_to_float16
    try:
        yield
    finally:
        float16_module.convert_np_to_float16 = original


def _load_inferred(path: Path):
    """The model with inferred shapes and then its weights: shape inference runs on the graph alone (the
    converter's own would serialize the whole model, which fails past 2 GB), the weights are read once."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    onnx.load_external_data_for_model(model, str(Path(path).parent))
    return model


def _fast_fp16(runtime: str) -> bool:
    """Whether `runtime` declares native float16 kernels (ORT's CPU EP has few: casts around most ops)."""
    from modelpress.runtimes import RUNNERS

    cls = RUNNERS.get(runtime)
    return bool(cls and cls.fast_fp16)
