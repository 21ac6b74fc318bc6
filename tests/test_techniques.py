"""The rest of the suite: graph, fp16, weight-only, Intel Neural Compressor, sensitivity, chains, recipes.

Real onnxruntime, onnxslim and onnx-neural-compressor on models built here; no mocks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.benchmarks.evaluate import evaluate, predict
from modelpress.data import Dataset
from modelpress.errors import GoalNotMet, ModelpressError
from modelpress.onnxutil import model_size_bytes, op_counts
from modelpress.optimizers import optimize, optimize_chain
from modelpress.optimizers.sensitivity import layer_sensitivity
from modelpress.recipe import Recipe, Step, load_recipe
from tests.conftest import assert_clean_error, no_leftovers, run_cli


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    from modelpress.exporters import ExportConfig, export_onnx
    from tests.factories import tiny_block

    path = tmp_path_factory.mktemp("block") / "block.onnx"
    m, ex = tiny_block()
    export_onnx(m, ex, path, ExportConfig(exporter="torchscript"))
    data = Dataset({"input": np.random.default_rng(0).standard_normal((32, 8, 64)).astype(np.float32)})
    return path, data, predict(path, data)


def _cos(path, data, ref):
    return evaluate(path, data, reference=ref)[0].fidelity.cosine_mean


@pytest.mark.parametrize("options, fused", [({"tool": "ort", "level": "extended"}, "BiasGelu"),
                                            ({"tool": "transformers", "model_type": "bert"}, "SkipLayerNormalization"),
                                            ({"tool": "onnxslim"}, None)])
def test_graph_pass(block, tmp_path, options, fused):
    path, data, ref = block
    res = optimize(path, tmp_path / "g.onnx", "graph", options)
    if fused:
        assert fused in op_counts(tmp_path / "g.onnx")
    assert _cos(tmp_path / "g.onnx", data, ref) > 0.9999
    if options["tool"] == "transformers":
        assert res.notes[0].startswith("fused:")


def test_fusion_then_dynamic_int8_on_a_bert_export(tmp_path):
    """A BERT exported by dynamo, without value_info, defeats ORT's symbolic shape inference ('Incomplete'); after the transformers
    fusion (contrib ops such as BiasGelu) ONNX shape inference cannot type the attention's MatMul inputs either, and
    ORT's quantizer refused them ("Unable to find data type") unless told the default type is float."""
    pytest.importorskip("transformers")
    import onnx
    import torch
    from transformers import BertConfig, BertModel

    from modelpress.exporters import ExportConfig, export_onnx
    from modelpress.models.minilm import SentenceEmbedder

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)
    bert.config._attn_implementation = "eager"
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (16, 12)).astype(np.int64)
    data = Dataset({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    export_onnx(SentenceEmbedder(bert.eval()).eval(), {k: torch.from_numpy(v[:2]) for k, v in data.inputs.items()},
                tmp_path / "bert.onnx", ExportConfig(exporter="dynamo"))
    bare = onnx.load(str(tmp_path / "bert.onnx"))
    del bare.graph.value_info[:]  # as most third-party exports come: no types on intermediate tensors
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    optimize_chain(tmp_path / "bare.onnx", tmp_path / "q.onnx",
                   [("graph", {"tool": "transformers", "model_type": "bert"}),
                    ("dynamic-int8", {"weight_type": "int8", "per_channel": True})], data=data)
    assert "MatMulInteger" in op_counts(tmp_path / "q.onnx")


def test_fp16_halves_size_keeps_io_float32(block, tmp_path):
    path, data, ref = block
    res = optimize(path, tmp_path / "h.onnx", "fp16")
    assert model_size_bytes(tmp_path / "h.onnx") < 0.55 * model_size_bytes(path)
    assert _cos(tmp_path / "h.onnx", data, ref) > 0.999  # inputs stay float32: the same data feeds it
    assert "expect no speed-up" in res.notes[0]


@pytest.mark.parametrize("tech, options, min_cos", [("int4-weight", {}, 0.99), ("int8-weight", {}, 0.9999),
                                                    ("int4-weight", {"algorithm": "hqq"}, 0.99),
                                                    ("int4-weight", {"algorithm": "gptq", "max_calib_samples": 8}, 0.98)])
def test_weight_only(block, tmp_path, tech, options, min_cos):
    path, data, ref = block
    optimize(path, tmp_path / "w.onnx", tech, options, calib=data)
    assert op_counts(tmp_path / "w.onnx").get("MatMulNBits") == 2
    assert model_size_bytes(tmp_path / "w.onnx") < 0.4 * model_size_bytes(path)
    assert _cos(tmp_path / "w.onnx", data, ref) > min_cos


def test_weight_only_refuses_bad_block_and_gemm_only_models(tiny_onnx, tmp_path):
    with pytest.raises(ModelpressError, match="power of two"):
        optimize(tiny_onnx, tmp_path / "w.onnx", "int4-weight", {"block_size": 48})
    with pytest.raises(ModelpressError, match="no op this technique quantizes"):
        optimize(tiny_onnx, tmp_path / "w.onnx", "int4-weight")  # Conv + Gemm: no MatMul
    assert not (tmp_path / "w.onnx").exists()


def test_inc_static_and_smoothquant(block, tmp_path):
    path, data, ref = block
    for opts in ({}, {"smooth_quant": True, "max_calib_samples": 16}):
        res = optimize(path, tmp_path / "i.onnx", "inc-static", opts, calib=data)
        assert "QuantizeLinear" in op_counts(tmp_path / "i.onnx")
        assert _cos(tmp_path / "i.onnx", data, ref) > 0.98
        # INC writes external data beside its output: we hand back one self-contained file, nothing else
        assert [p.name for p in tmp_path.iterdir()] == ["i.onnx"]
    assert any("SmoothQuant scales not folded" in n for n in res.notes)  # INC 1.0 cannot fold into GELU's scalar Mul


def test_inc_dynamic(block, tmp_path):
    path, data, ref = block
    res = optimize(path, tmp_path / "d.onnx", "inc-dynamic")
    assert {"MatMulInteger", "DynamicQuantizeLinear"} & set(op_counts(tmp_path / "d.onnx"))
    assert "Conv left in FP32" in res.notes[0]


def test_inc_dynamic_nothing_to_quantize_is_a_clean_error(tiny_onnx, tmp_path):
    with pytest.raises(ModelpressError):
        optimize(tiny_onnx, tmp_path / "d.onnx", "inc-dynamic")  # INC exits the process here; we must not
    assert not (tmp_path / "d.onnx").exists()


def test_inc_tune_meets_an_easy_goal(tiny_onnx, tiny_data, tmp_path):
    res = optimize(tiny_onnx, tmp_path / "t.onnx", "inc-tune", {"tolerable_loss": 0.5, "max_trials": 2}, calib=tiny_data)
    assert res.goal_met is True and "goal met" in res.notes[-1]
    assert "QuantizeLinear" in op_counts(tmp_path / "t.onnx")


def test_inc_tune_saves_best_when_goal_is_impossible(tiny_onnx, tiny_data, tmp_path):
    npz = Dataset(tiny_data.inputs).save(tmp_path / "eval.npz")
    with pytest.raises(GoalNotMet, match="best model found was saved"):
        optimize(tiny_onnx, tmp_path / "t.onnx", "inc-tune",
                 {"tolerable_loss": 0.0, "loss": "absolute", "max_trials": 2, "eval_data": str(npz),
                  "evaluator": "tests.factories:strict_evaluator"}, calib=tiny_data)
    assert (tmp_path / "t.onnx").exists()  # the best trial is kept even though the goal is not met


def test_sensitivity_ranks_quantizable_layers(tiny_onnx, tiny_data):
    ranked = layer_sensitivity(tiny_onnx, tiny_data, max_samples=8)
    ops = [s.op_type for s in ranked[:3]]
    assert set(ops) <= {"Conv", "Gemm"}
    assert all(s.score < 100 for s in ranked[:3])  # real dB figures, not the folded-Relu artifact
    assert ranked == sorted(ranked, key=lambda s: s.score)


def test_static_exclude_most_sensitive(tiny_onnx, tiny_data, tmp_path):
    res = optimize(tiny_onnx, tmp_path / "s.onnx", "static-int8", {"exclude_most_sensitive": 1}, calib=tiny_data)
    worst = layer_sensitivity(tiny_onnx, tiny_data, max_samples=32)[0].node
    assert f"kept in FP32 (most sensitive): {worst}" in res.notes


def test_chain_and_recipe_round_trip(block, tmp_path):
    path, data, ref = block
    calib = data.save(tmp_path / "calib.npz")
    out = tmp_path / "out" / "q.onnx"
    p = run_cli("optimize", str(path), "-t", "graph", "-t", "static-int8", "--calib", str(calib), "-o", str(out),
                "--option", "graph.tool=transformers", "--option", "static-int8.calibration=percentile",
                "--dump-recipe", str(tmp_path / "recipes" / "run.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    assert [s["technique"] for s in json.loads(p.stdout)["steps"]] == ["graph", "static-int8"]
    rec = load_recipe(tmp_path / "recipes" / "run.yaml", allow_outside=True)  # its output is ../out
    assert rec.steps[1].options["calibration"] == "percentile" and rec.steps[1].options["per_channel"] is True
    assert rec.output == str(tmp_path / "recipes" / ".." / "out" / "q.onnx")
    first = out.read_bytes()
    out.unlink()
    p = run_cli("optimize", "--recipe", str(tmp_path / "recipes" / "run.yaml"), "--allow-outside")
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == first  # the replay gives the same artifact


def test_optimize_chain_library(block, tmp_path):
    path, data, ref = block
    results = optimize_chain(path, tmp_path / "c.onnx", [("graph", {"tool": "onnxslim"}), ("dynamic-int8", {})])
    assert [r.technique for r in results] == ["graph", "dynamic-int8"]
    assert list(tmp_path.iterdir()) == [tmp_path / "c.onnx"]  # no intermediate files left


@pytest.mark.parametrize(
    "text, needle",
    [
        ("model: m.onnx\noutput: o.onnx\nsteps:\n  - technique: static-int8\n    optoins: {}\n",
         ":5: unknown step key 'optoins'"),
        ("model: m.onnx\noutput: o.onnx\nstesp: []\n", ":3: unknown key 'stesp'"),
        ("model: m.onnx\noutput: o.onnx\nsteps:\n  - technique: int3\n", ":4: unknown technique 'int3'"),
        ("model: m.onnx\noutput: o.onnx\nsteps:\n  - technique: static-int8\n    options: {per_channel: maybe}\n",
         ":5: static-int8: option per_channel must be true or false"),
        ("model: m.onnx\noutput: o.onnx\nsteps: []\n", ":3: 'steps' must be a non-empty list"),
        ("model: [a, b]\noutput: o.onnx\nsteps:\n  - technique: fp16\n", ":1: 'model' must be a file path"),
        ("modelpress: 7\nmodel: m.onnx\noutput: o.onnx\nsteps:\n  - technique: fp16\n", ":1: recipe version 7"),
        ("model: m.onnx\n  output: : :\n", "not valid YAML"),
        ("output: o.onnx\nsteps:\n  - technique: fp16\n", "missing key 'model'"),
    ],
)
def test_bad_recipes(tmp_path, text, needle):
    (tmp_path / "r.yaml").write_text(text)
    assert_clean_error(run_cli("optimize", "--recipe", str(tmp_path / "r.yaml")), 2, needle)


def test_recipe_dump_lists_every_default(tmp_path):
    Recipe("m.onnx", "o.onnx", [Step("fp16", {"keep_io_types": True, "op_block_list": [], "node_block_list": [],
                                              "target": "ort-cpu"})]).save(tmp_path / "r.yaml")
    assert "keep_io_types: true" in (tmp_path / "r.yaml").read_text()


def test_cli_sensitivity(tiny_onnx, tiny_npz):
    p = run_cli("sensitivity", str(tiny_onnx), "--calib", str(tiny_npz), "--samples", "8", "--json")
    assert p.returncode == 0, p.stderr
    layers = json.loads(p.stdout)["layers"]
    assert layers[0]["op_type"] in ("Conv", "Gemm") and "sqnr_db" in layers[0]
    trt = run_cli("sensitivity", str(tiny_onnx), "--calib", str(tiny_npz), "--samples", "8", "--technique", "trt-int8",
                  "--json")
    assert trt.returncode == 0, trt.stderr
    got = json.loads(trt.stdout)
    assert got["technique"] == "trt-int8" and {x["op_type"] for x in got["layers"]} <= {"Conv", "Gemm"}
    assert_clean_error(run_cli("sensitivity", str(tiny_onnx), "--calib", str(tiny_npz), "--technique", "int3"), 2,
                       "unknown technique")


def test_cli_goal_not_met_exit_4(tiny_onnx, tiny_npz, tmp_path):
    p = run_cli("optimize", str(tiny_onnx), "-t", "inc-tune", "--calib", str(tiny_npz), "-o", str(tmp_path / "t.onnx"),
                "--option", "evaluator=tests.factories:strict_evaluator", "--option", "max_trials=1",
                "--option", "tolerable_loss=0")
    assert_clean_error(p, 4, "accuracy goal not met")
    assert (tmp_path / "t.onnx").exists()


def test_cli_chain_option_errors(tiny_onnx, tmp_path):
    p = run_cli("optimize", str(tiny_onnx), "-t", "graph", "-t", "fp16", "-o", str(tmp_path / "o.onnx"),
                "--option", "level=basic")
    assert_clean_error(p, 2, "with several techniques write TECHNIQUE.level")
    p = run_cli("optimize", str(tiny_onnx), "-o", str(tmp_path / "o.onnx"))
    assert_clean_error(p, 2, "at least one -t TECHNIQUE")
    assert no_leftovers(tmp_path, "o.onnx")


def test_sensitivity_ranks_a_masked_tensor_first(tmp_path):
    """An attention mask's finfo.min dominates a tensor's power, so its SQNR looks fine while per-tensor INT8 wipes
    out the scores beside it: such a tensor ranks most sensitive, and the JSON stays valid (null, sentinel)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelpress.data import Dataset

    rng = np.random.default_rng(0)
    mask = np.zeros((1, 16), np.float32)
    mask[0, 12:] = np.finfo(np.float32).min  # the last 4 positions are padding
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["s"], "/scores/MatMul"),
         helper.make_node("Add", ["s", "mask"], ["masked"], "/mask/Add"),
         helper.make_node("Softmax", ["masked"], ["p"], "/Softmax", axis=-1),
         helper.make_node("MatMul", ["p", "v"], ["y"], "/out/MatMul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(rng.normal(0, 1, (8, 16)).astype(np.float32), "w"),
                     numpy_helper.from_array(rng.normal(0, 1, (16, 8)).astype(np.float32), "v")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "m.onnx"))
    data = Dataset({"x": rng.normal(0, 1, (32, 8)).astype(np.float32), "mask": np.repeat(mask, 32, axis=0)})
    ranked = layer_sensitivity(tmp_path / "m.onnx", data, max_samples=16)
    # the mask's Add and the Softmax that reads its output through Q/DQ: the pair goes only when both are kept
    sentinel = [s.node for s in ranked if s.score == float("-inf")]
    assert sorted(sentinel) == ["/Softmax", "/mask/Add"] and ranked[0].node in sentinel
    d = json.loads(json.dumps(ranked[0].to_dict(), allow_nan=False))
    assert d["sentinel"] is True and d["sqnr_db"] is None
    assert all(not s.to_dict()["sentinel"] for s in ranked if s.score != float("-inf"))
