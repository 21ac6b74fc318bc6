"""Study recipes (caching, resume after SIGKILL, replay), the HTML report, release bundles (reproducible,
tamper-proof, safe to extract) and the regression gate."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_clean_error, run_cli

RECIPE = """\
modelpress: 1
kind: study
title: tiny study
model: fp32.onnx
data: {{eval: data.npz, calib: data.npz}}
candidates:
  - [dynamic-int8]
  - name: s8
    chain: [{{technique: static-int8, options: {{per_channel: false}}}}]
  - name: fp16
    chain: [fp16]
{extra}profiles: [edge-1core]
profile: {{iterations: {iterations}, warmup: 1}}
metric: top1
selection: {{max_accuracy_drop: 1.0, objective: size}}
output: study
"""


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def study_dir(tmp_path, tiny_onnx, tiny_npz) -> Path:
    (tmp_path / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "study.yaml").write_text(RECIPE.format(extra="", iterations=5))
    return tmp_path


def test_run_writes_study_caches_and_replays(study_dir):
    p = run_cli("run", str(study_dir / "study.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    out = study_dir / "study"
    assert {"report.json", "report.md", "report.html", "recipe.yaml"} <= {f.name for f in out.iterdir()}
    assert [v["name"] for v in rep["variants"]] == ["fp32", "dynamic-int8", "s8", "fp16"]
    assert rep["selection"]["objective"] == "min size on disk" and rep["selection"]["pick"] in ("dynamic-int8", "s8")
    assert set(rep["pareto"]) == {"edge-1core"} and rep["selection"]["pick"] in rep["pareto"]["edge-1core"]
    assert rep["cache"]["hits"] == 0
    shas = {v["name"]: _sha(out / f"{v['name']}.onnx") for v in rep["variants"][1:]}
    # the recipe as run spells out every option, defaults included
    ran = (out / "recipe.yaml").read_text()
    assert "reduce_range" in ran and "per_channel: false" in ran and "iterations: 5" in ran
    again = run_cli("run", str(study_dir / "study.yaml"), "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["cache"]["misses"] == 0
    # replaying the recipe as run, without the cache, rebuilds byte-identical models
    rp = run_cli("study", str(out / "recipe.yaml"), "--no-cache", "--json")
    assert rp.returncode == 0, rp.stderr
    for name, sha in shas.items():
        assert _sha(out / f"{name}.onnx") == sha, name


def test_html_report_is_self_contained_with_real_plots(study_dir):
    assert run_cli("run", str(study_dir / "study.yaml")).returncode == 0
    html = (study_dir / "study" / "report.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(pngs) == 2  # trade-offs and latency distributions for the one profile
    import matplotlib.image as mpimg

    for b in pngs:
        img = mpimg.imread(io.BytesIO(base64.b64decode(b)), format="png")
        assert img.shape[0] > 150 and img.shape[1] > 500 and img[..., :3].std() > 0.05  # drawn, not blank


def test_killed_run_resumes_without_redoing_finished_steps(study_dir):
    (study_dir / "study.yaml").write_text(RECIPE.format(extra="", iterations=400))
    proc = subprocess.Popen([sys.executable, "-m", "modelpress", "run", str(study_dir / "study.yaml"), "--json"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = study_dir / "study" / ".cache" / "profiles"
    deadline = time.time() + 240
    while time.time() < deadline and not (cache.is_dir() and any(cache.glob("*.json"))):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p.name for p in cache.glob("*.json")}
    assert done, "the run was killed before it finished any profile"
    models = {p.name for p in (study_dir / "study" / ".cache" / "models").glob("*.json")}
    assert len(models) == 3
    p = run_cli("run", str(study_dir / "study.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    c = json.loads(p.stdout)["cache"]
    assert c["hits"] >= 3 + 4 + len(done)  # built models, evaluations, the finished profiles
    assert c["misses"] == 4 - len(done)
    leftovers = [f for f in (study_dir / "study").rglob("*") if f.name.startswith(".") and f.is_file()]
    assert not leftovers, leftovers


def _bundle(tmp_path, tiny_onnx, name="b.mpk", *extra) -> subprocess.CompletedProcess:
    return run_cli("package", str(tiny_onnx), "-o", str(tmp_path / name), *extra)


def test_bundles_are_reproducible_and_verify(tmp_path, tiny_onnx, study_dir):
    assert run_cli("run", str(study_dir / "study.yaml")).returncode == 0
    rep = study_dir / "study" / "report.json"
    args = ["--report", str(rep), "--variant", "s8"]
    model = study_dir / "study" / "s8.onnx"
    a = run_cli("package", str(model), "-o", str(tmp_path / "a.mpk"), *args, "--name", "tiny")
    b = run_cli("package", str(model), "-o", str(tmp_path / "b.mpk"), *args, "--name", "tiny")
    assert a.returncode == 0 and b.returncode == 0, a.stderr
    assert _sha(tmp_path / "a.mpk") == _sha(tmp_path / "b.mpk")
    run_cli("package", str(model), "-o", str(tmp_path / "c.mpk"), *args, "--name", "tiny", "--timestamp", "2026")
    assert _sha(tmp_path / "c.mpk") != _sha(tmp_path / "a.mpk")
    v = run_cli("verify", str(tmp_path / "a.mpk"), "--json")
    assert v.returncode == 0, v.stderr
    res = json.loads(v.stdout)
    assert res["files"] == ["README.md", "model.onnx", "recipe.yaml", "report.json"]
    assert res["metrics"]["variant"] == "s8" and res["metrics"]["latency"]["edge-1core"]["p50_ms"] > 0
    with tarfile.open(tmp_path / "a.mpk") as t:
        man = json.loads(t.extractfile("manifest.json").read())
        assert all(m.mtime == 0 and m.uid == 0 for m in t.getmembers())
    assert man["signature"]["inputs"][0]["shape"] == ["batch", 1, 16, 16] and man["opset"]["ai.onnx"] == 18
    assert "kind: study" in man["recipe"] and man["versions"]["onnxruntime"]


def _repack(src: Path, dest: Path, change) -> Path:
    with tarfile.open(src) as t:
        files = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    change(files)
    with tarfile.open(dest, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return dest


def _flip_model_byte(f):
    b = bytearray(f["model.onnx"])
    b[-5] ^= 0xFF
    f["model.onnx"] = bytes(b)


@pytest.mark.parametrize("change,needle", [
    (_flip_model_byte, "model.onnx does not match its sha256"),
    (lambda f: f.__setitem__("README.md", f["README.md"] + b"!"), "README.md does not match"),
    (lambda f: f.__setitem__("extra.bin", b"x"), "files not in the manifest: ['extra.bin']"),
    (lambda f: f.pop("README.md"), "files missing from the bundle: ['README.md']"),
    (lambda f: f.pop("manifest.json"), "no manifest.json"),
    (lambda f: f.__setitem__("manifest.json", b"{not json"), "manifest.json is not JSON"),
])
def test_verify_catches_tampering(tmp_path, tiny_onnx, change, needle):
    assert _bundle(tmp_path, tiny_onnx).returncode == 0
    bad = _repack(tmp_path / "b.mpk", tmp_path / "bad.mpk", change)
    assert_clean_error(run_cli("verify", str(bad)), 3, needle)


def _evil_tar(path: Path, kind: str) -> Path:
    with tarfile.open(path, "w:gz") as t:
        if kind == "symlink":
            info = tarfile.TarInfo("model.onnx")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(info)
            return path
        name = {"dotdot": "../escaped.txt", "absolute": "/tmp/modelpress-escaped.txt", "device": "dev"}[kind]
        info = tarfile.TarInfo(name)
        if kind == "device":
            info.type = tarfile.CHRTYPE
            t.addfile(info)
        else:
            info.size = 3
            t.addfile(info, io.BytesIO(b"bad"))
    return path


@pytest.mark.parametrize("kind,needle", [("dotdot", "unsafe member path"), ("absolute", "unsafe member path"),
                                         ("symlink", "is a link"), ("device", "not a regular file")])
def test_extraction_refuses_unsafe_members(tmp_path, kind, needle):
    bad = _evil_tar(tmp_path / "evil.mpk", kind)
    assert_clean_error(run_cli("verify", str(bad)), 3, needle)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/modelpress-escaped.txt").exists()


def test_gate_passes_same_model_and_fails_slower_one(tmp_path, tiny_onnx):
    from modelpress.exporters import export_onnx
    from tests.factories import wide_cnn

    ok = run_cli("gate", str(tiny_onnx), "--baseline", str(tiny_onnx), "--rounds", "2", "-n", "30",
                 "--max-latency-regression", "50%", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["passed"]
    model, ex = wide_cnn()
    export_onnx(model, ex, tmp_path / "wide.onnx")
    bad = run_cli("gate", str(tmp_path / "wide.onnx"), "--baseline", str(tiny_onnx), "--rounds", "2", "-n", "30")
    assert bad.returncode == 5, bad.stdout + bad.stderr
    assert "FAIL: latency regressed" in bad.stdout and "Traceback" not in bad.stderr
    # bundles are verified, then gated on their recorded accuracy too
    assert _bundle(tmp_path, tiny_onnx).returncode == 0
    same = run_cli("gate", str(tmp_path / "b.mpk"), "--baseline", str(tiny_onnx), "--rounds", "1", "-n", "20",
                   "--max-latency-regression", "50%")
    assert same.returncode == 0, same.stdout + same.stderr


def test_example_recipe_parses(tmp_path, tiny_npz):
    from modelpress.study import load_study_recipe

    (tmp_path / "examples").mkdir()
    (tmp_path / "modelpress-demo").mkdir()
    for name in ("eval.npz", "calib.npz"):
        (tmp_path / "modelpress-demo" / name).write_bytes(tiny_npz.read_bytes())
    src = ROOT / "examples" / "digits-release.yaml"
    (tmp_path / "examples" / src.name).write_text(src.read_text())
    rec = load_study_recipe(tmp_path / "examples" / src.name)
    assert [c["name"] for c in rec.candidates] == ["static-int8", "fp16", "pruned-50", "pruned-50-int8"]
    assert rec.candidates[3]["chain"] == [("prune-structured", {"sparsity": 0.5}), ("static-int8", {})]
    assert Path(rec.output).resolve() == (tmp_path / "examples" / "modelpress-study-digits").resolve()
