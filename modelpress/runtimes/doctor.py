"""What each runtime path needs on this machine, and how to get what is missing: `modelpress doctor`.

The one trap it exists for: onnxruntime's GPU build (`onnxruntime-gpu`) provides the same `onnxruntime` module as
the CPU build, so it must *replace* it; installed beside it, whichever was installed last wins, silently."""

from __future__ import annotations

import shutil
from importlib import metadata
from typing import Any

_REPLACE_ORT = ("pip uninstall -y onnxruntime && pip install onnxruntime-gpu (it replaces the CPU build; both "
                "provide the `onnxruntime` module), with an NVIDIA driver and the CUDA libraries it names")


def _dist(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def checks() -> list[dict[str, Any]]:
    from modelpress.runtimes import RUNNERS

    gpu = shutil.which("nvidia-smi") is not None
    out: list[dict[str, Any]] = [{
        "name": "nvidia-gpu", "ok": gpu,
        "detail": "nvidia-smi found" if gpu else "no NVIDIA driver (nvidia-smi not found): the GPU paths cannot run",
        "fix": None if gpu else "a machine with an NVIDIA GPU and its driver"}]
    cpu_ort, gpu_ort = _dist("onnxruntime"), _dist("onnxruntime-gpu")
    fixes = {
        "ort-cpu": "pip install onnxruntime",
        "ort-cuda": _REPLACE_ORT,
        "ort-tensorrt": _REPLACE_ORT + "; plus TensorRT's libraries (NVIDIA's `tensorrt` packages, from NVIDIA's "
                                       "own package index) on the library path",
        "openvino": "pip install 'modelpress[openvino]'",
        "tensorrt": "TensorRT's Python package (`tensorrt`, from NVIDIA's own package index; the one on PyPI is a "
                    "placeholder that downloads from there), PyTorch with CUDA (pip install 'modelpress[torch]' "
                    "from PyTorch's CUDA wheel index), and an NVIDIA GPU",
    }
    for name in RUNNERS:
        cls = RUNNERS[name]
        ok, why = cls.availability()
        version = cls.version()
        detail = f"{cls.description}" + (f"; {cls.package} {version}" if version else "") + ("" if ok else f": {why}")
        out.append({"name": name, "ok": ok, "detail": detail, "fix": None if ok else fixes.get(name)})
    if cpu_ort and gpu_ort:
        out.append({"name": "onnxruntime", "ok": False,
                    "detail": f"both onnxruntime {cpu_ort} and onnxruntime-gpu {gpu_ort} are installed: one "
                              "silently shadows the other", "fix": _REPLACE_ORT})
    return out
