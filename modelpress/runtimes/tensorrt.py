"""TensorRT as a native runtime: `build_engine` (ONNX parser -> builder with FP16 / INT8 / strongly-typed flags,
an INT8 calibrator over the `.npz` data with a cache, optimization profiles from the data's shapes or trtexec-style
`--shapes`, a timing cache) and `TensorrtRunner`, which profiles and evaluates a serialized engine through the same
runner contract as every runtime.

Written to TensorRT 10's documented Python API (`tensorrt` module; `execute_async_v3`, named I/O tensors) with
PyTorch's CUDA tensors as device buffers. **Never run here**: TensorRT cannot be installed on the machines this
project is developed and tested on (its PyPI packages fetch from NVIDIA's own index), and they have no GPU; the
`gpu`-marked tests run it where both exist. An engine is tied to the GPU and TensorRT version it was built with, so
its sidecar (`ENGINE.json`) records both and loading elsewhere is refused in one line, before TensorRT tries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from modelpress.errors import ModelpressError, first_line
from modelpress.runtimes.base import Runner, RunnerOptions, TensorSpec


def _trt():
    import tensorrt as trt

    return trt


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def engine_facts() -> dict[str, str]:
    """What an engine is tied to: TensorRT's version and the GPU."""
    return {"tensorrt": _trt().__version__, "gpu": _gpu_name()}


def default_engine_name(model: Path, precision: str) -> str:
    f = engine_facts()
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", f["gpu"]).strip("-").lower()
    return f"{model.stem}.{precision}.trt{f['tensorrt']}.{gpu}.engine"


@dataclass
class TensorrtOptions(RunnerOptions):
    device_id: int = 0


