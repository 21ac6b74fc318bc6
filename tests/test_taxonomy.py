"""The error taxonomy (issue 16, item 5): a failure caused by input is a ModelpressError (exit 2, or the documented
3/4/5/6 of its subclasses) with a one-line message; anything else is an internal error (exit 1), which must mean
a bug in modelpress.

Property-based: generated bad models (random bytes, truncated and bit-flipped real ONNX, protobuf-valid models
broken on purpose: missing inputs, wrong dtypes, dangling edges, IR 0, unknown ops, ...), bad data (.npz) and
bad recipes, bundles and budgets are thrown at the LIBRARY entry points, which may raise only ModelpressError
subclasses and must leave no file behind (neither beside the inputs nor in the temp folder) and every input
byte-identical.

Bugs this file found are fixed and stay here as regressions: an unloadable input model through most techniques
(was exit 3, now exit 2 naming the input), a string input through fp16 without data (was TypeError), a model with
no outputs in evaluate (was IndexError), non-UTF-8 tensor names in the fp16 repair (was UnicodeDecodeError), and
the fp16 repair's instrumented copy written beside the user's model (now in a temp folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import string
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as TP
from onnx import helper as oh

from modelpress.data import Dataset
from modelpress.errors import ModelpressError
from tests.conftest import TINY_STUDY

# small and derandomized: the whole file runs in well under a minute on 2 cores. For a longer hunt, scale the
# example counts (and vary the seed with derandomize off): MODELPRESS_TAXONOMY_SCALE=50 pytest tests/test_taxonomy.py
SCALE = max(1, int(os.environ.get("MODELPRESS_TAXONOMY_SCALE", "1")))
HYPO = settings(max_examples=12 * SCALE, deadline=None, database=None, derandomize=SCALE == 1,
                report_multiple_bugs=False, suppress_health_check=list(HealthCheck))
MANY = settings(HYPO, max_examples=60 * SCALE)  # pure-Python parsers: cheap


# ----------------------------------------------------------------------------- the property


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (_sha(p) if p.is_file() else "<dir>") for p in sorted(folder.rglob("*"))}


@contextlib.contextmanager
def sandbox():
    """A work folder, and a private temp folder for the duration (tempfile.tempdir): both are checked after."""
    root = Path(tempfile.mkdtemp(prefix="mp-taxonomy-"))
    work, tmp = root / "work", root / "tmp"
    work.mkdir()
    tmp.mkdir()
    old = tempfile.tempdir
    tempfile.tempdir = str(tmp)
    try:
        yield work
        left = [p.name for p in tmp.iterdir() if p.name != ".ses"]  # .ses: onnxruntime's session-id file
        assert not left, f"left in the temp folder: {left}"
    finally:
        tempfile.tempdir = old
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def only_modelpress_errors(call, work: Path) -> ModelpressError | None:
    """Run `call`; a ModelpressError is the only exception allowed (anything else propagates and fails the test).
    On error: a one-line-able message, nothing new in `work`, every input byte-identical. On success: inputs
    untouched. Returns the error (or None)."""
    before = _snapshot(work)
    try:
        call()
    except ModelpressError as e:
        one_line = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
        assert one_line, f"{type(e).__name__} with an empty message"
        assert "Traceback (most recent call last)" not in str(e), str(e)[:500]
        assert len(one_line) < 2000, one_line[:300]
        assert _snapshot(work) == before, f"{type(e).__name__}: {one_line[:200]} -- but files changed: " \
                                          f"{set(_snapshot(work)) ^ set(before)}"
        return e
    after = _snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before, "an input was modified"
    return None


# ----------------------------------------------------------------------------- bad models


def _tiny_proto(tiny_bytes: bytes) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.ParseFromString(tiny_bytes)
    return m


_ELEM = [TP.UNDEFINED, TP.INT64, TP.DOUBLE, TP.STRING, TP.BOOL, TP.FLOAT16, TP.UINT8, TP.INT32, 999]
_OPS = ["Relu", "Add", "MatMul", "Conv", "Identity", "Cast", "Reshape", "Gemm", "Softmax", "Frobnicate"]
_NAMES = st.sampled_from(["input", "x", "y", "nowhere", "", "conv1.weight", "output", "é"])


def _mutate(m: onnx.ModelProto, kind: str, k: int, draw) -> str:
    """One semantic break of a parsed model; returns what it did."""
    g = m.graph
    if kind == "ir":
        m.ir_version = draw(st.sampled_from([0, 1, 2, 3, -1, 99]))
        return f"ir_version {m.ir_version}"
    if kind == "opset":
        how = draw(st.sampled_from(["clear", "version", "domain"]))
        if how == "clear":
            del m.opset_import[:]
        elif how == "version":
            for o in m.opset_import:
                o.version = draw(st.sampled_from([0, 1, 6, 99, -3]))
        else:
            m.opset_import.add(domain="com.nowhere", version=1)
            if g.node:
                g.node[k % len(g.node)].domain = "com.nowhere"
        return f"opset {how}"
    if kind == "dangling" and g.node:
        n = g.node[k % len(g.node)]
        if n.input:
            n.input[k % len(n.input)] = draw(_NAMES) or "dangling"
        return "dangling edge"
    if kind == "drop-input" and g.input:
        del g.input[k % len(g.input)]
        return "graph input removed"
    if kind == "drop-output" and g.output:
        del g.output[k % len(g.output)]
        return "graph output removed"
    if kind == "drop-initializer" and g.initializer:
        del g.initializer[k % len(g.initializer)]
        return "initializer removed"
    if kind == "drop-node" and g.node:
        del g.node[k % len(g.node)]
        return "node removed"
    if kind == "dtype" and g.input:
        g.input[k % len(g.input)].type.tensor_type.elem_type = draw(st.sampled_from(_ELEM))
        return "input dtype"
    if kind == "shape" and g.input:
        shape = g.input[k % len(g.input)].type.tensor_type.shape
        dims = draw(st.lists(st.sampled_from([0, 1, 2, 3, 16, -1, "b"]), max_size=5))
        del shape.dim[:]
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d
        return f"input shape {dims}"
    if kind == "init-dtype" and g.initializer:
        g.initializer[k % len(g.initializer)].data_type = draw(st.sampled_from(_ELEM[1:]))
        return "initializer dtype"
    if kind == "init-bytes" and g.initializer:
        t = g.initializer[k % len(g.initializer)]
        if t.raw_data:
            t.raw_data = t.raw_data[: draw(st.integers(0, max(0, len(t.raw_data) - 1)))]
        else:
            t.dims.append(7)
        return "initializer data short"
    if kind == "op" and g.node:
        g.node[k % len(g.node)].op_type = draw(st.sampled_from(_OPS))
        return "op type changed"
    if kind == "attr" and g.node:
        g.node[k % len(g.node)].attribute.append(oh.make_attribute(
            draw(st.sampled_from(["kernel_shape", "pads", "axis", "junk"])),
            draw(st.sampled_from([[5, 5, 5], [-1], 7, "text", 1.5]))))
        return "attribute added"
    if kind == "dup-output" and len(g.node) > 1:
        g.node[k % len(g.node)].output[0] = g.node[(k + 1) % len(g.node)].output[0]
        return "two nodes write one tensor"
    if kind == "cycle" and len(g.node) > 1:
        g.node[0].input.append(g.node[-1].output[0])
        return "cycle"
    if kind == "external" and g.initializer:
        t = g.initializer[k % len(g.initializer)]
        t.ClearField("raw_data")
        t.data_location = TP.EXTERNAL
        t.external_data.add(key="location", value=draw(st.sampled_from(["w.bin", "../w.bin", "/etc/passwd", ""])))
        return "external data"
    if kind == "unsorted":
        g.node.reverse()
        return "nodes unsorted (valid)"
    return "unchanged"


_KINDS = ["ir", "opset", "dangling", "drop-input", "drop-output", "drop-initializer", "drop-node", "dtype", "shape",
          "init-dtype", "init-bytes", "op", "attr", "dup-output", "cycle", "external", "unsorted"]


@st.composite
def _helper_model(draw) -> bytes:
    """A tiny graph built with onnx.helper, no checks: random ops, names, dtypes, IR and opset."""
    elem = draw(st.sampled_from([TP.FLOAT, TP.FLOAT, TP.INT64, TP.DOUBLE, TP.STRING, TP.BOOL, TP.FLOAT16]))
    dims = draw(st.sampled_from([["b", 1, 16, 16], ["b", 4], [], [0, 3], ["b", "s"]]))
    inputs = [oh.make_tensor_value_info(n, elem, dims) for n in draw(st.lists(_NAMES, max_size=2, unique=True))]
    nodes = []
    for i in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(_OPS))
        ins = draw(st.lists(_NAMES, min_size=1, max_size=2))
        nodes.append(oh.make_node(op, ins, [draw(st.sampled_from(["y", f"t{i}", "x"]))]))
    outputs = [oh.make_tensor_value_info(n, draw(st.sampled_from([TP.FLOAT, TP.INT64, TP.UNDEFINED])), None)
               for n in draw(st.lists(st.sampled_from(["y", "t0", "nowhere"]), max_size=2, unique=True))]
    inits = []
    if draw(st.booleans()):
        dims = draw(st.sampled_from([[4, 4], [1, 1, 3, 3], [2]]))
        inits.append(TP(name=draw(_NAMES) or "w", data_type=TP.FLOAT, dims=dims,
                        raw_data=np.ones(draw(st.integers(0, 16)), np.float32).tobytes()))
    g = oh.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", draw(st.sampled_from([1, 7, 13, 18, 99])))])
    m.ir_version = draw(st.sampled_from([0, 3, 8, 99]))
    return m.SerializeToString()


def bad_models(tiny_bytes: bytes):
    """(what, bytes) of a model that is broken in some way (or, rarely, still fine: the property holds either way)."""
    n = len(tiny_bytes)

    @st.composite
    def mutated(draw):
        m = _tiny_proto(tiny_bytes)
        did = [_mutate(m, kind, k, draw) for kind, k in draw(st.lists(
            st.tuples(st.sampled_from(_KINDS), st.integers(0, 40)), min_size=1, max_size=3))]
        return "mutated: " + ", ".join(did), m.SerializeToString()

    @st.composite
    def flipped(draw):
        b = bytearray(tiny_bytes)
        for pos, val in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=8)):
            b[pos] = val
        return "bytes flipped", bytes(b)

    return st.one_of(
        st.binary(max_size=300).map(lambda b: ("random bytes", b)),
        st.integers(1, n - 1).map(lambda k: (f"truncated at {k} of {n} bytes", tiny_bytes[:k])),
        flipped(),
        mutated(),
        _helper_model().map(lambda b: ("built with onnx.helper", b)),
    )


@pytest.fixture(scope="module")
def tiny_bytes(tiny_onnx) -> bytes:
    return tiny_onnx.read_bytes()


@pytest.fixture(scope="module")
def good_data(tiny_data) -> Dataset:
    return Dataset({"input": tiny_data.inputs["input"][:8]}, tiny_data.labels[:8])


# the strategy needs the fixture's bytes: build it once per module, lazily
_MODEL_STRATEGY: dict[str, st.SearchStrategy] = {}


def _models(tiny_bytes: bytes) -> st.SearchStrategy:
    if "m" not in _MODEL_STRATEGY:
        _MODEL_STRATEGY["m"] = bad_models(tiny_bytes)
    return _MODEL_STRATEGY["m"]


def test_check_onnx_file_raises_only_modelpress_errors(tiny_bytes):
    from modelpress.onnxutil import check_onnx_file

    @HYPO
    @given(_models(tiny_bytes))
    def prop(case):
        what, data = case
        with sandbox() as work:
            (work / "m.onnx").write_bytes(data)
            only_modelpress_errors(lambda: check_onnx_file(work / "m.onnx"), work)

    prop()


def test_evaluate_raises_only_modelpress_errors(tiny_bytes, good_data):
    from modelpress.benchmarks.evaluate import evaluate

    @HYPO
    @given(_models(tiny_bytes), st.sampled_from([1, 3, 64]))
    def prop(case, batch):
        what, data = case
        with sandbox() as work:
            (work / "m.onnx").write_bytes(data)
            only_modelpress_errors(lambda: evaluate(work / "m.onnx", good_data, batch_size=batch), work)

    prop()


_ONNX_TECHNIQUES = ["static-int8", "dynamic-int8", "fp16", "graph", "int8-weight", "int4-weight"]


@pytest.mark.parametrize("technique", _ONNX_TECHNIQUES)
def test_optimize_raises_only_modelpress_errors(tiny_bytes, good_data, technique):
    from modelpress.optimizers import optimize

    @settings(HYPO, max_examples=10 * SCALE)
    @given(_models(tiny_bytes))
    def prop(case):
        what, data = case
        with sandbox() as work:
            (work / "m.onnx").write_bytes(data)
            err = only_modelpress_errors(lambda: optimize(work / "m.onnx", work / "out.onnx", technique,
                                                          calib=good_data, data=good_data), work)
            if err is not None:
                assert not (work / "out.onnx").exists()

    prop()


# --------------------------------------------------------------------------- known internal errors, precisely


def _tiny_with(tiny_bytes: bytes, change) -> bytes:
    m = _tiny_proto(tiny_bytes)
    change(m)
    return m.SerializeToString()


def _dangling(m):
    m.graph.node[0].input[0] = "gone"


def _no_inputs(m):
    del m.graph.input[:]


def _missing_init(m):
    del m.graph.initializer[0]


def _cycle(m):
    m.graph.node[0].input.append(m.graph.node[-1].output[0])


def _string_input(m):
    m.graph.input[0].type.tensor_type.elem_type = TP.STRING


# An input model ONNX Runtime cannot load is bad input: a ModelpressError with exit code 2 that names the model,
# found before any technique runs (optimize() loads its source first).
_UNLOADABLE = [_dangling, _no_inputs, _missing_init, _cycle]


@pytest.mark.parametrize("technique,change", [
    pytest.param(t, b, id=f"{t}-{b.__name__.strip('_')}") for t in _ONNX_TECHNIQUES for b in _UNLOADABLE])
def test_unloadable_input_model_is_exit_2_naming_it(tmp_path, tiny_bytes, good_data, technique, change):
    from modelpress.optimizers import optimize

    model = tmp_path / "m.onnx"
    model.write_bytes(_tiny_with(tiny_bytes, change))
    err = only_modelpress_errors(lambda: optimize(model, tmp_path / "out.onnx", technique, calib=good_data,
                                                  data=good_data), tmp_path)
    assert err is not None and err.exit_code == 2 and str(model) in str(err), \
        f"{type(err).__name__} (exit {getattr(err, 'exit_code', None)}): {err}"


@pytest.mark.parametrize("change", _UNLOADABLE, ids=lambda f: f.__name__.strip("_"))
def test_evaluate_on_unloadable_models_is_exit_2(tmp_path, tiny_bytes, good_data, change):
    from modelpress.benchmarks.evaluate import evaluate

    model = tmp_path / "m.onnx"
    model.write_bytes(_tiny_with(tiny_bytes, change))
    err = only_modelpress_errors(lambda: evaluate(model, good_data), tmp_path)
    assert err is not None and err.exit_code == 2 and str(model) in str(err), err


def test_fp16_without_data_on_a_string_input(tmp_path):
    from modelpress.optimizers import optimize

    m = oh.make_model(oh.make_graph([oh.make_node("Identity", ["input"], ["y"])], "g",
                                    [oh.make_tensor_value_info("input", TP.STRING, ["b"])],
                                    [oh.make_tensor_value_info("y", TP.STRING, ["b"])]),
                      opset_imports=[oh.make_opsetid("", 17)])
    m.ir_version = 8
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    only_modelpress_errors(lambda: optimize(tmp_path / "m.onnx", tmp_path / "out.onnx", "fp16"), tmp_path)


def test_evaluate_on_a_model_without_outputs(tmp_path, tiny_bytes, good_data):
    from modelpress.benchmarks.evaluate import evaluate

    def no_outputs(m):
        del m.graph.output[:]
    (tmp_path / "m.onnx").write_bytes(_tiny_with(tiny_bytes, no_outputs))
    only_modelpress_errors(lambda: evaluate(tmp_path / "m.onnx", good_data), tmp_path)


def test_fp16_repairs_on_a_model_with_non_utf8_names(tmp_path, tiny_bytes, good_data):
    from modelpress.optimizers import optimize

    raw = bytearray(tiny_bytes)
    raw[raw.find(b"/pool/MaxPool_output_0")] = 0x80  # protobuf still parses; the string is not UTF-8
    (tmp_path / "m.onnx").write_bytes(bytes(raw))
    only_modelpress_errors(lambda: optimize(tmp_path / "m.onnx", tmp_path / "out.onnx", "fp16", calib=good_data,
                                            data=good_data), tmp_path)


def test_fp16_repair_leaves_files_beside_the_input_alone(tmp_path, tiny_onnx, good_data):
    from modelpress.optimizers.repair import activation_ranking

    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    mine = tmp_path / "m.all-outputs.onnx"
    mine.write_text("the user's own file")
    activation_ranking(model, good_data)
    assert mine.is_file() and mine.read_text() == "the user's own file", "the user's file is gone"


# ----------------------------------------------------------------------------- bad data


_dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex64, "U2"])
_shapes = st.sampled_from([(8, 1, 16, 16), (3, 1, 16, 16), (0, 1, 16, 16), (8, 16, 16), (8, 1, 8, 8), (8,), ()])


@st.composite
def _npz_bytes(draw) -> bytes:
    from hypothesis.extra import numpy as hnp

    arrays = {}
    for name in draw(st.lists(st.sampled_from(["input", "labels", "x", "input_ids"]), max_size=3, unique=True)):
        dtype, shape = draw(_dtypes), draw(_shapes)
        if name == "labels":
            shape = draw(st.sampled_from([(8,), (3,), (8, 2), ()]))
        arrays[name] = draw(hnp.arrays(dtype, shape, elements=(
            st.sampled_from([0.0, 1.0, 0.5, np.nan, np.inf]) if np.dtype(dtype).kind == "f" else None)))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    raw = buf.getvalue()
    how = draw(st.sampled_from(["as is", "as is", "cut", "junk"]))
    if how == "cut":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    return draw(st.binary(max_size=64)) if how == "junk" else raw


def test_bad_data_at_evaluate_and_static_int8(tiny_onnx):
    """Generated .npz files (wrong names, dtypes, shapes, NaN/Inf, bad labels, cut or junk files) through the
    loader into evaluate and a calibrated technique: only ModelpressError."""
    from modelpress.benchmarks.evaluate import evaluate
    from modelpress.data import load_npz
    from modelpress.optimizers import optimize

    @HYPO
    @given(_npz_bytes(), st.booleans())
    def prop(raw, calibrate):
        with sandbox() as work:
            (work / "m.onnx").write_bytes(tiny_onnx.read_bytes())
            (work / "d.npz").write_bytes(raw)

            def run():
                ds = load_npz(work / "d.npz")
                if calibrate:
                    optimize(work / "m.onnx", work / "out.onnx", "static-int8", calib=ds)
                else:
                    evaluate(work / "m.onnx", ds, batch_size=4)

            if only_modelpress_errors(run, work) is not None:
                assert not (work / "out.onnx").exists()

    prop()


# ----------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def good_bundle(tmp_path_factory, tiny_onnx) -> dict[str, bytes]:
    from modelpress.bundle import package

    out = tmp_path_factory.mktemp("bundle") / "b.mpk"
    package(tiny_onnx, out)
    with tarfile.open(out) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


_json = st.recursive(st.none() | st.booleans() | st.integers(-2, 10**20) | st.floats() | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=8)


@st.composite
def _bundles(draw, good: dict[str, bytes]) -> bytes:
    """A tar (gz or not) whose members come from a real bundle, changed: a mutated manifest, swapped or cut
    members, odd names, links; or plain random bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=400))
    files = dict(good)
    man = json.loads(files["manifest.json"])
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(man) + ["files.model.onnx", "signature.inputs", "extra"]))
        if "." in key:
            top, _, rest = key.partition(".")
            if isinstance(man.get(top), dict):
                man[top][rest] = draw(_json)
        else:
            man[key] = draw(_json)
    files["manifest.json"] = json.dumps(man, allow_nan=True).encode() if draw(st.booleans()) else \
        draw(st.binary(max_size=50))
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from(sorted(files) + ["../x", "/abs", "a/b", "", ".", "manifest.sig", "é"]))
        files[name] = draw(st.sampled_from([b"", b"x" * 64, good["model.onnx"][:100], good["model.onnx"]]))
    buf = io.BytesIO()
    gz = draw(st.booleans())
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name or "noname")
            kind = draw(st.sampled_from(["file"] * 6 + ["sym", "dir"]))
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                t.addfile(info)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw[: draw(st.integers(1, len(raw)))] if draw(st.integers(0, 4)) == 0 else raw


