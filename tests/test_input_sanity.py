"""Hostile and broken inputs (issue 16): bounded recipes, outputs kept inside the recipe's folder, NaN/Inf and
bad labels in data, bad sizes, broken .npz files and ONNX models with missing or escaping external data.

Every case must end in one ModelpressError line (exit 2 through the CLI), fast, with nothing written.
The property-based tests throw generated bad .npz files and recipes at the loaders: only ModelpressError may
come out.
"""

from __future__ import annotations

import os
import string
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelpress.data import Dataset, load_npz, positive_int
from modelpress.errors import ModelpressError
from modelpress.recipe import load_recipe
from modelpress.runtimes.base import TensorSpec
from modelpress.yamlsafe import MAX_ALIASES, MAX_BYTES, MAX_NODES, load_yaml, short
from tests.conftest import TINY_STUDY, assert_clean_error, run_cli

STUDY = TINY_STUDY  # one recipe for every bad-input test (tests/conftest.py)

OPTIMIZE = """\
modelpress: 1
model: fp32.onnx
output: q.onnx
steps:
  - technique: dynamic-int8
"""

HYPO = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                database=None)


def _laughs(levels: int = 9, fanout: int = 9) -> str:
    """The classic: each level holds `fanout` aliases of the one before; ~fanout**levels values, ~600 bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]")
    return "\n".join(lines) + "\n"


@pytest.fixture()
def folder(tmp_path, tiny_onnx, tiny_npz) -> Path:
    (tmp_path / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    return tmp_path


def _write(folder: Path, text: str, name: str = "r.yaml") -> Path:
    (folder / name).write_text(text)
    return folder / name


def _stray(folder: Path, before: set[str]) -> set[str]:
    return {p.name for p in folder.rglob("*")} - before


# --------------------------------------------------------------------------- bounded recipes


def test_billion_laughs_is_refused_fast(folder):
    path = _write(folder, _laughs() + STUDY)  # nine levels of nine aliases: 9**9 values once expanded
    assert path.stat().st_size < 1000
    t0 = time.perf_counter()
    proc = run_cli("run", str(path), timeout=120)
    assert time.perf_counter() - t0 < 60
    assert_clean_error(proc, 2, f"expands to more than {MAX_NODES:,} values")
    assert len(proc.stderr) < 400
    proc = run_cli("optimize", "--recipe", str(_write(folder, _laughs() + OPTIMIZE, "o.yaml")), timeout=120)
    assert_clean_error(proc, 2, "expands to more than")


@pytest.mark.parametrize("loader", ["study", "optimize"])
def test_bombs_refused_by_the_library(folder, loader):
    from modelpress.study import load_study_recipe

    load = load_study_recipe if loader == "study" else load_recipe
    base = STUDY if loader == "study" else OPTIMIZE
    cases = {
        "expands to more than": _laughs() + base,
        f"more than {MAX_ALIASES} YAML aliases": "a: &a x\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n" + base,
        "refers to a value that contains it": "a: &a [1, *a]\n" + base,
        "nested more than": "a: " + "[" * 500 + "]" * 500 + "\n" + base,
        "character limit": "a: '" + "x" * 10_000 + "'\n" + base,
        f"{MAX_BYTES:,}-byte limit": base + ("# padding\n" * (MAX_BYTES // 10 + 1)),
    }
    for needle, text in cases.items():
        path = _write(folder, text)
        t0 = time.perf_counter()
        with pytest.raises(ModelpressError, match=needle) as e:
            load(path)
        assert time.perf_counter() - t0 < 10
        msg = str(e.value)
        assert "\n" not in msg and len(msg) < 300 and str(path) in msg, msg


def test_load_yaml_recursion_and_merge_keys_stay_bounded():
    with pytest.raises(ModelpressError, match="expands to more than"):
        load_yaml("b0: &b0 {x: 1}\n" + "".join(f"b{i}: &b{i} {{<<: *b{i - 1}, k{i}: *b{i - 1}}}\n"  # merge keys double
                                               for i in range(1, 21)), "m.yaml")
    root, doc = load_yaml("a: &a [1, 2]\nb: *a\n", "ok.yaml")
    assert doc == {"a": [1, 2], "b": [1, 2]} and root is not None
    assert load_yaml("", "empty.yaml") == (None, None)


def test_huge_value_error_message_is_short(folder):
    big = "'" + "A" * 4000 + "'"
    many = "[" + ", ".join(["*big"] * 90) + "]"  # ~360 KB once expanded
    text = f"calib: &big {big}\n" + OPTIMIZE.replace(
        "  - technique: dynamic-int8\n", f"  - technique: static-int8\n    options: {{calibration: {many}}}\n")
    proc = run_cli("optimize", "--recipe", str(_write(folder, text)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[:500]
    assert len(proc.stderr) < 600, len(proc.stderr)
    # a step whose technique is a huge value
    text = OPTIMIZE.replace("technique: dynamic-int8", "technique: " + "[" + ", ".join([big] * 30) + "]")
    proc = run_cli("optimize", "--recipe", str(_write(folder, text)))
    assert_clean_error(proc, 2, "'technique' must be a technique name")
    assert len(proc.stderr) < 300


def test_technique_value_form_is_bounded_too(tmp_path, tiny_npz):
    inner = "{a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"
    for prev, c in zip("abcd", "bcde"):  # 9**5 values once expanded: small enough to stay harmless if it is not
        inner += f", {c}: &{c} [" + ", ".join([f"*{prev}"] * 9) + "]"
    (tmp_path / "data.npz").write_bytes(tiny_npz.read_bytes())
    text = STUDY.replace("model: fp32.onnx", "source: tests.factories:tiny_cnn").replace(
        "[dynamic-int8]", '["prune-structured:' + inner + '}"]')
    from modelpress.study import load_study_recipe

    with pytest.raises(ModelpressError) as e:
        load_study_recipe(_write(tmp_path, text))
    assert len(str(e.value)) < 1000


def test_short():
    assert short("abc") == "'abc'"
    s = short("x" * 10_000)
    assert len(s) == 80 and s.endswith("…") and s.startswith("'xxx")
    assert len(short(list(range(10**5)), 40)) <= 40
    assert short({"a": 1}) == "{'a': 1}" and short(None) == "None"
    assert len(short(10**10000)) <= 80  # no ValueError for an int too long to print


# --------------------------------------------------------------------------- outputs stay in the recipe's folder


@pytest.mark.parametrize("output", ["../escaped", "../../somewhere/else", "sub/../../escaped", "ABS"])
def test_study_output_outside_the_folder_is_refused(folder, output):
    from modelpress.study import load_study_recipe

    sub = folder / "recipes"
    sub.mkdir()
    for name in ("fp32.onnx", "data.npz"):
        (sub / name).write_bytes((folder / name).read_bytes())
    out = str(folder / "escaped") if output == "ABS" else output
    path = _write(sub, STUDY.replace("output: out", f"output: {out}"))
    before = {p.name for p in folder.rglob("*")}
    proc = run_cli("run", str(path))
    assert_clean_error(proc, 2, "is outside the recipe's folder")
    assert "--allow-outside" in proc.stderr and "r.yaml:8" in proc.stderr
    assert not _stray(folder, before)
    rec = load_study_recipe(path, allow_outside=True)
    assert Path(rec.output) == Path(os.path.normpath(sub / out))


def test_study_output_inside_the_folder_is_fine(folder):
    from modelpress.study import load_study_recipe

    for out, want in [("out", folder / "out"), ("a/../out", folder / "out"), (".", folder)]:
        rec = load_study_recipe(_write(folder, STUDY.replace("output: out", f"output: {out}")))
        assert Path(rec.output) == Path(os.path.normpath(want))
    with pytest.raises(ModelpressError, match="'output' must be a non-empty file path"):
        load_study_recipe(_write(folder, STUDY.replace("output: out", "output:")))


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_output_through_a_link_out_of_the_folder_is_refused(folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    try:
        (folder / "link").symlink_to(elsewhere, target_is_directory=True)
    except OSError:
        pytest.skip("cannot make symlinks here")
    with pytest.raises(ModelpressError, match="outside the recipe's folder"):
        load_recipe(_write(folder, OPTIMIZE.replace("output: q.onnx", "output: link/q.onnx")))


@pytest.mark.parametrize("output", ["../q.onnx", "/tmp/q.onnx"])
def test_optimize_recipe_output_outside_is_refused(folder, output):
    path = _write(folder, OPTIMIZE.replace("output: q.onnx", f"output: {output}"))
    proc = run_cli("optimize", "--recipe", str(path))
    assert_clean_error(proc, 2, "is outside the recipe's folder")
    with pytest.raises(ModelpressError, match=r"r.yaml:3: output .* is outside the recipe's folder"):
        load_recipe(path)
    rec = load_recipe(path, allow_outside=True)
    assert Path(rec.output) == (Path(output) if output.startswith("/") else folder / output)
    assert Path(load_recipe(_write(folder, OPTIMIZE)).output) == folder / "q.onnx"


# --------------------------------------------------------------------------- data sanity


def _nan_data(folder: Path, tiny_data: Dataset, bad: int = 48) -> Path:
    x = np.random.default_rng(2).random((64, 1, 16, 16), dtype=np.float32)
    x[: bad - 1, 0, 3, 3] = np.nan
    x[bad - 1, 0, 0, 0] = np.inf
    return Dataset({"input": x}, np.random.default_rng(3).integers(0, 10, 64)).save(folder / "nan.npz")


def test_nan_calibration_data_for_static_int8(folder, tiny_data):
    nan = _nan_data(folder, tiny_data)
    before = {p.name for p in folder.rglob("*")}
    proc = run_cli("optimize", str(folder / "fp32.onnx"), "-t", "static-int8", "--calib", str(nan),
                   "-o", str(folder / "q.onnx"))
    assert_clean_error(proc, 2, "calibration data: input 'input' has NaN or Inf values in 48 of 64 samples")
    assert not _stray(folder, before)


def test_nan_evaluation_data(folder, tiny_data):
    nan = _nan_data(folder, tiny_data)
    proc = run_cli("evaluate", str(folder / "fp32.onnx"), "--data", str(nan))
    assert_clean_error(proc, 2, "evaluation data: input 'input' has NaN or Inf values in 48 of 64 samples")
    one = load_npz(_nan_data(folder, tiny_data, bad=1))
    with pytest.raises(ModelpressError, match=r"x: input 'input' has NaN or Inf values in 1 of 64 samples \(first: "):
        one.check_finite("x")


def test_labels_out_of_range_and_not_integers(folder, tiny_data):
    x = tiny_data.inputs["input"]
    high = Dataset({"input": x}, np.arange(len(x)) % 12).save(folder / "high.npz")
    proc = run_cli("evaluate", str(folder / "fp32.onnx"), "--data", str(high))
    assert_clean_error(proc, 2, "labels must be class indices 0..9 (the model has 10 output classes)")
    neg = Dataset({"input": x}, -np.ones(len(x), np.int64)).save(folder / "neg.npz")
    proc = run_cli("evaluate", str(folder / "fp32.onnx"), "--data", str(neg))
    assert_clean_error(proc, 2, f"{len(x)} of {len(x)} are outside (e.g. -1 at sample 0)")
    np.savez(folder / "float.npz", input=x, labels=np.full(len(x), 0.5))
    proc = run_cli("evaluate", str(folder / "fp32.onnx"), "--data", str(folder / "float.npz"))
    assert_clean_error(proc, 2, "labels must be integer class indices")
    np.savez(folder / "whole.npz", input=x, labels=np.ones(len(x)))  # 1.0, 1.0, ... are integers
    assert load_npz(folder / "whole.npz").labels.dtype == np.int64
    for labels, needle in [(np.array(["a"] * len(x)), "labels must be integer"), (np.ones((len(x), 3), int), "one "
                           "class index per sample"), (np.ones(len(x), bool), "labels must be integer")]:
        with pytest.raises(ModelpressError, match=needle):
            Dataset({"input": x}, labels)


@pytest.mark.parametrize("size", ["0", "-3"])
def test_batch_size_zero_or_negative(folder, size):
    proc = run_cli("evaluate", str(folder / "fp32.onnx"), "--data", str(folder / "data.npz"), "-b", size)
    assert_clean_error(proc, 2, f"batch size must be a whole number >= 1, got {size}")


def test_bad_sizes_in_the_library(tiny_onnx, tiny_data):
    from modelpress.benchmarks.evaluate import evaluate, predict
    from modelpress.data import synthetic

    for call in (lambda: predict(tiny_onnx, tiny_data, 0), lambda: evaluate(tiny_onnx, tiny_data, batch_size=-1),
                 lambda: list(tiny_data.batches(0)), lambda: tiny_data.take(0), lambda: positive_int(True, "n"),
                 lambda: synthetic([TensorSpec("x", "float32", ("b", 2))], batch_size=0),
                 lambda: synthetic([TensorSpec("x", "float32", ("b", 2))], samples=-1)):
        with pytest.raises(ModelpressError, match=">= 1"):
            call()
    with pytest.raises(ModelpressError, match="cannot be compared"):
        evaluate(tiny_onnx, tiny_data, reference=np.zeros((len(tiny_data), 3), np.float32))


def test_broken_npz_files(tmp_path):
    cases = {
        "empty.npz": ({"input": np.zeros((0, 3), np.float32)}, "zero samples"),
        "hollow.npz": ({"input": np.zeros((4, 0), np.float32)}, "is empty"),
        "scalar.npz": ({"input": np.array(3.0, np.float32)}, "0-d"),
        "objects.npz": ({"input": np.array([{"a": 1}, None], dtype=object)}, "Python objects"),
        "dates.npz": ({"input": np.array(["2020-01-01"] * 2, "datetime64[D]")}, "dates"),
        "records.npz": ({"input": np.zeros(2, [("a", "f4"), ("b", "i4")])}, "records"),
        "labels-only.npz": ({"labels": np.arange(3)}, "no input arrays"),
        "nothing.npz": ({}, "no input arrays"),
        "scalar-labels.npz": ({"input": np.zeros((3, 2), np.float32), "labels": np.array(1)}, "0-d"),
    }
    for name, (arrays, needle) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(ModelpressError, match=needle) as e:
            load_npz(tmp_path / name)
        assert name in str(e.value) and "\n" not in str(e.value)
    np.save(tmp_path / "single.npy", np.zeros((2, 2)))
    with pytest.raises(ModelpressError, match="single .npy array"):
        load_npz(tmp_path / "single.npy")
    good = Dataset({"input": np.zeros((4, 2), np.float32)}).save(tmp_path / "good.npz")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelpressError):
        load_npz(tmp_path / "cut.npz")


def test_broken_npz_through_the_cli(folder):
    np.savez(folder / "objects.npz", input=np.array([None, 1], dtype=object))
    proc = run_cli("evaluate", str(folder / "fp32.onnx"), "--data", str(folder / "objects.npz"))
    assert_clean_error(proc, 2, "holds Python objects")
    np.savez(folder / "scalar.npz", input=np.array(1.0))
    proc = run_cli("optimize", str(folder / "fp32.onnx"), "-t", "static-int8", "--calib", str(folder / "scalar.npz"),
                   "-o", str(folder / "q.onnx"))
    assert_clean_error(proc, 2, "0-d")


# --------------------------------------------------------------------------- ONNX files


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, tiny_onnx) -> Path:
    """Models that parse but cannot run: old IR, no opset import, external data missing / escaping / short."""
    import onnx

    root = tmp_path_factory.mktemp("broken")
    m = onnx.load(str(tiny_onnx))
    m.ir_version = 2
    onnx.save(m, str(root / "old-ir.onnx"))
    m = onnx.load(str(tiny_onnx))
    del m.opset_import[:]
    onnx.save(m, str(root / "no-opset.onnx"))
    for name in ("ext", "missing", "escape", "absolute", "short"):
        (root / name).mkdir()
        onnx.save(onnx.load(str(tiny_onnx)), str(root / name / "model.onnx"), save_as_external_data=True,
                  all_tensors_to_one_file=True, location="model.data", size_threshold=0)
    (root / "missing" / "model.data").unlink()
    (root / "short" / "model.data").write_bytes(b"\0" * 16)
    for name, loc in (("escape", "../ext/model.data"), ("absolute", str(root / "ext" / "model.data"))):
        m = onnx.load(str(root / name / "model.onnx"), load_external_data=False)
        for t in m.graph.initializer:
            for kv in t.external_data:
                if kv.key == "location":
                    kv.value = loc
        onnx.save(m, str(root / name / "model.onnx"))
    return root


@pytest.mark.parametrize("model,needle", [
    ("old-ir.onnx", "ONNX IR version 2 is too old"),
    ("no-opset.onnx", "no opset import"),
    ("missing/model.onnx", "external data file 'model.data' of tensor 'conv1.weight' is missing"),
    ("escape/model.onnx", "is outside the model's folder"),
    ("absolute/model.onnx", "is outside the model's folder"),
    ("short/model.onnx", "too short for tensor"),
])
def test_broken_onnx_models(broken_models, tmp_path, tiny_npz, model, needle):
    from modelpress.onnxutil import check_onnx_file

    with pytest.raises(ModelpressError, match=needle):
        check_onnx_file(broken_models / model)
    folder = (broken_models / model).parent
    before = {p.name for p in folder.iterdir()}
    for argv in (["optimize", str(broken_models / model), "-t", "static-int8", "--calib", str(tiny_npz), "-o",
                  str(tmp_path / "q.onnx")],
                 ["evaluate", str(broken_models / model), "--data", str(tiny_npz)]):
        proc = run_cli(*argv)
        assert_clean_error(proc, 2, needle)
    assert {p.name for p in folder.iterdir()} == before  # no stray model-inferred.onnx
    assert not list(tmp_path.iterdir())


def test_external_data_inside_the_folder_is_fine(broken_models):
    from modelpress.onnxutil import check_onnx_file

    assert check_onnx_file(broken_models / "ext" / "model.onnx") == broken_models / "ext" / "model.onnx"


# --------------------------------------------------------------------------- property-based: only ModelpressError

_SPECS = [TensorSpec("input", "float32", ("batch", 1, 16, 16))]
_names = st.sampled_from(["input", "labels", "x", "input_ids", "lábel", "a" * 300])
_dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, np.bool_, np.complex64,
                           "U3", "S2", "datetime64[s]", "timedelta64[ms]", [("a", "f4")]])
_arrays = st.one_of(
    hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),
    hnp.arrays(np.float32, st.sampled_from([(2, 1, 16, 16), (3, 1, 16, 16), (0, 1, 16, 16), (2, 16, 16)]),
               elements=st.sampled_from([0.0, 1.0, np.nan, np.inf, -np.inf])),
    hnp.arrays(st.sampled_from([np.int64, np.float32, np.int32]), st.sampled_from([(2,), (3,), (2, 1), (2, 2), ()]),
               elements=st.integers(-3, 20)),
    st.builds(lambda n: np.array([None] * n, dtype=object), st.integers(0, 3)),
)


@HYPO
@given(st.dictionaries(_names, _arrays, max_size=3), st.sampled_from(["npz", "cut", "garbage"]), st.binary(max_size=64))
def test_generated_npz_raise_only_modelpress_errors(arrays, how, junk):
    from modelpress.benchmarks.evaluate import top1

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "d.npz"
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        if how == "cut":
            path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size * 2 // 3)] + junk)
        elif how == "garbage":
            path.write_bytes(junk or b"x")
        try:
            ds = load_npz(path)
            ds.check_against(_SPECS, "data")
            ds.check_finite()
            list(ds.batches(2))
            if ds.labels is not None:
                top1(np.zeros((len(ds), 10), np.float32), ds.labels)
        except ModelpressError as e:
            assert "\n" not in str(e) and len(str(e)) < 1000, str(e)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                     st.text(string.printable, max_size=20), st.sampled_from(
                         ["static-int8", "dynamic-int8", "fp16", "prune-structured:0.5", "../x", "/abs", "edge-1core",
                          "top1", "1%", "fp32.onnx", "data.npz", "out", "q.onnx", ""]))
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(st.text(string.ascii_letters, max_size=8) |
                                                                         st.sampled_from(["technique", "options",
                                                                                          "name", "chain", "eval"]),
                                                                         inner, max_size=4)), max_leaves=12)
_study_keys = st.sampled_from(["modelpress", "kind", "title", "source", "model", "export", "data", "finetune",
                               "candidates", "profiles", "profile", "metric", "selection", "output"])
_opt_keys = st.sampled_from(["modelpress", "model", "output", "calib", "steps"])
_snippets = st.sampled_from(["&a ", "*a", "[", "]", "{", "}", ": ", ", ", "- ", "\n", "  ", "!!binary ", "!!set ",
                             "? ", "<<: ", "'", '"', "#", "|\n", "2020-13-45", "!!python/object:os.system ",
                             "%YAML 1.1",
                             "---\n", "\t", "\\u0000", "~", ".nan", "0x1F", "1e999"])


def _mutated(base: str) -> st.SearchStrategy[str]:
    doc = yaml.safe_load(base)
    edit = st.tuples(st.sampled_from(sorted(doc)), _values)
    return st.one_of(
        st.lists(edit, max_size=4).map(lambda edits: yaml.safe_dump({**doc, **dict(edits)}, sort_keys=False)),
        st.tuples(st.lists(_snippets, max_size=12), st.integers(0, len(base))).map(
            lambda t: base[: t[1]] + "".join(t[0]) + base[t[1]:]),
        st.lists(st.one_of(_snippets, st.text(max_size=5)), max_size=30).map("".join),
    )


@HYPO
@given(st.one_of(_mutated(STUDY), st.dictionaries(_study_keys, _values, max_size=8).map(yaml.safe_dump)))
def test_generated_study_recipes_raise_only_modelpress_errors(study_folder, text):
    from modelpress.study import load_study_recipe

    path = study_folder / "r.yaml"
    path.write_text(text)
    try:
        load_study_recipe(path)
    except ModelpressError as e:
        assert "\n" not in str(e), str(e)


@HYPO
@given(st.one_of(_mutated(OPTIMIZE), st.dictionaries(_opt_keys, _values, max_size=6).map(yaml.safe_dump)))
def test_generated_optimize_recipes_raise_only_modelpress_errors(study_folder, text):
    path = study_folder / "o.yaml"
    path.write_text(text)
    try:
        load_recipe(path)
    except ModelpressError as e:
        assert "\n" not in str(e), str(e)


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory, tiny_onnx, tiny_npz) -> Path:
    d = tmp_path_factory.mktemp("gen")
    (d / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (d / "data.npz").write_bytes(tiny_npz.read_bytes())
    return d


@pytest.mark.parametrize("labels, needle", [
    (lambda n: np.full(n, 13), "labels must lie in 0..9"),
    (lambda n: None, "NaN or Inf"),
])
def test_bad_finetune_data_is_refused_before_training(tmp_path, labels, needle):
    x = np.random.default_rng(0).random((16, 1, 16, 16), dtype=np.float32)
    y = labels(16)
    if y is None:
        x[3, 0, 0, 0] = np.nan
    Dataset({"input": x}, y).save(tmp_path / "ft.npz")
    before = (tmp_path / "ft.npz").read_bytes()
    p = run_cli("prune", "tests.factories:tiny_cnn", "--method", "unstructured", "--sparsity", "0.5", "--epochs", "1",
                "--finetune-data", str(tmp_path / "ft.npz"), "-o", str(tmp_path / "p.onnx"))
    assert_clean_error(p, 2, needle)
    assert not (tmp_path / "p.onnx").exists() and (tmp_path / "ft.npz").read_bytes() == before


@pytest.mark.parametrize("profile, needle", [
    ("{runner: ort-cpu, runtime_options: {performance_hint: LATENCY}}", "runtime ort-cpu: unknown option"),
    ("{runner: ort-cpu, runtime_options: {graph_optimization: max}}", "graph_optimization must be one of"),
    ("{runner: ort-cpu, runtime_options: [1, 2]}", "runtime_options must be a mapping"),
    ("{runner: tflite}", "unknown runtime 'tflite'"),
])
def test_study_runtime_options_are_checked_where_written(study_folder, profile, needle):
    """A runtime's own options in a study recipe are checked like a technique's: one line with file and line."""
    from modelpress.study import load_study_recipe

    with pytest.raises(ModelpressError, match=needle) as e:
        load_study_recipe(_write(study_folder, STUDY + f"profile: {profile}\n", "ro.yaml"))
    assert str(e.value).startswith(str(study_folder / "ro.yaml")) and "\n" not in str(e.value)


def test_study_recipe_sections_are_typed_and_the_recipe_as_run_spells_them_out(study_folder):
    from modelpress.benchmarks.profiler import ProfileConfig
    from modelpress.study import SelectionConfig, load_study_recipe

    rec = load_study_recipe(_write(study_folder, STUDY + "profile: {iterations: 7}\n"
                                   "selection: {max_accuracy_drop: 1pt, max_task_drop: '2%'}\n", "typed.yaml"))
    assert rec.selection.max_task_drop == 0.02
    assert isinstance(rec.profile, ProfileConfig) and rec.profile.iterations == 7 and rec.profile.warmup == 20
    assert isinstance(rec.selection, SelectionConfig) and rec.selection.max_accuracy_drop == 0.01
    ran = yaml.safe_load(rec.to_yaml())
    assert ran["profile"]["runtime_options"] == {} and ran["selection"]["max_accuracy_drop"] == "1pt"
    assert ran["export"]["opset"] and "epochs" in ran["finetune"]