class TensorrtRunner(Runner):
    name = "tensorrt"
    description = "TensorRT, a serialized engine built by `modelpress build-engine` (needs an NVIDIA GPU + TensorRT)"
    options_cls = TensorrtOptions
    package = "tensorrt"
    fast_fp16 = True
    artifact_suffixes = (".engine", ".plan")

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            _trt()
        except ImportError:
            return False, ("the tensorrt package is not installed (it comes from NVIDIA's index, with a CUDA "
                           "GPU; `modelpress doctor` says how)")
        try:
            import torch

            if not torch.cuda.is_available():
                return False, "no CUDA GPU is visible to PyTorch (TensorRT's buffers are CUDA tensors)"
        except ImportError:
            return False, "PyTorch with CUDA is needed for device buffers (pip install 'modelpress[torch]')"
        return True, ""

    def load_impl(self) -> None:
        import torch

        trt = _trt()
        sidecar = self.model_path.with_name(self.model_path.name + ".json")
        if sidecar.is_file():
            built, here = json.loads(sidecar.read_text()), engine_facts()
            if {k: built.get(k) for k in here} != here:
                raise ModelpressError(f"{self.model_path.name} was built for {built.get('gpu')} with TensorRT "
                                      f"{built.get('tensorrt')}; this machine has {here['gpu']} with TensorRT "
                                      f"{here['tensorrt']}: rebuild it here with `modelpress build-engine`")
        torch.cuda.set_device(self.options.device_id)
        self._logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(self._logger).deserialize_cuda_engine(self.model_path.read_bytes())
        if engine is None:
            raise ModelpressError(f"TensorRT cannot deserialize {self.model_path.name}: an engine built for another "
                                  "GPU or TensorRT version, or not an engine")
        self._engine, self._context = engine, engine.create_execution_context()
        self._names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        # read once: infer_impl (the timed loop) walks the outputs on every call
        self._inputs, self._outputs = self._io(trt.TensorIOMode.INPUT), self._io(trt.TensorIOMode.OUTPUT)

    def _io(self, mode: Any) -> list[TensorSpec]:
        trt = _trt()
        out = []
        for n in self._names:
            if self._engine.get_tensor_mode(n) == mode:
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))).name
                out.append(TensorSpec(n, dtype, tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(n))))
        return out

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    def infer_impl(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ctx, keep, outs = self._context, [], {}
        for name, arr in feeds.items():
            t = torch.from_numpy(np.ascontiguousarray(arr)).cuda()
            ctx.set_input_shape(name, tuple(t.shape))
            ctx.set_tensor_address(name, t.data_ptr())
            keep.append(t)
        for spec in self.outputs:
            shape = tuple(ctx.get_tensor_shape(spec.name))
            t = torch.empty(shape, dtype=getattr(torch, np.dtype(spec.dtype).name), device="cuda")
            ctx.set_tensor_address(spec.name, t.data_ptr())
            outs[spec.name] = t
        stream = torch.cuda.current_stream()
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise ModelpressError(f"TensorRT failed to run {self.model_path.name}")
        stream.synchronize()
        return {n: t.cpu().numpy() for n, t in outs.items()}

    def close_impl(self) -> None:
        self._context = self._engine = None


# --------------------------------------------------------------------------- building an engine

def parse_shapes(text: str | None) -> dict[str, tuple[int, ...]]:
    """trtexec-style `input:1x3x224x224,mask:1x128` -> {name: shape}."""
    out: dict[str, tuple[int, ...]] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, dims = part.strip().rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise ModelpressError(f"--shapes: {part.strip()!r} is not NAME:DxDxD (e.g. input:1x3x224x224)")
        out[name] = shape
    return out


def build_engine(model: str | Path, output: str | Path | None = None, *, fp16: bool = False, int8: bool = False,
                 strongly_typed: bool = False, calib: Any = None, shapes: str | None = None,
                 timing_cache: str | Path | None = None, workspace_mb: int = 2048) -> dict[str, Any]:
    """ONNX -> a serialized TensorRT engine (+ its sidecar JSON). INT8 without Q/DQ in the model needs `calib`
    (a Dataset; the calibrator keeps a cache beside the engine); a model with Q/DQ (trt-int8) needs none."""
    import torch

    from modelpress.io import atomic_path, write_json
    from modelpress.onnxutil import check_onnx_file, op_counts

    trt = _trt()
    model = check_onnx_file(model)
    explicit = "QuantizeLinear" in op_counts(model)
    if int8 and not explicit and calib is None:
        raise ModelpressError("--int8 on a model without Q/DQ needs --calib DATA.npz (or quantize it with -t trt-int8)")
    precision = "int8" if int8 or explicit else "fp16" if fp16 else "fp32"
    out = Path(output) if output else model.with_name(default_engine_name(model, precision))
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(model)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelpressError(f"TensorRT's ONNX parser refused {model.name}: {first_line(Exception(errs[0] if errs else '?'))}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if (int8 or explicit) and not strongly_typed:
        config.set_flag(trt.BuilderFlag.INT8)
    given = parse_shapes(shapes)
    profile, dynamic = builder.create_optimization_profile(), False
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        if all(d >= 0 for d in inp.shape):
            continue
        dynamic = True
        if inp.name in given:
            lo = opt = hi = given[inp.name]
        elif calib is not None and inp.name in calib.inputs:
            per = tuple(calib.inputs[inp.name].shape[1:])
            lo, opt, hi = (1, *per), (min(8, len(calib)), *per), (min(64, len(calib)), *per)
        else:
            raise ModelpressError(f"input {inp.name!r} has dynamic dims {tuple(inp.shape)}: give --shapes "
                                  f"{inp.name}:1x... or --calib data with that input")
        profile.set_shape(inp.name, lo, opt, hi)
    if dynamic:
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    tc = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(tc, ignore_mismatch=False)
    if int8 and not explicit:
        config.int8_calibrator = _calibrator(calib, out.with_name(out.name + ".calib.cache"))
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelpressError(f"TensorRT could not build an engine from {model.name} (see the log above)")
    with atomic_path(out, suffix=".engine") as tmp:
        tmp.write_bytes(bytes(serialized))
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
    facts = {**engine_facts(), "precision": precision, "explicit_quantization": explicit,
             "strongly_typed": strongly_typed, "source": model.name, "cuda": torch.version.cuda}
    write_json(out.with_name(out.name + ".json"), facts)
    return {"engine": str(out), **facts, "size_bytes": out.stat().st_size}


def _calibrator(data: Any, cache: Path):
    """An IInt8EntropyCalibrator2 over the Dataset's batches (device copies via torch), with a cache file."""
    import torch

    trt = _trt()

    class NpzCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(list(data.batches(8)))
            self.keep: list[Any] = []

        def get_batch_size(self) -> int:
            return 8

        def get_batch(self, names):
            b = next(self.batches, None)
            if b is None:
                return None
            self.keep = [torch.from_numpy(np.ascontiguousarray(b[n])).cuda() for n in names]
            return [int(t.data_ptr()) for t in self.keep]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, blob) -> None:
            cache.write_bytes(bytes(blob))

    return NpzCalibrator()