def test_verify_raises_only_modelpress_errors(good_bundle):
    from modelpress.bundle import verify

    @HYPO
    @given(_bundles(good_bundle), st.sampled_from([None, "junk", "empty"]))
    def prop(raw, key):
        with sandbox() as work:
            (work / "b.mpk").write_bytes(raw)
            k = None
            if key:
                k = work / "k.pem"
                k.write_bytes(b"" if key == "empty" else b"-----BEGIN PUBLIC KEY-----\nbm9wZQ==\n-----END PUBLIC KEY-----\n")
            only_modelpress_errors(lambda: verify(work / "b.mpk", key=k), work)

    prop()


def test_verify_random_bytes_and_open_model(good_bundle):
    from modelpress.bundle import open_model, verify

    @HYPO
    @given(st.binary(max_size=2000), st.sampled_from(["b.mpk", "b.onnx", "b.tar"]))
    def prop(raw, name):
        with sandbox() as work:
            (work / name).write_bytes(raw)
            only_modelpress_errors(lambda: verify(work / name), work)
            with tempfile.TemporaryDirectory() as into:
                only_modelpress_errors(lambda: open_model(work / name, Path(into) / "x"), work)

    prop()


# ----------------------------------------------------------------------------- recipes and budgets


STUDY = TINY_STUDY  # one recipe for every bad-input test (tests/conftest.py)

