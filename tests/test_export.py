"""Export: real torch, real onnx checker, real onnxruntime parity."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from modelpress.errors import CheckFailed, ModelpressError
from modelpress.exporters import ExportConfig, export_onnx, load_model_source, sidecar_path
from tests.conftest import assert_clean_error, no_leftovers, run_cli
from tests.factories import TinyCNN, tiny_cnn, two_inputs


def _dims(path, which="input"):
    m = onnx.load(str(path))
    vals = m.graph.input if which == "input" else m.graph.output
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in vals]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_export_dynamic_batch_and_parity(tmp_path, exporter):
    model, example = tiny_cnn()
    out = tmp_path / "m.onnx"
    res = export_onnx(model, example, out, ExportConfig(exporter=exporter, input_names=["pixels"], output_names=["logits"]))
    assert res.exporter == exporter and res.opset == 18
    assert res.parity.passed and res.parity.max_abs_err < 1e-4
    assert res.parity.batch_sizes == [1, 3]  # checked at a second batch size: the batch axis really is dynamic
    assert _dims(out) == [["batch", 1, 16, 16]]
    assert res.inputs[0]["name"] == "pixels" and res.outputs[0]["name"] == "logits"
    side = json.loads(sidecar_path(out).read_text())
    assert side["exporter"] == exporter and side["parity"]["passed"] is True
    onnx.checker.check_model(str(out), full_check=True)


def test_intermediate_tensors_keep_types_not_shapes(tmp_path):
    """Shapes on every tensor make ONNX Runtime fuse Add+LayerNorm into a slower CPU kernel (see _types_only);
    types stay, because the quantizers need them. The graph's own inputs and outputs keep their shapes."""
    model, example = tiny_cnn()
    plain, shaped = tmp_path / "m.onnx", tmp_path / "s.onnx"
    export_onnx(model, example, plain, ExportConfig(exporter="dynamo"))
    export_onnx(model, example, shaped, ExportConfig(exporter="dynamo", keep_intermediate_shapes=True))
    vi = onnx.load(str(plain)).graph.value_info
    assert vi and all(v.type.tensor_type.elem_type and not v.type.tensor_type.HasField("shape") for v in vi)
    assert any(v.type.tensor_type.HasField("shape") for v in onnx.load(str(shaped)).graph.value_info)
    assert _dims(plain) == [["batch", 1, 16, 16]] and _dims(plain, "output") == _dims(shaped, "output")


def test_auto_prefers_dynamo_and_static_batch(tmp_path):
    model, example = tiny_cnn()
    res = export_onnx(model, example, tmp_path / "m.onnx", ExportConfig(dynamic_batch=False))
    assert res.exporter == "dynamo"
    assert _dims(tmp_path / "m.onnx") == [[1, 1, 16, 16]]
    assert res.parity.batch_sizes == [1]


def test_auto_falls_back_and_says_why(tmp_path):
    # dynamo cannot go down to opset 17 for this graph (the version converter asserts): TorchScript can.
    model, example = tiny_cnn()
    res = export_onnx(model, example, tmp_path / "m.onnx", ExportConfig(opset=17))
    assert res.opset == 17
    if res.exporter == "torchscript":
        assert res.notes and "falling back to torchscript" in res.notes[0]


def test_two_inputs_default_names(tmp_path):
    model, example = two_inputs()
    res = export_onnx(model, example, tmp_path / "m.onnx", ExportConfig(exporter="torchscript"))
    assert [i["name"] for i in res.inputs] == ["input_0", "input_1"]
    assert res.parity.passed


def test_parity_failure_keeps_model_and_raises(tmp_path):
    model, example = tiny_cnn()
    with pytest.raises(CheckFailed, match="parity check failed"):
        export_onnx(model, example * 1000, tmp_path / "m.onnx", ExportConfig(exporter="torchscript", atol=0, rtol=0))
    assert not (tmp_path / "m.onnx").exists()  # never at the requested path: kept under a name that says so
    kept = tmp_path / "m.parity-failed.onnx"
    assert kept.exists() and json.loads(sidecar_path(kept).read_text())["parity"]["passed"] is False


def test_export_failure_writes_nothing(tmp_path):
    from tests.factories import eigvals

    model, example = eigvals()
    with pytest.raises(ModelpressError, match="export failed: dynamo.*torchscript"):
        export_onnx(model, example, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_load_torchscript_needs_example(tmp_path):
    ts = tmp_path / "m.pt"
    torch.jit.trace(TinyCNN().eval(), torch.randn(1, 1, 16, 16)).save(str(ts))
    with pytest.raises(ModelpressError, match="--input-shape"):
        load_model_source(str(ts))
    module, ex = load_model_source(str(ts), {"input": np.zeros((1, 1, 16, 16), np.float32)})
    assert set(ex) == {"input"}


def test_cli_export_factory(tmp_path):
    out = tmp_path / "m.onnx"
    p = run_cli("export", "tests.factories:tiny_cnn", "-o", str(out), "--exporter", "torchscript", "--json")
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["parity"]["passed"] and res["exporter"] == "torchscript"
    assert out.exists() and sidecar_path(out).exists()


def test_cli_export_torchscript_file(tmp_path):
    ts = tmp_path / "m.pt"
    torch.jit.trace(TinyCNN().eval(), torch.randn(1, 1, 16, 16)).save(str(ts))
    p = run_cli("export", str(ts), "-o", str(tmp_path / "m.onnx"), "--input-shape", "1x1x16x16")
    assert p.returncode == 0, p.stderr
    assert "PASS" in p.stdout and "torchscript exporter" in p.stdout  # dynamo cannot take a ScriptModule: fell back
    assert "note: dynamo exporter failed" in p.stdout


def test_cli_parity_failure_exit_3(tmp_path):
    p = run_cli("export", "tests.factories:tiny_cnn", "-o", str(tmp_path / "m.onnx"), "--exporter", "torchscript",
                "--atol", "0", "--rtol", "0", "--input-shape", "1x1x16x16")
    # exact equality between PyTorch and ONNX Runtime float kernels does not hold: the documented code 3
    assert_clean_error(p, 3, "parity check failed")


@pytest.mark.parametrize(
    "source, needle",
    [
        ("no_such_pkg.models:factory", "cannot import 'no_such_pkg.models'"),
        ("tests.factories:missing", "has no attribute 'missing'"),
        ("tests.factories:raises", "raised RuntimeError: weights not found"),
        ("tests.factories:wrong_return", "must return (torch.nn.Module, example_inputs)"),
        ("tests.factories:eigvals", "export failed"),
        ("notafactory", "neither 'package.module:factory' nor a TorchScript file"),
        ("missing/model.pt", "no such file"),
    ],
)
def test_cli_export_bad_input(tmp_path, source, needle):
    p = run_cli("export", source, "-o", str(tmp_path / "out.onnx"))
    assert_clean_error(p, 2, needle)
    assert no_leftovers(tmp_path, "out.onnx")


def test_cli_export_not_torchscript(tmp_path):
    bad = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, bad)  # a state dict, not a TorchScript program
    p = run_cli("export", str(bad), "-o", str(tmp_path / "out.onnx"), "--input-shape", "1x4")
    assert_clean_error(p, 2, "is not a TorchScript file")
    assert no_leftovers(tmp_path, "out.onnx")
