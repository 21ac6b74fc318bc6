"""What each ONNX technique needs in memory, and a refusal before a run that cannot fit.

Peak resident memory of `optimize()` (the pass, validation on ONNX Runtime, placement), as a multiple of the
model's size on disk, measured with benchmarks/scale.py on MatMul stacks of 0.5, 1 and 2.4 GB with external
data (the factor falls with size as the fixed ~0.3 GB of the libraries weighs less; these are the 2.4 GB
values, rounded up). Why each pass needs what it does:

- validation (every technique): an ONNX Runtime session of the source, then one of the result, one at a
  time: ~1.1x the model while ORT reads the weights and pre-packs them.
- graph (tool=ort): one ORT session, which writes the optimized weights straight to `OUT.onnx.data`.
- fp16: the converter edits a ModelProto, so the FP32 weights and their float16 copy are both held (protobuf
  frees a replaced tensor's bytes only with the whole model), plus one 16 MB chunk per conversion step.
- static-int8: calibration (the augmented graph's session) runs apart from quantization (the model once,
  plus the quantized weights and one tensor's temporaries).
- int8-weight / int4-weight: the model once, plus the packed weights and one tensor's temporaries.
- dynamic-int8: ONNX Runtime's dynamic quantizer (`ONNXQuantizer`) deep-copies and reloads the model to get
  its shapes while `quantize_dynamic` still holds the first copy: three copies at the reload, 3.3x measured.
  No path-based form of that API exists; int8-weight or static-int8 quantize the same weights in ~1.5x.
"""

from __future__ import annotations

import os
from pathlib import Path

from modelpress.errors import ModelpressError

# measured at 2.4 GB (peak / size): graph 1.15, fp16 1.76, static-int8 1.59, int8-weight 1.54, int4-weight 1.41,
# dynamic-int8 3.25
MEMORY_FACTORS = {"graph": 1.3, "fp16": 2.0, "static-int8": 1.7, "int8-weight": 1.7, "int4-weight": 1.7,
                  "dynamic-int8": 3.4}
DEFAULT_FACTOR = 3.5  # techniques not measured at scale (INC, TensorRT's QDQ, ...)
CHECK_ABOVE_BYTES = 1 << 30  # smaller models: the libraries' own ~0.3 GB dominates, nothing to predict
_ADVICE = {"dynamic-int8": "ONNX Runtime's dynamic quantizer holds three copies of the model; int8-weight or "
                           "static-int8 quantize the same weights in about 1.5x"}


def available_bytes() -> int | None:
    """MemAvailable (Linux), or None where it cannot be read (then nothing is refused)."""
    from modelpress.machine import memory_mib

    mib = memory_mib()["available"]
    return None if mib is None else int(mib * 1024 * 1024)


def check_memory(technique: str, model_in: str | Path, available: int | None = None) -> None:
    """Refuse, in one line and before any work, a technique whose predicted peak (its factor x the model's
    size on disk) exceeds the memory available: better than the kernel's OOM killer an hour in.
    MODELPRESS_MEMORY_CHECK=0 skips the check."""
    from modelpress.onnxutil import model_size_bytes

    if os.environ.get("MODELPRESS_MEMORY_CHECK", "1") == "0":
        return
    size = model_size_bytes(model_in)
    if size < CHECK_ABOVE_BYTES:
        return
    available = available_bytes() if available is None else available
    factor = MEMORY_FACTORS.get(technique, DEFAULT_FACTOR)
    need = factor * size
    if available is None or need <= available:
        return
    advice = _ADVICE.get(technique, "free memory or use a machine with more")
    raise ModelpressError(f"{technique} on {Path(model_in).name} ({size / 1e9:.1f} GB) needs about {need / 1e9:.1f} GB "
                          f"of memory ({factor:g}x the model, measured) but {available / 1e9:.1f} GB is available: "
                          f"{advice} (MODELPRESS_MEMORY_CHECK=0 tries anyway)")