_budget_text = st.one_of(
    st.from_regex(r"\A-?[0-9]{0,3}(\.[0-9]{0,3})?(e-?[0-9]{1,3})?\s?(pt|pts|points|pp|%|kg|PT|p|)\Z", fullmatch=True),
    st.text(string.printable, max_size=12),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "1%%", "%", "pt", "0x10", "1_000", "½", "１pt", "0.5 pt ", " 1 %"]),
)
_budget_any = st.one_of(_budget_text, st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**30),
                        st.booleans(), st.none(), st.lists(st.integers(), max_size=2))


@MANY
@given(_budget_any, st.sampled_from(["fraction", "points"]))
def test_accuracy_budgets_parse_or_refuse_in_one_line(value, bare):
    from modelpress.units import format_accuracy_budget, parse_accuracy_budget

    try:
        frac, rel = parse_accuracy_budget(value, "x: max_accuracy_drop", bare=bare)
    except ModelpressError as e:
        assert "\n" not in str(e) and len(str(e)) < 400 and str(e).startswith("x: max_accuracy_drop"), str(e)
        return
    assert isinstance(rel, bool) and math.isfinite(frac) and 0 <= frac <= 1, (value, frac, rel)
    again = parse_accuracy_budget(format_accuracy_budget(frac, rel), "again", bare=bare)
    assert again[1] == rel and math.isclose(again[0], frac, rel_tol=1e-9, abs_tol=1e-12), (value, frac, again)


