"""PyTorch -> ONNX export with checks: checker, shape inference, parity against PyTorch.

Two exporters exist in torch 2.13: the dynamo one (torch.export based, the
supported future) and the legacy TorchScript tracer (fast, honours any opset).
`exporter="auto"` tries dynamo and falls back to TorchScript when dynamo fails,
cannot reach the requested opset, or loses the dynamic batch axis, and records
which one was used and why.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelpress.errors import CheckFailed, ModelpressError, first_line
from modelpress.io import captured_output, write_json
from modelpress.onnxutil import opset_of

EXPORTERS = ("auto", "dynamo", "torchscript")
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit")


@dataclass
class ExportConfig:
    opset: int = 18
    exporter: str = "auto"
    dynamic_batch: bool = True
    input_names: list[str] | None = None
    output_names: list[str] | None = None
    atol: float = 1e-4
    rtol: float = 1e-3
    # More symbolic axes than the batch, e.g. {"input_ids": {1: "sequence"}}. A model can declare its own
    # as an attribute `modelpress_dynamic_axes`; both are merged.
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    # Shapes on intermediate tensors (types are always kept). Off by default: they make ONNX Runtime pick a slow
    # fused kernel on CPUs (see _types_only); turn on for tools that want a fully shape-annotated graph.
    keep_intermediate_shapes: bool = False


def _axes(module, names: list[str], cfg: ExportConfig) -> dict[str, dict[int, str]]:
    """Every input's symbolic axes: batch (axis 0) when asked, plus the declared ones."""
    merged: dict[str, dict[int, str]] = {n: ({0: "batch"} if cfg.dynamic_batch else {}) for n in names}
    for source in (getattr(module, "modelpress_dynamic_axes", None) or {}, cfg.dynamic_axes):
        for name, axes in source.items():
            if name not in merged:
                raise ModelpressError(f"dynamic axis for {name!r}, which is not an input ({names})")
            merged[name].update({int(k): v for k, v in axes.items()})
    return merged


@dataclass
class ParityResult:
    """Worst error over all outputs; rel = max|onnx - torch| / max|torch|."""

    max_abs_err: float
    max_rel_err: float
    atol: float
    rtol: float
    passed: bool
    batch_sizes: list[int]


@dataclass
class ExportResult:
    path: str
    exporter: str
    opset: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    parity: ParityResult
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- model sources


def load_model_source(source: str, example: dict[str, np.ndarray] | None = None):
    """Resolve `package.module:factory` or a TorchScript file to (module, example inputs).

    A factory returns `(module, example_inputs)`, example inputs being a tensor,
    a tuple of tensors, or a dict of name -> tensor. A TorchScript file carries
    no example, so one must be given (`example`, from --inputs or --input-shape).
    """
    import torch

    if source.lower().endswith(TORCHSCRIPT_SUFFIXES) or os.path.sep in source and ":" not in source:
        path = Path(source)
        if not path.is_file():
            raise ModelpressError(f"no such file: {path}")
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelpressError(
                f"{path} is not a TorchScript file ({first_line(e)}); for a state dict, write a factory 'pkg.module:fn'"
            ) from None
        if example is None:
            raise ModelpressError("a TorchScript file has no example inputs: pass --input-shape or --inputs FILE.npz")
        return module.eval(), {k: torch.from_numpy(v) for k, v in example.items()}

    if ":" not in source:
        raise ModelpressError(f"model source {source!r} is neither 'package.module:factory' nor a TorchScript file")
    mod_name, _, attr = source.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: factories in the working folder import
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise ModelpressError(f"cannot import {mod_name!r}: {type(e).__name__}: {first_line(e)}") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise ModelpressError(f"module {mod_name!r} has no attribute {attr!r}")
    try:
        made = fn() if callable(fn) and not isinstance(fn, torch.nn.Module) else fn
    except Exception as e:
        raise ModelpressError(f"factory {source} raised {type(e).__name__}: {first_line(e)}") from None
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module)):
        raise ModelpressError(f"factory {source} must return (torch.nn.Module, example_inputs), got {type(made).__name__}")
    module, ex = made
    if example is not None:
        ex = {k: torch.from_numpy(v) for k, v in example.items()}
    return module.eval(), ex


# --------------------------------------------------------------------------- export


