"""Pruning and low-rank (PyTorch side, then exported): real torch.nn.utils.prune, torch-pruning, ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from modelpress.onnxutil import graph_stats
from modelpress.optimizers.pytorch import FinetuneConfig, compress_and_export, compress_model
from modelpress.optimizers.pytorch.pruning import nm_mask
from tests.conftest import assert_clean_error, no_leftovers, run_cli
from tests.factories import modelpress_train_data, residual_net, tiny_cnn


def test_unstructured_reaches_sparsity_and_stays_dense(tmp_path):
    model, ex = tiny_cnn()
    model, res = compress_model(model, ex, [("prune-unstructured", {"sparsity": 0.6, "keep_last": False})])
    weights = [m.weight for m in (model.conv1, model.conv2, model.fc)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=0.01)
    assert not any(hasattr(m, "weight_orig") for m in model.modules())  # masks folded in
    assert {r["layer"] for r in res.steps[0].layers} == {"conv1", "conv2", "fc"}
    out = tmp_path / "u.onnx"
    res, exported = compress_and_export("tests.factories:tiny_cnn", out, [("prune-unstructured", {"sparsity": 0.5})])
    assert exported.parity.passed
    dense = graph_stats(out)
    assert dense["params"] >= res.params_after  # the ONNX graph is as big as before: zeros are stored
    assert "dense" in res.steps[0].notes[0]


def test_nm_mask_keeps_two_of_four():
    w = torch.randn(8, 16, 3, 3)
    mask = nm_mask(w, 2, 4)
    groups = mask.movedim(1, -1).reshape(-1, 4)
    assert (groups.sum(1) == 2).all()
    kept = (w.abs() * mask).movedim(1, -1).reshape(-1, 4)
    dropped = (w.abs() * (1 - mask)).movedim(1, -1).reshape(-1, 4)
    assert (kept.max(1).values >= dropped.max(1).values).all()


def test_nm_on_layer_it_cannot_fit_is_a_clean_error(tmp_path):
    proc = run_cli("prune", "tests.factories:tiny_cnn", "--method", "2:4", "-o", str(tmp_path / "x.onnx"))
    assert_clean_error(proc, 2, "does not fit layer 'conv1'")
    assert no_leftovers(tmp_path, "x.onnx")
    ok = run_cli("prune", "tests.factories:tiny_cnn", "--method", "2:4", "--exclude", "conv1", "--json",
                 "-o", str(tmp_path / "nm.onnx"))
    assert ok.returncode == 0, ok.stderr
    layers = json.loads(ok.stdout)["layers"]
    assert [r["layer"] for r in layers] == ["conv2"] and layers[0]["sparsity"] == 0.5


def test_structured_pruning_removes_channels_through_residual_concat_depthwise(tmp_path):
    out = tmp_path / "s.onnx"
    before = graph_stats(_export_plain(tmp_path))
    res, exported = compress_and_export("tests.factories:residual_net", out, [("prune-structured", {"sparsity": 0.5})])
    after = graph_stats(out)
    assert exported.parity.passed
    assert after["params"] < 0.5 * before["params"] and after["flops"] < 0.5 * before["flops"]
    shapes = {r["layer"]: (r["shape_before"], r["shape"]) for r in res.steps[0].layers}
    assert shapes["stem.0"][1][0] == shapes["block.3"][1][0] == shapes["dw"][1][0] == 8  # residual + depthwise agree
    assert shapes["head"][1][0] == 10  # the classifier keeps its classes


def _export_plain(tmp_path):
    from modelpress.exporters import export_onnx

    model, ex = residual_net()
    path = tmp_path / "plain.onnx"
    export_onnx(model, ex, path)
    return path


def test_finetune_uses_module_data_and_reports_loss(tmp_path):
    proc = run_cli("prune", "tests.factories:residual_net", "--method", "structured", "--sparsity", "0.25",
                   "--epochs", "1", "--batch-size", "16", "--json", "-o", str(tmp_path / "ft.onnx"))
    assert proc.returncode == 0, proc.stderr
    ft = json.loads(proc.stdout)["finetune"]
    assert ft["steps"] == 4 and ft["objective"] == "cross-entropy"


def test_finetune_distills_without_labels():
    from modelpress.data import Dataset

    model, ex = residual_net()
    data = Dataset({"input": modelpress_train_data().inputs["input"][:32]})
    _, res = compress_model(model, ex, [("prune-structured", {"sparsity": 0.3})],
                            finetune_cfg=FinetuneConfig(epochs=1, batch_size=16), train_data=data)
    assert res.finetune["objective"] == "distillation (MSE)" and res.finetune["steps"] == 2


@pytest.mark.parametrize("args,needle", [
    (["--method", "unstructured", "--sparsity", "1.5"], "between 0 and 1"),
    (["--method", "structured", "--sparsity", "0"], "between 0 and 1"),
    (["--method", "4:2"], "need 0 < n < m"),
    (["--method", "half"], "bad --method"),
    (["--method", "structured", "--epochs", "1"], "fine-tuning needs data"),
    (["--method", "unstructured", "--exclude", "nope"], "unknown layer"),
])
def test_prune_bad_input(tmp_path, args, needle):
    source = "tests.untrainable:residual_net" if "--epochs" in args else "tests.factories:tiny_cnn"
    proc = run_cli("prune", source, *args, "-o", str(tmp_path / "bad.onnx"))
    assert_clean_error(proc, 2, needle)
    assert no_leftovers(tmp_path, "bad.onnx")


def test_lowrank_reports_rank_and_stays_close(tmp_path):
    model, ex = tiny_cnn()
    with torch.no_grad():  # make fc exactly rank 3: SVD at 99.9% energy must find 3 and reproduce it
        model.fc.weight.copy_(torch.randn(10, 3) @ torch.randn(3, 256) / 16)
    ref = model(ex).detach()
    steps = [("lowrank", {"energy": 0.999, "keep_last": False, "min_features": 4})]
    model, res = compress_model(model, ex, steps)
    (row,) = res.steps[0].layers
    assert row["layer"] == "fc" and row["factorized"] and row["rank"] == 3 and row["full_rank"] == 10
    assert torch.allclose(model(ex), ref, atol=1e-4)
    proc = run_cli("lowrank", "tests.factories:tiny_cnn", "--rank-ratio", "0.5", "--option", "keep_last=false",
                   "--option", "min_features=4", "--json", "-o", str(tmp_path / "lr.onnx"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["layers"][0]["rank"] == 5  # 0.5 x min(10, 256)
    bad = run_cli("lowrank", "tests.factories:tiny_cnn", "--energy", "0.9", "--rank-ratio", "0.5", "-o",
                  str(tmp_path / "b.onnx"))
    assert_clean_error(bad, 2, "not both")


def test_chain_prune_then_quantize_in_a_study(tmp_path, tiny_data):
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig
    from modelpress.exporters import export_onnx
    from modelpress.study import Candidate, compare

    model, ex = tiny_cnn()
    export_onnx(model, ex, tmp_path / "fp32.onnx")
    report = compare(tmp_path / "fp32.onnx", tmp_path, [
        Candidate("s50+int8", chain=[("prune-structured", {"sparsity": 0.5}), ("static-int8", {})]),
    ], [resolve_profile("edge-1core")], eval_data=tiny_data, calib_data=tiny_data,
        profile_config=ProfileConfig(iterations=5, warmup=1), show_progress=False, source="tests.factories:tiny_cnn")
    assert not report["failed"], report["failed"]
    v = {r["name"]: r for r in report["variants"]}["s50+int8"]
    assert v["flops"] < report["variants"][0]["flops"] and v["ops"].get("QuantizeLinear")
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["fp32.onnx", "s50+int8.onnx"]  # no temp export left


def test_chain_order_is_checked():
    from modelpress.errors import ModelpressError
    from modelpress.study import check_chain

    with pytest.raises(ModelpressError, match="must come before ONNX techniques"):
        check_chain([("static-int8", {}), ("prune-structured", {})])
    with pytest.raises(ModelpressError, match="needs its source"):
        check_chain([("prune-structured", {})], has_source=False)


def test_graph_stats_counts_conv_and_gemm(tiny_onnx):
    s = graph_stats(tiny_onnx)
    # conv1 8x16x16 outputs x 9, conv2 16x8x8 x 72, fc 10 x 256
    assert s["flops"] == 2 * (8 * 16 * 16 * 9 + 16 * 8 * 8 * 72 + 10 * 256)
    assert s["params"] == int(np.sum([8 * 9 + 8, 16 * 72 + 16, 2560 + 10]))


def test_nm_can_skip_layers_it_cannot_fit():
    model, ex = residual_net()  # stem has 4 input channels (fits), dw is grouped (does not)
    model, res = compress_model(model, ex, [("prune-nm", {"skip_incompatible": True})])
    layers = {r["layer"] for r in res.steps[0].layers}
    assert "dw" not in layers and "block.0" in layers
    assert any("left dense" in n and "dw" in n for n in res.steps[0].notes)