@MANY
@given(st.one_of(_budget_any, st.from_regex(r"\A-?[0-9]{1,4}(\.[0-9]{1,3})?\s?%?\Z", fullmatch=True)))
def test_percent_limits_parse_or_refuse_in_one_line(value):
    from modelpress.units import format_percent, parse_percent

    try:
        v = parse_percent(value, "--max-latency-regression")
    except ModelpressError as e:
        assert "\n" not in str(e) and len(str(e)) < 400 and "--max-latency-regression" in str(e), str(e)
        return
    assert math.isfinite(v) and v >= 0
    s = str(value).strip()
    assert s.endswith("%") or v < 1, f"a bare {value!r} was read as {v}: bare numbers >= 1 must be refused"
    assert math.isclose(parse_percent(format_percent(v)), v, rel_tol=1e-9, abs_tol=1e-12)


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory, tiny_onnx, tiny_npz) -> Path:
    d = tmp_path_factory.mktemp("tax-recipes")
    (d / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (d / "data.npz").write_bytes(tiny_npz.read_bytes())
    return d


_sel_values = st.one_of(_budget_any, _json)


def test_study_recipe_selection_raises_only_modelpress_errors(study_folder):
    """selection: max_accuracy_drop with and without units, relative, objective, profile, weights: only
    ModelpressError, and what loads states its unit (relative: true/false) with a fraction in [0, 1]."""
    from modelpress.study import load_study_recipe

    @MANY
    @given(st.dictionaries(st.sampled_from(["max_accuracy_drop", "relative", "objective", "profile", "weights",
                                            "max_accuracy_dorp"]), _sel_values, max_size=4),
           st.booleans())
    def prop(selection, flow):
        try:
            text = STUDY + yaml.safe_dump({"selection": selection}, default_flow_style=flow)
        except yaml.YAMLError:
            return
        path = study_folder / "r.yaml"
        path.write_text(text)
        before = _snapshot(study_folder)
        try:
            rec = load_study_recipe(path)
        except ModelpressError as e:
            assert "\n" not in str(e) and len(str(e)) < 1000, str(e)
        else:
            sel = rec.selection
            assert isinstance(sel.relative, bool)
            assert 0 <= sel.max_accuracy_drop <= 1 and not isinstance(sel.max_accuracy_drop, bool)
        assert _snapshot(study_folder) == before

    prop()


def test_optimize_recipe_options_raise_only_modelpress_errors(study_folder):
    """Real techniques with generated option names and values (through load_recipe, and build_pass directly)."""
    from modelpress.optimizers import PASSES, build_pass
    from modelpress.recipe import load_recipe

    names = st.sampled_from(["per_channel", "calibration", "block_size", "op_types", "exclude", "level", "tool",
                             "keep_io_types", "max_calib_samples", "exclude_most_sensitive", "reduce_range", "nope"])

    @MANY
    @given(st.sampled_from(sorted(PASSES)), st.dictionaries(names, _json, max_size=3))
    def prop(technique, options):
        try:
            build_pass(technique, options)
        except ModelpressError as e:
            assert "\n" not in str(e), str(e)
        doc = {"modelpress": 1, "model": "fp32.onnx", "output": "q.onnx",
               "steps": [{"technique": technique, "options": options}]}
        path = study_folder / "o.yaml"
        try:
            path.write_text(yaml.safe_dump(doc))
        except (yaml.YAMLError, UnicodeEncodeError):
            return
        try:
            load_recipe(path)
        except ModelpressError as e:
            assert "\n" not in str(e), str(e)

    prop()


def test_recipe_loaders_on_random_files(study_folder):
    from modelpress.study import load_study_recipe
    from modelpress.recipe import load_recipe

    @HYPO
    @given(st.one_of(st.binary(max_size=300), st.text(max_size=200).map(lambda s: s.encode("utf-8", "replace"))))
    def prop(raw):
        path = study_folder / "x.yaml"
        path.write_bytes(raw)
        for load in (load_study_recipe, load_recipe):
            try:
                load(path)
            except ModelpressError as e:
                assert "\n" not in str(e), str(e)

    prop()
    for p in (study_folder / "x.yaml", study_folder / "r.yaml", study_folder / "o.yaml"):
        p.unlink(missing_ok=True)
    assert sorted(os.listdir(study_folder)) == ["data.npz", "fp32.onnx"]


# ----------------------------------------------------------------------------- one unit for accuracy budgets


@pytest.mark.parametrize("text,bare,want", [
    ("0.5pt", "fraction", (0.005, False)), ("0.5 pt", "points", (0.005, False)), ("0.5 points", "fraction", (0.005, False)),
    ("2pp", "fraction", (0.02, False)), ("1%", "fraction", (0.01, True)), ("1 %", "points", (0.01, True)),
    (0.01, "fraction", (0.01, False)), ("0.01", "fraction", (0.01, False)), (0.5, "points", (0.005, False)),
    ("0.5", "points", (0.005, False)), (1, "fraction", (1.0, False)), (0, "points", (0.0, False)),
])
def test_accuracy_budget_units(text, bare, want):
    from modelpress.units import parse_accuracy_budget

    frac, rel = parse_accuracy_budget(text, "x", bare=bare)
    assert rel == want[1] and math.isclose(frac, want[0])


@pytest.mark.parametrize("text,want", [("5%", 0.05), ("0.05", 0.05), (0.05, 0.05), ("12.5 %", 0.125), ("0", 0.0),
                                       ("250%", 2.5), ("1e-2", 0.01)])
def test_percent_units(text, want):
    from modelpress.gate import parse_percent as legacy
    from modelpress.units import parse_percent

    assert math.isclose(parse_percent(text), want) and math.isclose(legacy(text), want)


@pytest.mark.parametrize("text,needle", [("5", "for 5 percent write '5%'"), ("2", "for 2 percent write '2%'"),
                                         ("1", "write '1%' or '100%'"), (1.5, "would be 150%"), ("5pt", "not points"),
                                         ("-1%", "cannot be negative"), ("fast", "use e.g. 5% or 0.05")])
def test_percent_refuses_what_it_would_have_to_guess(text, needle):
    from modelpress.gate import parse_percent

    with pytest.raises(ModelpressError) as e:
        parse_percent(text)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_study_recipe_budget_units_and_the_recipe_as_run(study_folder):
    from modelpress.study import load_study_recipe

    for text, want in [("0.5pt", (0.005, False)), ("'1%'", (0.01, True)), ("0.01", (0.01, False)),
                       ("{max_accuracy_drop: 0.02, relative: true}", (0.02, True))]:
        sel = text if text.startswith("{") else f"{{max_accuracy_drop: {text}}}"
        (study_folder / "u.yaml").write_text(STUDY + f"selection: {sel}\n")
        rec = load_study_recipe(study_folder / "u.yaml")
        assert (rec.selection.max_accuracy_drop, rec.selection.relative) == want, text
        # the recipe as run states the unit ('0.5pt' or '1%') and relative true/false, and reads back the same
        from modelpress.units import parse_accuracy_budget

        ran = yaml.safe_load(rec.to_yaml())
        frac, rel = parse_accuracy_budget(ran["selection"]["max_accuracy_drop"], "replay")
        assert ran["selection"]["relative"] is want[1] and rel is want[1] and math.isclose(frac, want[0])
        assert str(ran["selection"]["max_accuracy_drop"]).endswith(("pt", "%"))
        (study_folder / "again.yaml").write_text(rec.to_yaml(study_folder))
        again = load_study_recipe(study_folder / "again.yaml")
        assert (again.selection.max_accuracy_drop, again.selection.relative) == want
    for p in ("u.yaml", "again.yaml"):
        (study_folder / p).unlink()


@pytest.fixture(scope="module")
def worse_model(tmp_path_factory, tiny_onnx, tiny_data) -> tuple[Path, Path]:
    """The tiny model with one weight tensor scaled (same I/O signature, other predictions), and data labelled with
    the tiny model's own predictions (baseline top-1 = 100%)."""
    from onnx import numpy_helper

    from modelpress.benchmarks.evaluate import predict

    d = tmp_path_factory.mktemp("gate-units")
    m = onnx.load(str(tiny_onnx))
    t = m.graph.initializer[0]
    t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))
    onnx.save(m, str(d / "worse.onnx"))
    labels = predict(tiny_onnx, tiny_data).argmax(1)
    Dataset(tiny_data.inputs, labels).save(d / "labelled.npz")
    return d / "worse.onnx", d / "labelled.npz"


