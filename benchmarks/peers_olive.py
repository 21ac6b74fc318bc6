"""Microsoft Olive for benchmarks/peers.py, run in its own virtual environment.

olive-ai 0.13.0 brings its own transformers (5.x) and torch, which do not share an environment with
modelpress's pins, so peers.py drives Olive's command line in a subprocess from a venv of its own:

    python -m venv DIR
    DIR/bin/pip install 'olive-ai[cpu]==0.13.0' requests onnxruntime==<ours> torch==<ours>

(`requests` is imported by Olive but not declared; onnxruntime and torch are pinned to the versions beside
modelpress so the quantizer is the same code and pip does not pick a CUDA build of torch; on a machine without
a local CPU wheel of torch, set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu first.)

What runs, offline (HF_HUB_OFFLINE=1; `olive optimize` is not used: it plans static INT8 calibrated on a
Hub data set, so offline it writes nothing and still exits 0, which is why every run here checks for the file):

1. `olive quantize -m FP32.onnx --implementation ort --precision int8`: with no data the CLI plans
   OnnxDynamicQuantization (its defaults);
2. the same command with a data set: the CLI plans OnnxStaticQuantization (int8 weights and activations,
   QOperator); its config (`--save_config_file --dry_run`) is run by `olive run` with the Hub data set
   replaced by Olive's RawDataContainer over our own calibration samples (one .bin per sample and input);
3. as 2 with `--use_qdq_encoding` (QDQ format).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OLIVE = "olive-ai[cpu]==0.13.0"


def _pins() -> list[str]:
    pins = [OLIVE, "requests"]
    for dist in ("onnxruntime", "torch"):
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def setup_commands(venv: Path) -> str:
    """The commands that make the venv by hand."""
    return f"python -m venv {venv} && {venv}/bin/pip install " + " ".join(f"'{p}'" for p in _pins())


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": ""}


def _tail(text: str, n: int = 400) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[-n:] or "no output"


def make_venv(venv: Path, pins: list[str], what: str, by_hand: str) -> str | None:
    """Create `venv` and pip-install `pins` into it: None, or why not (with how to do it by hand)."""
    py = venv / "bin" / "python"
    for cmd in ([sys.executable, "-m", "venv", str(venv)], [str(py), "-m", "pip", "install", "-q", *pins]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return (f"could not make {what}'s venv ({' '.join(cmd[:4])}... exit {proc.returncode}: "
                    f"{_tail(proc.stderr or proc.stdout)}); by hand: {by_hand}")
    return None


def ensure(venv: Path, log=print) -> tuple[Path | None, str]:
    """(the venv's `olive`, olive-ai's version) or (None, why not and how to make it by hand)."""
    venv = Path(venv).resolve()
    olive, py = venv / "bin" / "olive", venv / "bin" / "python"
    if not olive.is_file():
        log(f"olive: creating {venv} ({', '.join(_pins())}); this downloads about 1.5 GB once")
        why = make_venv(venv, _pins(), "Olive", setup_commands(venv))
        if why:
            return None, why
    proc = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('olive-ai'))"],
                          capture_output=True, text=True, env=_env())
    if proc.returncode != 0 or not olive.is_file():
        return None, f"{venv} has no working olive ({_tail(proc.stderr)}); by hand: {setup_commands(venv)}"
    return olive, proc.stdout.strip()


def _run(cmd: list[str], cwd: Path, out_dir: Path, timeout: int = 3600) -> tuple[Path | None, str]:
    """Run an Olive command; (model.onnx it wrote, '') or (None, why)."""
    shutil.rmtree(out_dir, ignore_errors=True)  # a model left by an earlier run must not pass for this one's
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=_env(), timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    found = sorted(out_dir.rglob("*.onnx")) if out_dir.is_dir() else []
    if not found:  # Olive can exit 0 without writing a model
        return None, f"exit {proc.returncode}, no model written: {_tail(proc.stdout + proc.stderr)}"
    return found[0], ""


def _raw_data(calib, where: Path) -> dict:
    """Our calibration samples as Olive's RawDataContainer reads them: DIR/<input>/<n>.bin, batch 1 each."""
    names, shapes, types = [], [], []
    for name, arr in calib.inputs.items():
        (where / name).mkdir(parents=True, exist_ok=True)
        for i in range(len(arr)):
            np.ascontiguousarray(arr[i:i + 1]).tofile(where / name / f"{i:05d}.bin")
        names.append(name)
        shapes.append([1, *arr.shape[1:]])
        types.append(str(arr.dtype))
    return {"name": "default_data_config", "type": "RawDataContainer",
            "load_dataset_config": {"data_dir": str(where), "input_names": names, "input_shapes": shapes,
                                    "input_types": types}}


def quantize(olive: Path, ref: Path, calib, work: Path) -> list[tuple[str, Path | None, str, str, float]]:
    """Olive's CLI quantization path on `ref`: (row name, model or None, how it was made, error, seconds)."""
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "calibration", ignore_errors=True)
    base = [str(olive), "quantize", "-m", str(ref), "--implementation", "ort", "--precision", "int8",
            "--disable_telemetry", "--log_level", "3"]
    rows = []
    out, t0 = work / "dynamic", time.perf_counter()
    path, err = _run([*base, "-o", str(out)], work, out)
    rows.append(("Olive quantize ort int8 (dynamic: no data)", path,
                 "`olive quantize --implementation ort --precision int8`: OnnxDynamicQuantization defaults", err,
                 round(time.perf_counter() - t0, 1)))
    data = None
    for qdq in (False, True):
        label = "QDQ" if qdq else "QOperator"
        name = f"Olive quantize ort int8 static {label} (local calibration data)"
        how = (f"`olive quantize --implementation ort --precision int8 -d X{' --use_qdq_encoding' if qdq else ''}` "
               f"planned, run by `olive run` on our {len(calib)} calibration samples (RawDataContainer) instead of X")
        cfg_dir, out, t0 = work / f"static-{label}-config", work / f"static-{label}", time.perf_counter()
        shutil.rmtree(cfg_dir, ignore_errors=True)
        flags = ["--use_qdq_encoding"] if qdq else []
        proc = subprocess.run([*base, *flags, "-d", "local", "-o", str(cfg_dir), "--save_config_file", "--dry_run"],
                              cwd=work, capture_output=True, text=True, env=_env())
        cfg_path = cfg_dir / "config.json"
        if not cfg_path.is_file():
            rows.append((name, None, how, f"the CLI planned no config: {_tail(proc.stdout + proc.stderr)}",
                         round(time.perf_counter() - t0, 1)))
            continue
        cfg = json.loads(cfg_path.read_text())
        data = data or _raw_data(calib, work / "calibration")
        cfg["data_configs"] = [data]
        cfg["output_dir"] = str(out)
        cfg_path.write_text(json.dumps(cfg, indent=1))
        passes = {k: {kk: vv for kk, vv in v.items() if kk != "data_config"} for k, v in cfg["passes"].items()}
        path, err = _run([str(olive), "run", "--config", str(cfg_path), "--disable_telemetry"], work, out)
        rows.append((name, path, f"{how}: {json.dumps(passes)}", err, round(time.perf_counter() - t0, 1)))
    return rows
