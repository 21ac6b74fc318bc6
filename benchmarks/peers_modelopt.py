"""NVIDIA ModelOpt's ONNX INT8 PTQ for benchmarks/trt_peers.py, run in its own virtual environment.

nvidia-modelopt 0.47.0's `[onnx]` extra pins onnx~=1.21 and onnxruntime-gpu~=1.24 (x86 Linux), which cannot share
an environment with modelpress's pins (and the GPU build would replace our CPU onnxruntime), so its command line
runs in a venv of its own, with the CPU build of the same onnxruntime series (ModelOpt calibrates on the CPU
execution provider with `--calibration_eps cpu`; cupy, for its GPU paths, is left out):

    python -m venv DIR
    DIR/bin/pip install nvidia-modelopt==0.47.0 'onnx~=1.21.0' 'onnxruntime~=1.24.2' onnx-graphsurgeon \\
        'onnxconverter-common~=1.16.0' ml_dtypes onnxscript 'onnxslim>=0.1.76' 'polygraphy>=0.53.4' lief \\
        cppimport torch==<ours>

What runs: `python -m modelopt.onnx.quantization --quantize_mode int8 --calibration_data_path C.npz
--calibration_eps cpu`, once with its defaults (entropy calibration; the rest of the graph converted to FP16) and
once with `--high_precision_dtype fp32` (the rest stays FP32, as modelpress's trt-int8 leaves it). ModelOpt saves
over its --onnx_path (same content, new mtime, seen with 0.47.0), so it is given a copy.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
from peers_olive import _tail, make_venv

MODELOPT = "nvidia-modelopt==0.47.0"
_ONNX_PARTS = ["onnx~=1.21.0", "onnxruntime~=1.24.2", "onnx-graphsurgeon", "onnxconverter-common~=1.16.0",
               "ml_dtypes", "onnxscript", "onnxslim>=0.1.76", "polygraphy>=0.53.4", "lief", "cppimport"]


def _pins() -> list[str]:
    try:
        torch = f"torch=={importlib.metadata.version('torch')}"  # the CPU build already here, not a CUDA one
    except importlib.metadata.PackageNotFoundError:
        torch = "torch"
    return [MODELOPT, *_ONNX_PARTS, torch]


def setup_commands(venv: Path) -> str:
    return f"python -m venv {venv} && {venv}/bin/pip install " + " ".join(f"'{p}'" for p in _pins())


def ensure(venv: Path, log=print) -> tuple[Path | None, str]:
    """(the venv's python, nvidia-modelopt's version) or (None, why not and how to make it by hand)."""
    venv = Path(venv).resolve()
    py = venv / "bin" / "python"
    if not py.is_file():
        log(f"modelopt: creating {venv} ({', '.join(_pins())})")
        why = make_venv(venv, _pins(), "ModelOpt", setup_commands(venv))
        if why:
            return None, why
    proc = subprocess.run([str(py), "-c", "import importlib.metadata as m; import modelopt.onnx.quantization; "
                           "print(m.version('nvidia-modelopt'))"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ""})
    if proc.returncode != 0:
        return None, f"{venv} has no working modelopt ({_tail(proc.stderr)}); by hand: {setup_commands(venv)}"
    return py, proc.stdout.strip()


def quantize(py: Path, ref: Path, calib, work: Path, timeout: int = 3600) -> list[tuple[str, Path | None, str, str, float]]:
    """ModelOpt INT8 on `ref`: (row name, model or None, how it was made, error, seconds) per variant."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / "input.onnx"
    shutil.copyfile(ref, src)  # ModelOpt writes over its input
    np.savez(work / "calib.npz", **calib.inputs)
    rows = []
    for tag, extra in (("defaults: entropy, rest FP16", []), ("entropy, rest FP32", ["--high_precision_dtype", "fp32"])):
        out = work / ("modelopt-fp16.onnx" if not extra else "modelopt-fp32.onnx")
        out.unlink(missing_ok=True)
        cmd = [str(py), "-m", "modelopt.onnx.quantization", "--onnx_path", str(src), "--quantize_mode", "int8",
               "--calibration_data_path", str(work / "calib.npz"), "--calibration_eps", "cpu",
               "--output_path", str(out), *extra]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": ""})
            err = "" if out.is_file() else f"exit {proc.returncode}, no model: {_tail(proc.stdout + proc.stderr)}"
        except subprocess.TimeoutExpired:
            err = f"timed out after {timeout} s"
        how = f"`python -m modelopt.onnx.quantization --quantize_mode int8 --calibration_eps cpu {' '.join(extra)}`"
        rows.append((f"ModelOpt int8 ({tag})", out if not err else None, how, err,
                     round(time.perf_counter() - t0, 1)))
    return rows
