"""Contract tests over every registered runner and every registered pass: a new runtime or technique is one
module and one registry line, and these tests prove it keeps the contract (real runtimes, real passes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from modelpress.errors import ModelpressError
from modelpress.runtimes import RUNNERS, create_runner

AVAILABLE = [n for n, cls in sorted(RUNNERS.items()) if cls.availability()[0]]


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_every_runner_says_whether_it_is_usable(name):
    ok, why = RUNNERS[name].availability()
    assert ok or why, name  # an unusable runtime says why
    assert RUNNERS[name].name == name and RUNNERS[name].description


@pytest.mark.parametrize("name", AVAILABLE)
def test_runner_contract(name, tiny_onnx, tiny_data):
    feeds = {"input": tiny_data.inputs["input"][:4]}
    with create_runner("ort-cpu", tiny_onnx) as ref_runner:
        ref = ref_runner.infer(feeds)["output"]
    r = create_runner(name, tiny_onnx)
    with pytest.raises(RuntimeError, match="not loaded"):
        r.infer(feeds)
    with r:
        assert [s.name for s in r.inputs] == ["input"] and [s.name for s in r.outputs] == ["output"]
        assert r.inputs[0].dtype == "float32" and r.inputs[0].shape[1:] == (1, 16, 16)
        out = r.infer(feeds)["output"]
        assert out.shape == ref.shape and np.allclose(out, ref, atol=1e-4)
        with pytest.raises(ModelpressError, match="lack"):
            r.infer({"x": feeds["input"]})
        with pytest.raises(ModelpressError, match="shape"):
            r.infer({"input": np.zeros((1, 1, 8, 8), np.float32)})


@pytest.mark.parametrize("name", AVAILABLE)
def test_every_runner_profiles_and_evaluates(name, tiny_onnx, tiny_data):
    from modelpress.benchmarks.evaluate import evaluate
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model

    res = profile_model(tiny_onnx, resolve_profile("edge-1core"),
                        ProfileConfig(iterations=5, warmup=1, runner=name, op_breakdown=True), data=tiny_data.take(8))
    assert res.stats.n == 5 and res.stats.p50_ms > 0
    assert (res.op_breakdown is not None) == RUNNERS[name].supports_op_profile  # declared, not assumed
    metrics, _ = evaluate(tiny_onnx, tiny_data, runtime=name)
    assert metrics.top1 is not None


def _pass_cases():
    from modelpress.optimizers import PASSES

    return sorted(PASSES)


@pytest.mark.parametrize("technique", _pass_cases())
def test_every_pass_keeps_the_contract(technique, tmp_path, tiny_onnx, tiny_data):
    """Typed config that round-trips through make_config; a run writes a validated model or refuses in one line;
    never an unvalidated file at the output path."""
    import dataclasses

    from modelpress.optimizers import PASSES, build_pass, optimize
    from modelpress.config import make_config

    from modelpress.optimizers.base import Pass, PassResult

    cls = PASSES[technique]
    p = build_pass(technique, {})
    assert dataclasses.is_dataclass(p.config) and cls.summary and cls.name == technique
    assert make_config(cls.config_cls, p.config.to_dict(), technique) == p.config  # the recipe form round-trips
    # one hierarchy: the method of its input kind is its own
    assert getattr(cls, {"onnx": "run", "torch": "apply"}[cls.input_kind]) is not getattr(
        Pass, {"onnx": "run", "torch": "apply"}[cls.input_kind])
    if cls.primary_option is not None:
        assert cls.primary_option in p.config.to_dict()
    out = tmp_path / "out.onnx"
    if cls.input_kind == "torch":  # a PyTorch pass: refused by the ONNX executor, applied before export
        from modelpress.optimizers.pytorch import compress_and_export

        with pytest.raises(ModelpressError, match="PyTorch model") as e:
            optimize(tiny_onnx, out, technique, {})
        assert "\n" not in str(e.value) and not out.exists()
        try:
            res, _ = compress_and_export("tests.factories:tiny_cnn", out, [(technique, {})])
        except ModelpressError as e:  # e.g. a pattern that fits no layer of the tiny net: one line, no file
            assert "\n" not in str(e) and not out.exists(), technique
            return
        assert out.is_file() and isinstance(res.steps[0], PassResult) and res.steps[0].technique == technique
        assert (res.steps[0].layers or res.steps[0].notes) and json.dumps(res.to_dict())  # says what changed
        return
    opts = {"tolerable_loss": 0.5, "max_trials": 1} if technique == "inc-tune" else {}
    try:
        res = optimize(tiny_onnx, out, technique, opts, calib=tiny_data)
    except ModelpressError as e:
        assert "\n" not in str(e) and not out.exists(), technique
        return
    assert res.validation is not None and res.validation["checker"] and res.repairs
    assert out.is_file()
    json.dumps(res.config)  # what a recipe records is plain data


@pytest.mark.skipif("openvino" not in AVAILABLE, reason="openvino is not installed (the dev extra installs it)")
def test_study_on_openvino_measures_accuracy_and_latency_there(tmp_path, tiny_onnx, tiny_npz):
    from tests.conftest import run_cli

    (tmp_path / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp_path / "r.yaml").write_text(
        "modelpress: 1\nkind: study\nmodel: fp32.onnx\ndata: {eval: data.npz, calib: data.npz}\n"
        "candidates:\n  - [static-int8]\nprofiles: [edge-1core]\n"
        "profile: {iterations: 5, warmup: 1, op_breakdown: true, runner: openvino}\noutput: out\n")
    p = run_cli("run", str(tmp_path / "r.yaml"), "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["task"]["runtime"] == "openvino"
    assert [v["name"] for v in rep["variants"]] == ["fp32", "static-int8"]
    assert rep["variants"][1]["validation"]["runtime"] == "openvino"
    ops = rep["variants"][1]["latency"]["edge-1core"]["op_breakdown"]  # the plugin's own counters, by layer type
    assert ops and abs(sum(ops.values()) - 1) < 0.01


def test_a_new_runtime_is_one_class_and_one_registration(tmp_path, tiny_onnx, tiny_data, tiny_npz):
    """A runtime registered from outside modelpress (tests/plugin_runtime.py: one class, one register call) is
    usable at once by every path that takes a runtime: evaluate, profile (in its child process), the validator,
    bundle verify and gate."""
    import tests.plugin_runtime  # noqa: F401 - registers "test-plain-ort"
    from modelpress.benchmarks.evaluate import evaluate
    from modelpress.benchmarks.presets import resolve_profile
    from modelpress.benchmarks.profiler import ProfileConfig, profile_model
    from modelpress.bundle import package, verify
    from modelpress.gate import gate
    from modelpress.optimizers import optimize

    name = "test-plain-ort"
    assert name in RUNNERS
    metrics, _ = evaluate(tiny_onnx, tiny_data, runtime=name)
    assert metrics.top1 is not None
    res = profile_model(tiny_onnx, resolve_profile("edge-1core"),
                        ProfileConfig(iterations=3, warmup=1, runner=name, op_breakdown=True), data=tiny_data.take(4))
    assert res.runner == name and res.op_breakdown  # ORT's profiler, inherited and declared
    out = tmp_path / "q.onnx"
    r = optimize(tiny_onnx, out, "dynamic-int8", runtime=name, data=tiny_data.take(16))
    assert r.validation["runtime"] == name
    bundle = tmp_path / "q.mpk"
    package(out, bundle)
    assert verify(bundle, runtime=name)["runtime"] == name
    verdict = gate(bundle, tiny_onnx, rounds=1, iterations=3, runtime=name, max_latency_regression="1000%")
    assert verdict.runtime == name