def normalize_example(example, input_names: list[str] | None):
    """-> (names, tuple of tensors). Dict examples give their own names."""
    import torch

    if isinstance(example, torch.Tensor):
        tensors = (example,)
    elif isinstance(example, dict):
        names = list(example)
        return names, tuple(example.values())
    elif isinstance(example, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in example):
        tensors = tuple(example)
    else:
        raise ModelpressError("example inputs must be a tensor, a tuple of tensors or a dict of name -> tensor")
    if input_names:
        if len(input_names) != len(tensors):
            raise ModelpressError(f"--input-names gives {len(input_names)} names for {len(tensors)} inputs")
        return list(input_names), tensors
    return (["input"] if len(tensors) == 1 else [f"input_{i}" for i in range(len(tensors))]), tensors


def _torch_outputs(module, tensors) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        out = module(*tensors)
    if isinstance(out, torch.Tensor):
        out = (out,)
    elif isinstance(out, dict):
        out = tuple(out.values())
    if not all(isinstance(o, torch.Tensor) for o in out):
        raise ModelpressError("the model must return a tensor, a tuple of tensors or a dict of tensors")
    return [o.detach().cpu().numpy() for o in out]


def _tile_batch(tensors, n: int):
    import torch

    return tuple(torch.cat([t] * n) for t in tensors)


def _export_dynamo(module, tensors, names, out_names, path: Path, cfg: ExportConfig) -> None:
    import torch

    args = tensors
    axes = _axes(module, names, cfg)
    dynamic_shapes = None
    if any(axes.values()):
        # torch.export specializes a size-1 axis to a constant even when declared dynamic: export at batch >= 2.
        if cfg.dynamic_batch and any(t.shape[0] == 1 for t in tensors):
            args = _tile_batch(tensors, 2)
        dims: dict[str, Any] = {}
        dynamic_shapes = tuple({ax: dims.setdefault(d, torch.export.Dim(d)) for ax, d in axes[n].items()} for n in names)
    torch.onnx.export(
        module, args, str(path), dynamo=True, external_data=False, opset_version=cfg.opset,
        input_names=names, output_names=out_names, dynamic_shapes=dynamic_shapes, verbose=False,
    )


def _export_torchscript(module, tensors, names, out_names, path: Path, cfg: ExportConfig) -> None:
    import torch

    axes = _axes(module, names, cfg)
    if cfg.dynamic_batch:
        axes.update({n: {0: "batch"} for n in out_names})
    torch.onnx.export(
        module, tensors, str(path), dynamo=False, opset_version=cfg.opset,
        input_names=names, output_names=out_names, dynamic_axes={k: v for k, v in axes.items() if v} or None,
    )


def _types_only(m) -> None:
    """Keep every intermediate tensor's type, drop its shape (graph inputs and outputs keep theirs).

    Why: with full shapes on every tensor, ONNX Runtime's CPU graph optimizer fuses each Add + LayerNormalization
    into SkipLayerNormalization, whose kernel ran 6-7x slower than the pair in onnxruntime 1.32 (measured: 75 vs
    12 us at [1, 46, 384]), and all-MiniLM-L6-v2 ran 0.90x the speed of Optimum's export, which carries no shapes;
    types only: 1.01x. The types stay because the quantizers need them where shape inference stops at contrib ops.
    """
    for vi in m.graph.value_info:
        if vi.type.HasField("tensor_type"):
            vi.type.tensor_type.ClearField("shape")


