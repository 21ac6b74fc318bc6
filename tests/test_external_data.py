"""Models with external data (`model.onnx` + `model.onnx.data`), and one past the 2 GB protobuf limit: every
ONNX technique, chains, the atomic placement of model + data, the step cache and bundles (real onnx and
onnxruntime, no mocks)."""

from __future__ import annotations

import os
import resource

import numpy as np
import pytest

from modelpress.data import Dataset
from modelpress.errors import BelowFidelityFloor
from modelpress.io import DataCheckFailed, place_model
from modelpress.onnxutil import check_onnx_file, data_file_name, external_locations, has_external_data, model_size_bytes
from modelpress.optimizers import optimize, optimize_chain
from tests.conftest import no_leftovers, run_cli

DIM = 128


def stack(path, layers: int = 2, dim: int = DIM, *, repeat: bool = False, seed: int = 0):
    """A MatMul stack with its weights in PATH.data (modelpress.models.synthetic)."""
    from modelpress.models.synthetic import matmul_stack

    return matmul_stack(path, layers, dim, repeat=repeat, seed=seed)


def run(model, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def owned(model):
    """The model names exactly one data file, NAME.onnx.data beside it."""
    import onnx

    return external_locations(onnx.load(str(model), load_external_data=False)) == [data_file_name(model)]


@pytest.fixture
def ext_model(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return stack(src / "model.onnx", layers=3)


@pytest.fixture
def calib():
    return Dataset({"x": np.random.default_rng(1).standard_normal((24, DIM)).astype(np.float32)})


@pytest.mark.parametrize("technique,options", [
    ("graph", {}), ("graph", {"tool": "transformers"}), ("graph", {"tool": "onnxslim"}), ("fp16", {}),
    ("fp16", {"fold_first": True}), ("dynamic-int8", {}), ("static-int8", {}),
    ("static-int8", {"calibration": "percentile", "calib_batch_size": 8}), ("int8-weight", {}), ("int4-weight", {})])
def test_every_technique_keeps_external_data(ext_model, calib, tmp_path, technique, options):
    if options.get("tool") == "onnxslim":
        pytest.importorskip("onnxslim")
    out_dir = tmp_path / "out"
    out = out_dir / f"{technique}.onnx"
    res = optimize(ext_model, out, technique, options, calib if technique == "static-int8" else None, data=calib)
    assert res.validation and res.validation["passed"]
    assert not any("pre-processing skipped" in n for n in res.notes), res.notes
    # the output and its one data file, named after it, nothing else (no temps, no ORT leftovers)
    assert sorted(p.name for p in out_dir.iterdir()) == [out.name, data_file_name(out)]
    assert owned(out) and check_onnx_file(out) == out
    assert (out_dir / data_file_name(out)).stat().st_mode & 0o044  # readable like any artifact, not 0600
    x = calib.inputs["x"][:4]
    assert cosine(run(out, x), run(ext_model, x)) > 0.97
    # the pair travels: moved elsewhere, it still loads
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for f in (out, out_dir / data_file_name(out)):
        os.replace(f, moved / f.name)
    assert run(moved / out.name, x).shape == (4, DIM)


@pytest.mark.parametrize("technique", ["inc-dynamic", "inc-static"])
def test_intel_neural_compressor_keeps_external_data(ext_model, calib, tmp_path, technique):
    pytest.importorskip("onnx_neural_compressor")
    out = tmp_path / "inc" / f"{technique}.onnx"
    optimize(ext_model, out, technique, {}, calib if technique == "inc-static" else None, data=calib)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, data_file_name(out)] and owned(out)


def test_chain_writes_one_model_and_its_data(ext_model, calib, tmp_path):
    out = tmp_path / "o" / "chain.onnx"
    optimize_chain(ext_model, out, [("graph", {}), ("static-int8", {})], calib)
    assert sorted(p.name for p in out.parent.iterdir()) == ["chain.onnx", "chain.onnx.data"] and owned(out)
    optimize_chain(ext_model, out, [("fp16", {}), ("graph", {})], calib)  # over it: both files replaced
    assert sorted(p.name for p in out.parent.iterdir()) == ["chain.onnx", "chain.onnx.data"] and owned(out)
    assert check_onnx_file(out) == out


def test_below_the_floor_leaves_no_model_and_no_data(ext_model, calib, tmp_path):
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    out = out_dir / "q.onnx"
    with pytest.raises(BelowFidelityFloor):
        optimize(ext_model, out, "int4-weight", {}, data=calib, min_fidelity="cosine=0.999999", repair=False)
    assert list(out_dir.iterdir()) == []
    with pytest.raises(BelowFidelityFloor, match="kept as"):
        optimize(ext_model, out, "int4-weight", {}, data=calib, min_fidelity="cosine=0.999999", repair=False,
                 keep_best=True)
    best = out_dir / "q.below-floor.onnx"
    assert sorted(p.name for p in out_dir.iterdir()) == [best.name, data_file_name(best)] and owned(best)
    assert no_leftovers(out_dir, "q.onnx") and no_leftovers(out_dir, "q.onnx.data")


def test_output_whose_data_file_is_the_inputs_is_refused(tmp_path):
    from modelpress.errors import ModelpressError

    import onnx

    from modelpress.onnxutil import relocate_external_data

    folder = tmp_path / "m"
    folder.mkdir()
    model = stack(folder / "model.onnx")
    os.replace(folder / "model.onnx.data", folder / "out.onnx.data")  # the input's data is named like out.onnx's
    m = onnx.load(str(model), load_external_data=False)
    relocate_external_data(m, "out.onnx.data")
    onnx.save_model(m, str(model))
    before = (folder / "out.onnx.data").read_bytes()
    with pytest.raises(ModelpressError, match="holds the weights of the input"):
        optimize(model, folder / "out.onnx", "graph")
    assert (folder / "out.onnx.data").read_bytes() == before and not (folder / "out.onnx").exists()


def test_cli_optimize_external_data(ext_model, tmp_path):
    out = tmp_path / "cli" / "dyn.onnx"
    proc = run_cli("optimize", str(ext_model), "-t", "dynamic-int8", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["dyn.onnx", "dyn.onnx.data"] and owned(out)


def test_a_run_that_cannot_fit_is_refused_up_front(ext_model, tmp_path, monkeypatch):
    from modelpress.errors import ModelpressError
    from modelpress.optimizers import memory

    monkeypatch.setattr(memory, "CHECK_ABOVE_BYTES", 0)  # the rule, on a small model
    size = model_size_bytes(ext_model)
    memory.check_memory("int8-weight", ext_model, available=2 * size)  # 1.8x fits
    with pytest.raises(ModelpressError, match=r"dynamic-int8 on model.onnx .* needs about .* int8-weight or static-int8"):
        memory.check_memory("dynamic-int8", ext_model, available=2 * size)
    monkeypatch.setenv("MODELPRESS_MEMORY_CHECK", "0")
    memory.check_memory("dynamic-int8", ext_model, available=1)


# ------------------------------------------------------------------------------------------ placement


def test_place_model_merges_data_files_and_replaces_stale_data(tmp_path):
    import onnx
    from onnx import helper, numpy_helper

    src = tmp_path / "src"
    src.mkdir()
    w0 = np.arange(DIM * DIM, dtype=np.float32).reshape(DIM, DIM) / DIM**2
    w1 = np.eye(DIM, dtype=np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w0"], ["h"]), helper.make_node("MatMul", ["h", "w1"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", 1, [1, DIM])],
                          [helper.make_tensor_value_info("y", 1, [1, DIM])],
                          [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    # one file per tensor (as some exporters write): merged into one DEST.data
    onnx.save_model(m, str(src / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=False)
    assert len(external_locations(onnx.load(str(src / "m.onnx"), load_external_data=False))) == 2
    x = np.ones((1, DIM), np.float32)
    want = run(src / "m.onnx", x)
    dest = tmp_path / "d" / "out.onnx"
    place_model(src / "m.onnx", dest)
    assert owned(dest) and np.allclose(run(dest, x), want)
    assert (src / "m.onnx").is_file()  # copied, not moved
    # an inline model over it: the stale out.onnx.data goes too
    inline = tmp_path / "inline.onnx"
    onnx.save_model(onnx.load(str(src / "m.onnx")), str(inline))
    place_model(inline, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.onnx"] and not has_external_data(dest)
    # a refused copy places nothing and leaves no temp
    with pytest.raises(DataCheckFailed):
        place_model(src / "m.onnx", tmp_path / "e" / "x.onnx", check_data=lambda p: False)
    assert list((tmp_path / "e").iterdir()) == []


def test_cache_round_trip_with_external_data(ext_model, tmp_path):
    from modelpress.cache import StepCache

    cache = StepCache(tmp_path / "cache")
    cache.put_model("k1", ext_model, {"technique": "fp32"})
    files = sorted(p.name for p in (tmp_path / "cache" / "models").iterdir())
    assert files == ["k1.json", "k1.onnx", "k1.onnx.data"]
    dest = tmp_path / "restored" / "m.onnx"
    meta = cache.load_model("k1", dest)
    assert meta and meta["size_bytes"] == model_size_bytes(ext_model) - ext_model.stat().st_size + \
        (tmp_path / "cache" / "models" / "k1.onnx").stat().st_size
    assert owned(dest)
    x = np.ones((2, DIM), np.float32)
    assert np.allclose(run(dest, x), run(ext_model, x))
    # damaged data: a miss, the entry deleted, dest untouched
    data = tmp_path / "cache" / "models" / "k1.onnx.data"
    with open(data, "r+b") as f:
        f.write(b"\xff" * 16)
    dest2 = tmp_path / "restored2" / "m.onnx"
    assert cache.model("k1") is None and not data.exists()
    assert cache.load_model("k1", dest2) is None and not dest2.exists()


def test_bundle_round_trip_with_external_data(ext_model, calib, tmp_path):
    from modelpress.bundle import package, verify

    out = tmp_path / "q" / "q.onnx"
    optimize(ext_model, out, "dynamic-int8", data=calib)
    manifest = package(out, tmp_path / "q.mpk")
    where = tmp_path / "v"
    verify(tmp_path / "q.mpk", into=where)
    members = {p.name for p in where.rglob("*") if p.is_file()}
    assert "q.onnx.data" in members, (members, manifest)
    model = next(where.rglob("model.onnx"))  # the bundle names its model model.onnx; the data keeps its name
    x = calib.inputs["x"][:2]
    assert np.allclose(run(model, x), run(out, x))


# ------------------------------------------------------------------------------------------ past 2 GB


@pytest.mark.slow
def test_past_the_2gb_protobuf_limit(tmp_path):
    """33 MatMul layers of 4096 x 4096 float32 (67 MB each), 2.21 GB in all: one protobuf cannot hold it.
    Repeated layer bytes keep building it cheap, and 67 MB tensors keep each quantizer's per-tensor
    temporaries small; dynamic INT8 (the issue's case) and the graph pass (ONNX Runtime writing the data file)
    both run, are checked (onnx.checker from the path), validated and placed with their data."""
    src = tmp_path / "big"
    src.mkdir()
    dim, layers = 4096, 33  # 33 x 67.1 MB = 2.21 GB > 2 GiB
    model = stack(src / "big.onnx", layers=layers, dim=dim, repeat=True)
    assert model_size_bytes(model) > 2**31
    x = Dataset({"x": np.random.default_rng(2).standard_normal((8, dim)).astype(np.float32)})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = tmp_path / "o" / "dyn.onnx"
    res = optimize(model, out, "dynamic-int8", data=x)
    assert res.validation["passed"] and not any("skipped" in n for n in res.notes), res.notes
    assert sorted(p.name for p in out.parent.iterdir()) == ["dyn.onnx", "dyn.onnx.data"] and owned(out)
    assert model_size_bytes(out) < model_size_bytes(model) / 3
    g = tmp_path / "o" / "graph.onnx"
    optimize(model, g, "graph", {"level": "basic"}, data=x)
    assert owned(g) and model_size_bytes(g) > 2**31
    peak_gb = max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 2**20
    assert peak_gb < 3.5 * 2.21, f"peak RSS {peak_gb:.1f} GB"
