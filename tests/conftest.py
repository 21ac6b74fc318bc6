from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelpress.data import Dataset

ROOT = Path(__file__).resolve().parent.parent

# The smallest valid study recipe (fp32.onnx + data.npz beside it): bad-input tests break one thing in it.
TINY_STUDY = """\
modelpress: 1
kind: study
model: fp32.onnx
data: {eval: data.npz}
candidates:
  - [dynamic-int8]
profiles: [edge-1core]
output: out
"""


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly where onnxruntime has no CUDA provider (every CI machine)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU and onnxruntime-gpu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """TinyCNN exported once per session (TorchScript exporter: fast); without torch (the ONNX-only install
    that .ci/smoke-ranges tests) the same graph built with onnx.helper."""
    import importlib.util

    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    if importlib.util.find_spec("torch") is None:
        from tests.onnx_models import tiny_cnn_onnx

        return tiny_cnn_onnx(path)
    from modelpress.exporters import ExportConfig, export_onnx
    from tests.factories import tiny_cnn

    model, example = tiny_cnn()
    export_onnx(model, example, path, ExportConfig(exporter="torchscript"))
    return path


@pytest.fixture(scope="session")
def tiny_data() -> Dataset:
    rng = np.random.default_rng(1)
    return Dataset({"input": rng.random((48, 1, 16, 16), dtype=np.float32)}, rng.integers(0, 10, 48))


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory, tiny_data) -> Path:
    return tiny_data.save(tmp_path_factory.mktemp("data") / "tiny.npz")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The real console entry point, in a subprocess, as a user or a pipeline runs it."""
    return subprocess.run(
        [sys.executable, "-m", "modelpress", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=timeout
    )


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, needle: str) -> None:
    """One line on stderr, the documented exit code, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("modelpress: error:"), lines[0]
    assert needle.lower() in lines[0].lower(), lines[0]


def no_leftovers(folder: Path, name: str) -> bool:
    """Neither the artifact nor a temp file of it is left behind."""
    return not any(p.name == name or p.name.startswith(f".{name}.") for p in folder.iterdir())