def _problem_with(path: Path, cfg: ExportConfig, axes: dict[str, dict[int, str]]) -> str | None:
    """Why a produced graph does not meet the request, or None."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset != cfg.opset:
        return f"it produced opset {opset}, not the requested {cfg.opset}"
    for i in m.graph.input:
        for ax in axes.get(i.name, {}):
            dims = i.type.tensor_type.shape.dim
            if ax < len(dims) and dims[ax].HasField("dim_value"):
                return f"input {i.name!r} axis {ax} got fixed to {dims[ax].dim_value}, not symbolic"
    return None


def export_onnx(module, example, output: str | Path, config: ExportConfig | None = None) -> ExportResult:
    """Export `module` to `output` and verify it; nothing is written unless every step succeeds.

    Raises CheckFailed (after writing the model and its sidecar, for inspection)
    when parity with PyTorch is outside atol/rtol.
    """
    import onnx

    cfg = config or ExportConfig()
    if cfg.exporter not in EXPORTERS:
        raise ModelpressError(f"unknown exporter {cfg.exporter!r}; choose from {', '.join(EXPORTERS)}")
    output = Path(output)
    names, tensors = normalize_example(example, cfg.input_names)
    try:
        ref = _torch_outputs(module, tensors)
    except ModelpressError:
        raise
    except Exception as e:
        raise ModelpressError(f"the model fails on its example inputs: {type(e).__name__}: {first_line(e)}") from None
    out_names = list(cfg.output_names or (["output"] if len(ref) == 1 else [f"output_{i}" for i in range(len(ref))]))
    if len(out_names) != len(ref):
        raise ModelpressError(f"--output-names gives {len(out_names)} names for {len(ref)} outputs")

    notes: list[str] = []
    t0 = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        tmp = workdir / output.name
        order = {"auto": ["dynamo", "torchscript"], "dynamo": ["dynamo"], "torchscript": ["torchscript"]}[cfg.exporter]
        used = None
        for name in order:
            fn = _export_dynamo if name == "dynamo" else _export_torchscript
            try:
                with captured_output():
                    fn(module, tensors, names, out_names, tmp, cfg)
            except Exception as e:
                why = f"{name} exporter failed: {type(e).__name__}: {first_line(e)}"
            else:
                why = _problem_with(tmp, cfg, _axes(module, names, cfg))
                if why is None or cfg.exporter != "auto":
                    if why:
                        notes.append(f"{name} exporter: {why}")
                    used = name
                    break
                why = f"{name} exporter: {why}"
            notes.append(why + (f"; falling back to {order[-1]}" if name != order[-1] else ""))
            for f in workdir.iterdir():
                f.unlink()
        if used is None:
            raise ModelpressError("export failed: " + "; ".join(n.split("; falling back")[0] for n in notes))

        try:
            onnx.checker.check_model(str(tmp), full_check=True)
            inferred = onnx.shape_inference.infer_shapes(onnx.load(str(tmp)))
        except Exception as e:
            raise ModelpressError(f"exported graph does not pass onnx.checker: {first_line(e)}") from None
        if not cfg.keep_intermediate_shapes:
            _types_only(inferred)
        onnx.save(inferred, str(tmp))
        parity, ins, outs = _parity(tmp, module, names, tensors, ref, cfg)
        # a model outside tolerance never appears at the requested path: it is kept under a name that says so
        final = output if parity.passed else output.with_name(f"{output.stem}.parity-failed{output.suffix or '.onnx'}")
        result = ExportResult(str(final), used, opset_of(tmp), ins, outs, parity,
                              round(time.perf_counter() - t0, 3), notes)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write_json(sidecar_path(final), result.to_dict())
    if not parity.passed:
        raise CheckFailed(
            f"parity check failed: max abs err {parity.max_abs_err:.3g}, max rel err {parity.max_rel_err:.3g} "
            f"(atol {cfg.atol:g}, rtol {cfg.rtol:g}); nothing written at {output}: the model and its report are kept "
            f"for inspection as {final.name} and {sidecar_path(final).name}"
        )
    return result


def sidecar_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.name + ".export.json")


def _parity(path: Path, module, names, tensors, ref, cfg: ExportConfig) -> tuple[ParityResult, list, list]:
    """Compare ONNX Runtime to PyTorch on the example, and at another batch size when the batch is dynamic.
    Also returns the model's input and output signatures, read from the same session."""
    from modelpress.runtimes import create_runner

    cases = [(tensors, ref)]
    if cfg.dynamic_batch:
        bigger = _tile_batch(tensors, 3)
        cases.append((bigger, _torch_outputs(module, bigger)))
    max_abs = max_rel = 0.0
    passed = True
    with create_runner("ort-cpu", path) as runner:
        ins, outs = [s.to_dict() for s in runner.inputs], [s.to_dict() for s in runner.outputs]
        for inputs, expected in cases:
            got = runner.infer({n: t.detach().cpu().numpy() for n, t in zip(names, inputs)})
            for g, e in zip(got.values(), expected):
                if g.shape != e.shape:
                    raise CheckFailed(f"ONNX output shape {list(g.shape)} differs from PyTorch's {list(e.shape)}")
                diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
                max_abs = max(max_abs, float(diff.max(initial=0.0)))
                max_rel = max(max_rel, float(diff.max(initial=0.0) / max(np.abs(e).max(initial=0.0), 1e-12)))
                passed &= bool(np.allclose(g, e, atol=cfg.atol, rtol=cfg.rtol))
    return ParityResult(max_abs, max_rel, cfg.atol, cfg.rtol, passed, [int(c[0][0].shape[0]) for c in cases]), ins, outs
