"""Graph-level optimization passes: ONNX Runtime offline optimization, the ORT transformers
optimizer (attention / LayerNorm / GELU fusion for BERT-family models), and onnxslim.

Models with external data (and any past 1 GB) are written with external data (`OUT.onnx.data`). Memory:
tool=ort holds the model once, inside ONNX Runtime, which writes the optimized initializers straight to the
data file; tool=transformers and tool=onnxslim hold it once as a ModelProto (they edit the graph in Python)
and write it tensor by tensor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from modelpress.io import captured_output
from modelpress.optimizers.base import Pass, PassConfig, PassResult


def ort_optimized(model_in: Path, model_out: Path, level: str, external: bool | None = None) -> None:
    """ONNX Runtime's offline graph optimization at `level`, written to `model_out` (its initializers to
    `OUT.onnx.data` when `external`; None: when the input has external data or is past 1 GB)."""
    import onnxruntime as ort

    from modelpress.onnxutil import ort_output_options, wants_external_data
    from modelpress.runtimes.ort import graph_opt_level

    so = ort.SessionOptions()
    so.graph_optimization_level = graph_opt_level(level)
    so.optimized_model_filepath = str(model_out)
    ort_output_options(so, model_out, wants_external_data(model_in) if external is None else external)
    ort.InferenceSession(str(model_in), so, providers=["CPUExecutionProvider"])


@dataclass
class GraphConfig(PassConfig):
    tool: Literal["ort", "transformers", "onnxslim"] = "ort"
    level: Literal["basic", "extended", "all"] = "extended"  # tool=ort
    model_type: str = "bert"  # tool=transformers: bert, gpt2, t5, vit, ...
    num_heads: int = 0  # tool=transformers: 0 = detect from the graph
    hidden_size: int = 0


class GraphOptimize(Pass):
    name = "graph"
    summary = "graph optimization: ORT offline (basic/extended/all), ORT transformers fusion, or onnxslim"
    config_cls = GraphConfig

    def run(self, model_in: Path, model_out: Path, calib: Dataset | None = None) -> PassResult:
        from modelpress.onnxutil import wants_external_data

        c: GraphConfig = self.config  # type: ignore[assignment]
        notes: list[str] = []
        external = wants_external_data(model_in)
        with captured_output():
            if c.tool == "ort":
                ort_optimized(model_in, model_out, c.level, external)
                if c.level == "all":
                    notes.append("level 'all' writes CPU-specific layouts (NCHWc): run this file on the CPU EP only")
            elif c.tool == "transformers":
                from onnxruntime.transformers.optimizer import optimize_model

                m = optimize_model(str(model_in), model_type=c.model_type, num_heads=c.num_heads,
                                   hidden_size=c.hidden_size, opt_level=0)
                fused = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
                notes.append("fused: " + (", ".join(f"{k} {v}" for k, v in fused.items()) or "nothing"))
                m.save_model_to_file(str(model_out), use_external_data_format=external)
            else:
                try:
                    import onnxslim
                except ImportError:
                    raise ModelpressError("graph tool onnxslim needs the package: pip install 'modelpress[models]'") from None
                from modelpress.io import working_directory

                src, dst = str(Path(model_in).resolve()), str(Path(model_out).resolve())
                with working_directory(Path(dst).parent):  # onnxslim removes a stale OUT.onnx.data from the cwd
                    onnxslim.slim(src, dst, save_as_external_data=external)
        return PassResult(self.name, c.to_dict(), notes)

    def repairs(self, ctx, first):
        """ORT's extended/all levels write fused ops the model's opset may not have (LayerNormalization into an
        opset-12 graph: invalid); the basic level (constant folding, Conv+BN and similar) stays in the opset."""
        from modelpress.optimizers.repair import with_options

        c: GraphConfig = self.config  # type: ignore[assignment]
        if c.tool == "ort" and c.level != "basic":
            yield ctx.attempt(with_options(self, level="basic"), "level=basic")
