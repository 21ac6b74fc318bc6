"""The bad-input corpus across the whole CLI: each case asserts the one-line message, the documented exit
code, that no traceback is printed and (where the command writes) that nothing is left half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_clean_error, run_cli

GOOD_STUDY = """\
modelpress: 1
kind: study
model: fp32.onnx
data: {eval: data.npz}
candidates:
  - [dynamic-int8]
profiles: [edge-1core]
output: out
"""


def _recipe(tmp: Path, text: str) -> str:
    (tmp / "r.yaml").write_text(text)
    return str(tmp / "r.yaml")


def _files(tmp: Path, tiny_onnx: Path, tiny_npz: Path) -> None:
    (tmp / "fp32.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp / "data.npz").write_bytes(tiny_npz.read_bytes())
    (tmp / "garbage.onnx").write_bytes(b"\x00not onnx at all")
    (tmp / "notatar.mpk").write_bytes(b"plain text, not a bundle")


# (name, argv builder, exit code, message fragment)
CASES = [
    ("recipe typo'd key", lambda t: ["run", _recipe(t, GOOD_STUDY.replace("candidates:", "candidtes:"))], 2,
     "r.yaml:5: unknown key 'candidtes' in the recipe (did you mean 'candidates'?)"),
    ("recipe wrong type", lambda t: ["run", _recipe(t, GOOD_STUDY.replace("profiles: [edge-1core]", "profiles: fast"))],
     2, "r.yaml:7: profiles must be a list"),
    ("recipe bad option value", lambda t: ["run", _recipe(t, GOOD_STUDY.replace(
        "[dynamic-int8]", "[{technique: dynamic-int8, options: {per_channel: maybe}}]"))], 2,
     "option per_channel must be true or false"),
    ("recipe unknown technique", lambda t: ["run", _recipe(t, GOOD_STUDY.replace("[dynamic-int8]", "[int3]"))], 2,
     "r.yaml:6: unknown technique 'int3'"),
    ("chain that cannot compose", lambda t: ["run", _recipe(t, GOOD_STUDY.replace(
        "[dynamic-int8]", "[static-int8, \"prune-structured:0.5\"]"))], 2, "must come before ONNX techniques"),
    ("pytorch step without source", lambda t: ["run", _recipe(t, GOOD_STUDY.replace(
        "[dynamic-int8]", "[\"prune-structured:0.5\"]"))], 2, "needs its source"),
    ("recipe missing data file", lambda t: ["run", _recipe(t, GOOD_STUDY.replace("data.npz", "nope.npz"))], 2,
     "r.yaml:4: data.eval: no such file: nope.npz"),
    ("recipe bad accuracy budget", lambda t: ["run", _recipe(t, GOOD_STUDY + "selection: {max_accuracy_drop: lots}\n")],
     2, "max_accuracy_drop must be a number"),
    ("recipe not YAML", lambda t: ["run", _recipe(t, "candidates: [unclosed\n")], 2, "not valid YAML"),
    ("recipe unknown preset", lambda t: ["run", _recipe(t, GOOD_STUDY.replace("edge-1core", "edge-9core"))], 2,
     "edge-9core"),
    ("optimize recipe given to run", lambda t: ["run", _recipe(t, GOOD_STUDY.replace("kind: study", "kind: optimize"))],
     2, "kind must be 'study'"),
    ("export no such factory module", lambda t: ["export", "nosuchpkg.mod:fn", "-o", str(t / "x.onnx")], 2,
     "cannot import 'nosuchpkg.mod'"),
    ("optimize garbage model", lambda t: ["optimize", str(t / "garbage.onnx"), "-t", "dynamic-int8", "-o",
                                          str(t / "x.onnx")], 2, "not an ONNX model"),
    ("optimize unknown option", lambda t: ["optimize", str(t / "fp32.onnx"), "-t", "dynamic-int8", "--option",
                                           "colour=red", "-o", str(t / "x.onnx")], 2, "unknown option(s) ['colour']"),
    ("profile unknown preset", lambda t: ["profile", str(t / "fp32.onnx"), "-p", "phone"], 2, "phone"),
    ("prune sparsity out of range", lambda t: ["prune", "tests.factories:tiny_cnn", "--sparsity", "1.2", "-o",
                                               str(t / "x.onnx")], 2, "between 0 and 1"),
    ("prune 2:4 on a 1-channel conv", lambda t: ["prune", "tests.factories:tiny_cnn", "--method", "2:4", "-o",
                                                 str(t / "x.onnx")], 2, "does not fit layer 'conv1'"),
    ("fine-tune without data", lambda t: ["prune", "tests.untrainable:residual_net", "--epochs", "1", "-o",
                                          str(t / "x.onnx")], 2, "fine-tuning needs data"),
    ("llm source that does not load", lambda t: ["llm", "export", str(t / "fp32.onnx"), "-o", str(t / "llm")], 2,
     "expected a .gguf file or a Hugging Face model folder"),
    ("package garbage model", lambda t: ["package", str(t / "garbage.onnx"), "-o", str(t / "x.mpk")], 2,
     "not an ONNX model"),
    ("package report that is not a report", lambda t: ["package", str(t / "fp32.onnx"), "--report",
                                                       _recipe(t, "{}"), "-o", str(t / "x.mpk")], 2,
     "is not a modelpress report"),
    ("verify not a bundle", lambda t: ["verify", str(t / "notatar.mpk")], 2, "not a readable bundle"),
    ("verify missing bundle", lambda t: ["verify", str(t / "nope.mpk")], 2, "no such bundle"),
    ("gate different signature", lambda t: ["gate", str(t / "fp32.onnx"), "--baseline", str(t / "two.onnx")], 2,
     "I/O signature differs from the baseline's"),
    ("gate bad limit", lambda t: ["gate", str(t / "fp32.onnx"), "--baseline", str(t / "fp32.onnx"),
                                  "--max-latency-regression", "fast"], 2, "bad percentage 'fast'"),
]


@pytest.fixture(scope="module")
def two_inputs_onnx(tmp_path_factory) -> Path:
    from modelpress.exporters import ExportConfig, export_onnx
    from tests.factories import two_inputs

    path = tmp_path_factory.mktemp("two") / "two.onnx"
    model, ex = two_inputs()
    export_onnx(model, ex, path, ExportConfig(exporter="torchscript"))
    return path


def test_corpus_is_big_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name,argv,code,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, tiny_onnx, tiny_npz, two_inputs_onnx, name, argv, code, needle):
    _files(tmp_path, tiny_onnx, tiny_npz)
    (tmp_path / "two.onnx").write_bytes(two_inputs_onnx.read_bytes())
    before = {p.name for p in tmp_path.iterdir()}
    proc = run_cli(*argv(tmp_path))
    assert_clean_error(proc, code, needle)
    after = {p.name for p in tmp_path.iterdir()} - before - {"r.yaml"}
    assert not after, f"left behind: {after}"