def test_gate_states_its_units(tiny_onnx, worse_model):
    """Points, relative and bare budgets in the library; the verdict records each limit with its unit."""
    from modelpress.gate import gate

    worse, data = worse_model
    common = dict(max_latency_regression="900%", rounds=1, iterations=5, data_file=data)
    pt = gate(worse, tiny_onnx, max_accuracy_drop="0.5pt", **common)
    assert pt.baseline_accuracy == 1.0 and pt.accuracy_drop_pt > 0.5
    assert not pt.passed and pt.max_accuracy_drop_pt == 0.5
    assert pt.limits == {"max_latency_regression": "900%", "max_accuracy_drop": "0.5pt"}
    assert any(r.startswith("top-1 dropped") and r.endswith("(limit 0.50 pt)") for r in pt.reasons), pt.reasons
    rel = gate(worse, tiny_onnx, max_accuracy_drop="100%", **common)  # 100% of the baseline's 100% = 100 pt
    assert rel.passed and rel.max_accuracy_drop_pt == 100.0 and rel.limits["max_accuracy_drop"] == "100%"
    legacy = gate(worse, tiny_onnx, max_accuracy_drop_pt=0.5, **common)  # the old keyword: points
    assert legacy.limits["max_accuracy_drop"] == "0.5pt" and not legacy.passed
    with pytest.raises(ModelpressError, match="not both"):
        gate(worse, tiny_onnx, max_accuracy_drop="1pt", max_accuracy_drop_pt=1.0)


def test_gate_cli_shows_units(tiny_onnx, worse_model):
    from tests.conftest import run_cli

    worse, data = worse_model
    p = run_cli("gate", str(worse), "--baseline", str(tiny_onnx), "--data", str(data), "--rounds", "1", "-n", "5",
                "--max-latency-regression", "900%", "--max-accuracy-drop", "1%")
    assert p.returncode == 5, p.stdout + p.stderr
    assert "-1% of baseline = -1.00 pt" in p.stdout and "(limit 1% of the baseline's top-1 = 1.00 pt)" in p.stdout
    p = run_cli("gate", str(worse), "--baseline", str(tiny_onnx), "--data", str(data), "--rounds", "1", "-n", "5",
                "--max-latency-regression", "0.99", "--max-accuracy-drop", "100", "--json")  # bare: fraction, points
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)
    assert doc["limits"] == {"max_latency_regression": "99%", "max_accuracy_drop": "100pt"}
    assert doc["max_latency_regression"] == 0.99 and doc["max_accuracy_drop_pt"] == 100.0
